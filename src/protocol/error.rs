//! The JSON-RPC error codes membrane answers with, and constructors for the responses it makes
//! up itself (errors for blocked or failed requests, results for mocked ones).

use serde_json::value::RawValue;

use super::Message;

/// JSON-RPC error codes used by membrane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The bytes were not JSON.
    ParseError,
    /// JSON, but not a valid JSON-RPC message (including oversized messages).
    InvalidRequest,
    /// An interceptor blocked the message.
    Blocked,
    /// The upstream server could not answer (it exited, or could not be reached).
    UpstreamUnavailable,
    /// HTTP headers that mirror the body say something else (protocol 2026-07-28).
    HeaderMismatch,
    /// The caller is not authenticated, or lacks a scope the request needs.
    Unauthorized,
    /// A per-session bound was reached (requests in flight, open streams); the session goes on.
    LimitExceeded,
    /// A tape being replayed never saw this method.
    MethodNotFound,
    /// A tape being replayed saw this method, never with these params.
    InvalidParams,
}

impl ErrorCode {
    pub const fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::Blocked => -32001,
            ErrorCode::UpstreamUnavailable => -32002,
            ErrorCode::HeaderMismatch => -32020,
            ErrorCode::Unauthorized => -32003,
            ErrorCode::LimitExceeded => -32004,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
        }
    }
}

/// A JSON-RPC error response. `id` is the request's id as JSON text; `None` becomes `null`.
pub fn error_response(id: Option<&str>, code: ErrorCode, message: &str) -> Message {
    let body = serde_json::json!({ "code": code.code(), "message": message });
    envelope(id, "error", &body.to_string())
}

/// A JSON-RPC error response with a `data` member.
pub fn error_response_with_data(
    id: Option<&str>,
    code: ErrorCode,
    message: &str,
    data: &serde_json::Value,
) -> Message {
    let body = serde_json::json!({ "code": code.code(), "message": message, "data": data });
    envelope(id, "error", &body.to_string())
}

/// A JSON-RPC success response carrying `result` (JSON text, already validated).
pub fn result_response(id: &str, result: &RawValue) -> Message {
    envelope(Some(id), "result", result.get())
}

fn envelope(id: Option<&str>, field: &str, value: &str) -> Message {
    let id = id.unwrap_or("null");
    Message::new(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"{field}":{value}}}"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageKind;

    #[test]
    fn error_response_carries_id_and_code() {
        let m = error_response(Some(r#""x""#), ErrorCode::Blocked, "no \"way\"");
        assert_eq!(m.kind(), Some(MessageKind::Error));
        assert_eq!(m.id(), Some(r#""x""#));
        let v = m.to_value().unwrap();
        assert_eq!(v["error"]["code"], -32001);
        assert_eq!(v["error"]["message"], "no \"way\"");
    }

    #[test]
    fn result_response_is_valid() {
        let result = RawValue::from_string(r#"{"content":[]}"#.into()).unwrap();
        let m = result_response("3", &result);
        assert_eq!(m.kind(), Some(MessageKind::Response));
        assert_eq!(
            m.to_value().unwrap()["result"]["content"],
            serde_json::json!([])
        );
    }
}
