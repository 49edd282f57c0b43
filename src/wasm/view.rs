//! What a 0.2 plugin reads of the message in its call: [`MessageView`] holds the message and
//! its context in the instance's state for the length of one `intercept` call, and the host
//! side of the contract's `message` resource reads from it. Each accessor copies out only what
//! it returns (the tool name, one value by JSON pointer), so a plugin pays for what it looks
//! at, not for the size of the message. The handle a plugin is given reads nothing once its
//! call is over.

use std::sync::Arc;

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

/// The message of the call in progress, and what the plugin may ask about it.
pub(super) struct MessageView {
    message: Message,
    kind: WitKind,
    direction: Direction,
    transport: Transport,
    protocol_version: Option<Arc<str>>,
    request_method: Option<String>,
    frame_id: u64,
    request: Option<Message>,
}

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
            message: ctx.message.clone(),
            kind,
            direction: ctx.direction,
            transport: ctx.transport_type,
            protocol_version: ctx.protocol_version.clone(),
            request_method: ctx.request_method.clone(),
            frame_id: ctx.frame_id,
            request: ctx.request.clone(),
        })
    }

    /// The handle the plugin is given: it borrows the call's message.
    pub(super) fn handle() -> Resource<ViewedMessage> {
        Resource::new_borrow(0)
    }

    fn method(&self) -> Option<&str> {
        self.message.method().or(self.request_method.as_deref())
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
        Ok(match self.viewed()?.direction {
            Direction::ClientToServer => WitDirection::ClientToServer,
            Direction::ServerToClient => WitDirection::ServerToClient,
        })
    }

    fn method(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self.viewed()?.method().map(str::to_owned))
    }

    fn id(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self.viewed()?.message.id().map(str::to_owned))
    }

    fn session_id(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<String> {
        self.viewed()?;
        Ok(self
            .session
            .as_ref()
            .map_or_else(String::new, |id| id.as_str().to_owned()))
    }

    fn transport(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<TransportType> {
        Ok(match self.viewed()?.transport {
            Transport::Stdio => TransportType::Stdio,
            Transport::StreamableHttp => TransportType::StreamableHttp,
        })
    }

    fn protocol_version(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<Option<String>> {
        Ok(self
            .viewed()?
            .protocol_version
            .as_deref()
            .map(str::to_owned))
    }

    fn frame_id(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<u64> {
        Ok(self.viewed()?.frame_id)
    }

    fn principal(
        &mut self,
        _: Resource<ViewedMessage>,
    ) -> wasmtime::Result<Option<wit::Principal>> {
        self.viewed()?;
        Ok(self.principal.as_deref().map(|principal| {
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
        let tool = match view.kind {
            WitKind::Request => view.message.tool_name(),
            WitKind::Response | WitKind::Error => {
                view.request.as_ref().and_then(Message::tool_name)
            }
            WitKind::Notification => None,
        };
        Ok(tool.map(str::to_owned))
    }

    fn get(
        &mut self,
        _: Resource<ViewedMessage>,
        pointer: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.viewed()?.message.pointer(&pointer).map(str::to_owned))
    }

    fn json(&mut self, _: Resource<ViewedMessage>) -> wasmtime::Result<String> {
        Ok(self.viewed()?.message.as_str().to_owned())
    }

    fn request_get(
        &mut self,
        _: Resource<ViewedMessage>,
        pointer: String,
    ) -> wasmtime::Result<Option<String>> {
        let request = self.viewed()?.request.as_ref();
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
