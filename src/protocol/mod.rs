//! JSON-RPC messages as they cross the proxy: the raw bytes plus an envelope (kind, id, method)
//! parsed once on demand, the JSON-RPC error codes membrane answers with, and the MCP protocol
//! versions it knows. Nothing here does I/O.

mod error;
mod message;
mod pointer;

pub use error::{ErrorCode, error_response, error_response_with_data, result_response};
pub use message::{Message, MessageError, MessageKind};

/// The `initialize` method, whose request and result carry the protocol version.
pub const INITIALIZE: &str = "initialize";

/// The notification that cancels a request (`params.requestId`); a cancelled request is never
/// answered.
pub const CANCELLED: &str = "notifications/cancelled";

/// The form of a JSON-RPC id (given as JSON text) under which a request and its answer meet:
/// ids that are equal as JSON values have the same key, however they are written (`1` and
/// `1.0`, `"é"` and `"\u00e9"`). Plain integers and strings without escapes are their own key.
pub fn id_key(id: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let plain_integer = id
        .strip_prefix('-')
        .unwrap_or(id)
        .bytes()
        .all(|b| b.is_ascii_digit());
    let plain_string = id.starts_with('"') && !id.contains('\\');
    if plain_integer || plain_string {
        return Cow::Borrowed(id);
    }
    match serde_json::from_str::<serde_json::Value>(id) {
        Ok(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 2f64.powi(63) => {
                Cow::Owned((f as i64).to_string())
            }
            _ => Cow::Owned(n.to_string()),
        },
        Ok(value) => Cow::Owned(value.to_string()),
        Err(_) => Cow::Borrowed(id),
    }
}

#[cfg(test)]
mod tests {
    use super::id_key;

    #[test]
    fn equal_ids_share_a_key_however_written() {
        assert_eq!(id_key("7"), "7");
        assert_eq!(id_key("7.0"), "7");
        assert_eq!(id_key("7e0"), "7");
        assert_eq!(id_key("-3"), "-3");
        assert_eq!(id_key(r#""caf\u00e9""#), r#""café""#);
        assert_eq!(id_key(r#""café""#), r#""café""#);
        assert_ne!(id_key("7"), id_key(r#""7""#), "a number is not a string");
        assert!(matches!(id_key(r#""abc""#), std::borrow::Cow::Borrowed(_)));
    }
}

/// Which way a message travels through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    /// The way answers to a message travelling this way go.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }
}
