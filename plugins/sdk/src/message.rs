//! [`Message`]: one message as a plugin sees it. Under membrane it is a handle to the message
//! membrane holds (contract 0.2): each accessor asks membrane for just what it returns, so a
//! plugin that reads a tool's name never copies the rest. In native tests it holds what
//! [`crate::testing`] built. On top: helpers for what policies ask most (a tool call's name and
//! arguments, one value by JSON pointer).

use serde_json::{Map, Value};

use crate::host::Principal;
use crate::{Direction, MessageKind, Transport};

/// One message, its envelope already read by membrane. Valid for the `intercept` call it was
/// given to.
pub struct Message {
    #[cfg(target_arch = "wasm32")]
    host: std::mem::ManuallyDrop<crate::bindings::membrane::interceptor::types::Message>,
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) native: crate::testing::Fields,
}

/// A `tools/call` request's tool and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The call's arguments (empty when it sent none).
    pub arguments: Map<String, Value>,
}

#[cfg(target_arch = "wasm32")]
impl Message {
    /// The SDK's view of the message membrane lent to this call.
    #[doc(hidden)]
    pub fn lent(message: &crate::bindings::membrane::interceptor::types::Message) -> Self {
        // SAFETY: the copy never drops the handle (membrane's borrow ends with the call, when
        // the bindings drop the original), and it lives only as long as the call.
        let host = unsafe {
            crate::bindings::membrane::interceptor::types::Message::from_handle(message.handle())
        };
        Message {
            host: std::mem::ManuallyDrop::new(host),
        }
    }
}

/// Reads `$host` from membrane on wasm32, `$native` in native tests.
macro_rules! read {
    ($self:ident, |$host:ident| $on_host:expr, |$fields:ident| $native:expr) => {{
        #[cfg(target_arch = "wasm32")]
        let value = {
            let $host = &*$self.host;
            $on_host
        };
        #[cfg(not(target_arch = "wasm32"))]
        let value = {
            let $fields = &$self.native;
            $native
        };
        value
    }};
}

impl Message {
    pub fn kind(&self) -> MessageKind {
        read!(self, |m| crate::glue::kind(m.kind()), |f| f.kind)
    }

    pub fn direction(&self) -> Direction {
        read!(self, |m| crate::glue::direction(m.direction()), |f| f
            .direction)
    }

    /// The method; for an answer, the method of the request it answers.
    pub fn method(&self) -> Option<String> {
        read!(self, |m| m.method(), |f| f.method.clone())
    }

    /// The JSON-RPC id as JSON text (`7`, `"a1"`); none for notifications.
    pub fn id(&self) -> Option<String> {
        read!(self, |m| m.id(), |f| f.id.clone())
    }

    pub fn session_id(&self) -> String {
        read!(self, |m| m.session_id(), |f| f.session_id.clone())
    }

    pub fn transport(&self) -> Transport {
        read!(self, |m| crate::glue::transport(m.transport()), |f| f
            .transport)
    }

    /// The protocol version negotiated in this session, once known.
    pub fn protocol_version(&self) -> Option<String> {
        read!(self, |m| m.protocol_version(), |f| f
            .protocol_version
            .clone())
    }

    /// The message's place in its session, counting from 1.
    pub fn frame_id(&self) -> u64 {
        read!(self, |m| m.frame_id(), |f| f.frame_id)
    }

    /// Who opened the session; none when membrane does not authenticate its clients.
    pub fn principal(&self) -> Option<Principal> {
        read!(
            self,
            |m| m.principal().map(|p| Principal {
                subject: p.subject,
                issuer: p.issuer,
                scopes: p.scopes,
                claims: serde_json::from_str(&p.claims).unwrap_or_default(),
            }),
            |_f| crate::host::native::principal()
        )
    }

    /// The tool of a `tools/call` request, or of the request a `tools/call` answer answers.
    pub fn tool_name(&self) -> Option<String> {
        read!(self, |m| m.tool_name(), |f| f.tool_name())
    }

    /// The JSON text of the value at a JSON pointer (`/params/arguments/path`); `""` is the
    /// whole message.
    pub fn get(&self, pointer: &str) -> Option<String> {
        read!(self, |m| m.get(pointer), |f| crate::testing::at(
            &f.json, pointer
        ))
    }

    /// The whole message as JSON text, as it reached this plugin: the text membrane received,
    /// or an earlier plugin's change of it.
    pub fn json(&self) -> String {
        read!(self, |m| m.json(), |f| f.json.clone())
    }

    /// For an answer: the JSON text at a pointer in the request it answers
    /// (`/params/arguments`), when the plugin's filters ask for such answers.
    pub fn request_get(&self, pointer: &str) -> Option<String> {
        read!(self, |m| m.request_get(pointer), |f| {
            f.request
                .as_deref()
                .and_then(|json| crate::testing::at(json, pointer))
        })
    }

    /// Whether this is a request from the client.
    pub fn is_client_request(&self) -> bool {
        self.kind() == MessageKind::Request && self.direction() == Direction::ClientToServer
    }

    /// The whole message, parsed.
    pub fn value(&self) -> Result<Value, String> {
        serde_json::from_str(&self.json()).map_err(|e| format!("the message is not JSON: {e}"))
    }

    /// The value at a JSON pointer (`/params/name`), parsed, if the message has one there.
    pub fn pointer(&self, pointer: &str) -> Option<Value> {
        serde_json::from_str(&self.get(pointer)?).ok()
    }

    /// The tool and arguments of a `tools/call` request from the client; none for any other
    /// message, or one whose tool name is not a string. Only the arguments are copied in.
    pub fn tool_call(&self) -> Option<ToolCall> {
        if !self.is_client_request() {
            return None;
        }
        let name = self.tool_name()?;
        let arguments = match self.pointer("/params/arguments") {
            Some(Value::Object(arguments)) => arguments,
            _ => Map::new(),
        };
        Some(ToolCall { name, arguments })
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("kind", &self.kind())
            .field("method", &self.method())
            .field("frame_id", &self.frame_id())
            .finish_non_exhaustive()
    }
}

impl ToolCall {
    /// Every string in the arguments, however deeply nested (object keys aside).
    pub fn strings(&self) -> Vec<&str> {
        fn collect<'a>(value: &'a Value, into: &mut Vec<&'a str>) {
            match value {
                Value::String(text) => into.push(text),
                Value::Array(items) => items.iter().for_each(|item| collect(item, into)),
                Value::Object(fields) => fields.values().for_each(|field| collect(field, into)),
                _ => {}
            }
        }
        let mut strings = Vec::new();
        self.arguments
            .values()
            .for_each(|value| collect(value, &mut strings));
        strings
    }

    /// Whether any string in the arguments contains `needle`.
    pub fn mentions(&self, needle: &str) -> bool {
        self.strings().iter().any(|text| text.contains(needle))
    }
}
