//! [`Message`]: one message as a plugin sees it, with helpers that read what policies ask
//! about most (a tool call's name and arguments, one value by JSON pointer).

use serde_json::{Map, Value};

use crate::{Direction, MessageKind, Transport};

/// One message, its envelope already read by membrane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The whole JSON-RPC message as it reached this plugin: the text membrane received, or
    /// the replacement an earlier plugin in the chain made.
    pub json: String,
    pub kind: MessageKind,
    /// The method; for an answer, the method of the request it answers.
    pub method: Option<String>,
    /// The JSON-RPC id as JSON text (`7`, `"a1"`); none for notifications.
    pub id: Option<String>,
    pub direction: Direction,
    pub session_id: String,
    pub transport: Transport,
    /// The protocol version negotiated in this session, once known.
    pub protocol_version: Option<String>,
    /// The message's place in its session, counting from 1.
    pub frame_id: u64,
}

/// A `tools/call` request's tool and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The call's arguments (empty when it sent none).
    pub arguments: Map<String, Value>,
}

impl Message {
    /// Whether this is a request from the client.
    pub fn is_client_request(&self) -> bool {
        self.kind == MessageKind::Request && self.direction == Direction::ClientToServer
    }

    /// The whole message, parsed.
    pub fn value(&self) -> Result<Value, String> {
        serde_json::from_str(&self.json).map_err(|e| format!("the message is not JSON: {e}"))
    }

    /// The value at a JSON pointer (`/params/name`), if the message has one there.
    pub fn pointer(&self, pointer: &str) -> Option<Value> {
        self.value().ok()?.pointer_mut(pointer).map(Value::take)
    }

    /// The tool and arguments of a `tools/call` request from the client; none for any other
    /// message, or one whose tool name is not a string.
    pub fn tool_call(&self) -> Option<ToolCall> {
        if !self.is_client_request() || self.method.as_deref() != Some("tools/call") {
            return None;
        }
        let Value::Object(mut params) = self.pointer("/params")? else {
            return None;
        };
        let Some(Value::String(name)) = params.remove("name") else {
            return None;
        };
        let arguments = match params.remove("arguments") {
            Some(Value::Object(arguments)) => arguments,
            _ => Map::new(),
        };
        Some(ToolCall { name, arguments })
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
