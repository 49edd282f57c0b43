//! Native tests of a plugin's decisions: messages built as membrane would deliver them, and
//! (in [`crate::host`]) a session store in memory and a log that can be read back. Only for
//! builds other than wasm32.

use serde_json::{Value, json};

use crate::{Direction, Message, MessageKind, Transport};

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

/// A notification from the client.
pub fn notification(method: &str, params: Value) -> Message {
    let mut message = message(
        json!({"jsonrpc": "2.0", "method": method, "params": params}),
        MessageKind::Notification,
        Some(method),
        Direction::ClientToServer,
    );
    message.id = None;
    message
}

fn message(value: Value, kind: MessageKind, method: Option<&str>, direction: Direction) -> Message {
    Message {
        json: value.to_string(),
        kind,
        method: method.map(str::to_owned),
        id: Some("1".to_owned()),
        direction,
        session_id: "test-session".to_owned(),
        transport: Transport::Stdio,
        protocol_version: Some("2025-06-18".to_owned()),
        frame_id: 1,
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
