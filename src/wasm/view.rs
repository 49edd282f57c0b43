//! What a 0.2 plugin reads of the message in its call: [`MessageView`] points the instance's
//! state at the call's context for the length of one `intercept` call, and the host side of
//! the contract's `message` resource reads from it. Each accessor copies out only what it
//! returns (the tool name, one value by JSON pointer), so a plugin pays for what it looks at,
//! not for the size of the message. The handle a plugin is given reads nothing once its call
//! is over.

use std::ptr::NonNull;

use wasmtime::component::Resource;

use super::bindings::current::membrane::interceptor::types::{
    self as wit, Direction as WitDirection, MessageKind as WitKind, TransportType,
};
use super::host::{PluginState, principal_fields};
use crate::interceptor::InterceptContext;
use crate::protocol::{Direction, Message, MessageKind};
use crate::transport::TransportType as Transport;

/// The `message` resource, as the host names it. Its one handle is the call's message.
pub struct ViewedMessage;

/// The message of the call in progress: a pointer to the call's context, which the call
/// borrows for as long as the plugin runs, and the message's kind.
pub(super) struct MessageView {
    ctx: NonNull<InterceptContext>,
    kind: WitKind,
}

// SAFETY: a view only reads the context, which is `Sync`, and only while the plugin runs in the
// call that set it, which borrows the context all along: `Plugin::intercept` sets a view just
// before it enters the plugin and clears it after. A call cut short (its future dropped) leaves
// its view in a store that is dropped with it, never put back, and every entry into a plugin's
// `intercept` sets a view of its own first.
unsafe impl Send for MessageView {}

impl MessageView {
    /// The view of `ctx`'s message, whose kind is `kind`.
    pub(super) fn of(ctx: &InterceptContext, kind: MessageKind) -> Option<Self> {
        let kind = match kind {
            MessageKind::Request => WitKind::Request,
            MessageKind::Notification => WitKind::Notification,
            MessageKind::Response => WitKind::Response,
            MessageKind::Error => WitKind::Error,
            MessageKind::Batch => return None,
        };
        Some(Self {
            ctx: NonNull::from(ctx),
            kind,
        })
    }

    /// The handle the plugin is given: it borrows the call's message.
    pub(super) fn handle() -> Resource<ViewedMessage> {
        Resource::new_borrow(0)
    }

    fn ctx(&self) -> &InterceptContext {
        // SAFETY: see `Send` above: the context outlives every read of the view.
        unsafe { self.ctx.as_ref() }
    }
}

impl PluginState {
    fn viewed(&self) -> wasmtime::Result<&MessageView> {
        self.view
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!("a message was read outside its intercept call"))
    }
}

impl wit::HostMessage for PluginState {
    fn kind(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<WitKind> {
        Ok(self.viewed()?.kind)
    }

    fn direction(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<WitDirection> {
        Ok(match self.viewed()?.ctx().direction {
            Direction::ClientToServer => WitDirection::ClientToServer,
            Direction::ServerToClient => WitDirection::ServerToClient,
        })
    }

    fn method(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self.viewed()?.ctx().method().map(str::to_owned))
    }

    fn id(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self.viewed()?.ctx().message.id().map(str::to_owned))
    }

    fn session_id(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<String> {
        Ok(self.viewed()?.ctx().session_id.as_str().to_owned())
    }

    fn transport(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<TransportType> {
        Ok(match self.viewed()?.ctx().transport_type {
            Transport::Stdio => TransportType::Stdio,
            Transport::StreamableHttp => TransportType::StreamableHttp,
        })
    }

    fn protocol_version(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self
            .viewed()?
            .ctx()
            .protocol_version
            .as_deref()
            .map(str::to_owned))
    }

    fn frame_id(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<u64> {
        Ok(self.viewed()?.ctx().frame_id)
    }

    fn principal(
        &mut self,
        _: Resource<ViewedMessage>,
    ) -> wasmtime::Result<Option<wit::Principal>> {
        Ok(self.viewed()?.ctx().principal.as_deref().map(|principal| {
            let (subject, issuer, scopes, claims) = principal_fields(principal);
            wit::Principal {
                subject,
                issuer,
                scopes,
                claims,
            }
        }))
    }

    fn tool_name(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<Option<String>> {
        let view = self.viewed()?;
        let ctx = view.ctx();
        let tool = match view.kind {
            WitKind::Request => ctx.message.tool_name(),
            WitKind::Response | WitKind::Error => ctx.request.as_ref().and_then(Message::tool_name),
            WitKind::Notification => None,
        };
        Ok(tool.map(str::to_owned))
    }

    fn get(
        &mut self,
        _: Resource<ViewedMessage>,
        pointer: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self
            .viewed()?
            .ctx()
            .message
            .pointer(&pointer)
            .map(str::to_owned))
    }

    fn json(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<String> {
        Ok(self.viewed()?.ctx().message.as_str().to_owned())
    }

    fn request_get(
        &mut self,
        _: Resource<ViewedMessage>,
        pointer: String,
    ) -> wasmtime::Result<Option<String>> {
        let request = self.viewed()?.ctx().request.as_ref();
        Ok(request
            .and_then(|request| request.pointer(&pointer))
            .map(str::to_owned))
    }

    /// The host keeps the message: a plugin only ever borrows it.
    fn drop(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl wit::Host for PluginState {}
