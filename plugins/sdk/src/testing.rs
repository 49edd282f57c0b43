//! Native tests of a plugin's decisions: messages built as membrane would deliver them, and
//! (in [`crate::host`]) a session store in memory and a log that can be read back. Only for
//! builds other than wasm32.

use serde_json::{Value, json};

use crate::{Direction, Message, MessageKind, Transport};

/// What a native [`Message`] holds: what membrane would answer about it.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    pub json: String,
    pub kind: MessageKind,
    pub method: Option<String>,
    pub id: Option<String>,
    pub direction: Direction,
    pub session_id: String,
    pub transport: Transport,
    pub protocol_version: Option<String>,
    pub frame_id: u64,
    /// For an answer: the request it answers, as JSON text.
    pub request: Option<String>,
}

impl Fields {
    /// As membrane reads it: `params.name` of a `tools/call` request, or of an answer's request.
    pub fn tool_name(&self) -> Option<String> {
        if self.method.as_deref() != Some("tools/call") {
            return None;
        }
        let request = match self.kind {
            MessageKind::Request => &self.json,
            MessageKind::Response | MessageKind::Error => self.request.as_ref()?,
            MessageKind::Notification => return None,
        };
        match serde_json::from_str::<Value>(request)
            .ok()?
            .pointer("/params/name")?
        {
            Value::String(name) => Some(name.clone()),
            _ => None,
        }
    }
}

/// The JSON text at `pointer` in `json`, as membrane answers `get`.
pub(crate) fn at(json: &str, pointer: &str) -> Option<String> {
    let value: Value = serde_json::from_str(json).ok()?;
    value.pointer(pointer).map(Value::to_string)
}

/// A client request with `method` and `params`.
pub fn request(method: &str, params: Value) -> Message {
    message(
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
        MessageKind::Request,
        Some(method),
        Direction::ClientToServer,
    )
}

/// A client's `tools/call` of `tool` with `arguments`.
pub fn tool_call(tool: &str, arguments: Value) -> Message {
    request("tools/call", json!({"name": tool, "arguments": arguments}))
}

/// The server's result for a request with `method`.
pub fn response(method: &str, result: Value) -> Message {
    message(
        json!({"jsonrpc": "2.0", "id": 1, "result": result}),
        MessageKind::Response,
        Some(method),
        Direction::ServerToClient,
    )
}

/// The server's result for `request` (built by [`request`] or [`tool_call`]), which the
/// answer carries as membrane's do for plugins that want answers.
pub fn answer(request: &Message, result: Value) -> Message {
    let mut answer = response(&request.method().unwrap_or_default(), result);
    answer.native.request = Some(request.json());
    answer
}

/// A notification from the client.
pub fn notification(method: &str, params: Value) -> Message {
    let mut message = message(
        json!({"jsonrpc": "2.0", "method": method, "params": params}),
        MessageKind::Notification,
        Some(method),
        Direction::ClientToServer,
    );
    message.native.id = None;
    message
}

/// `message` with its JSON text replaced (kind, method and the rest as they were).
pub fn with_json(mut message: Message, json: &str) -> Message {
    message.native.json = json.to_owned();
    message
}

fn message(value: Value, kind: MessageKind, method: Option<&str>, direction: Direction) -> Message {
    Message {
        native: Fields {
            json: value.to_string(),
            kind,
            method: method.map(str::to_owned),
            id: Some("1".to_owned()),
            direction,
            session_id: "test-session".to_owned(),
            transport: Transport::Stdio,
            protocol_version: Some("2025-06-18".to_owned()),
            frame_id: 1,
            request: None,
        },
    }
}

/// Starts a test afresh: an empty session store, an empty log, no principal.
pub fn reset() {
    crate::host::native::reset();
}

/// The lines the plugin logged since the last [`reset`], with their levels.
pub fn logs() -> Vec<(crate::host::Level, String)> {
    crate::host::native::logs()
}

/// Makes `principal` the session's principal for what follows.
pub fn set_principal(principal: Option<crate::host::Principal>) {
    crate::host::native::set_principal(principal);
}
