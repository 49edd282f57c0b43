//! MCP's Streamable HTTP transport, both sides, and the parts they share: header names, the
//! protocol revisions and what each allows, content negotiation. [`StreamableHttpIncoming`] is
//! the client side: an axum app whose sessions are accepted as
//! [`Connection`](super::Connection)s, with [`SessionStreams`] routing what membrane sends each
//! client onto its SSE streams (own event ids, a bounded tail for `Last-Event-ID` replay).
//! [`StreamableHttpOutgoing`] is the upstream side: an HTTP client that turns one upstream MCP
//! session into a connection, reading SSE with the bounded [`SseParser`].

mod incoming;
mod sse;
mod streams;
mod upstream;

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::protocol::Message;

pub use incoming::{FrontOptions, HostPolicy, StreamableHttpIncoming};
pub use sse::{SseEvent, SseItem, SseParser};
pub use streams::{AttachError, EventId, SessionStreams, StreamEvent, StreamId};
pub use upstream::{StreamableHttpOutgoing, UpstreamOptions};

/// The session id a server assigns on the initialize response.
pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// The protocol revision a request speaks (from 2025-06-18 on).
pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// The last SSE event a client saw, on a GET that resumes a stream.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// 2026-07-28: the request's method, mirrored from the body.
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// 2026-07-28: the tool, prompt or resource a request names, mirrored from the body.
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// The revisions membrane speaks on Streamable HTTP, oldest first.
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"];

/// The revision assumed for a request without `MCP-Protocol-Version` (as the spec allows).
pub const DEFAULT_PROTOCOL_VERSION: &str = "2025-03-26";

/// The first revision without sessions: each request stands alone and names its method in
/// `Mcp-Method`.
pub const STATELESS_PROTOCOL_VERSION: &str = "2026-07-28";

/// JSON-RPC batches exist only in 2025-03-26.
pub fn allows_batches(version: &str) -> bool {
    version == "2025-03-26"
}

/// Priming events (an id and empty data, so a client can resume before any message) came with
/// 2025-11-25; older clients may not expect an event without data.
pub fn allows_priming(version: &str) -> bool {
    version >= "2025-11-25"
}

/// The headers 2026-07-28 mirrors from a request's body: `Mcp-Method`, and `Mcp-Name` for the
/// methods that name a tool, prompt or resource (Base64-wrapped when not plain header text).
pub fn mirrored_headers(message: &Message) -> Vec<(HeaderName, HeaderValue)> {
    let Some(method) = message.method() else {
        return Vec::new();
    };
    let mut headers = Vec::new();
    if let Ok(value) = HeaderValue::from_str(method) {
        headers.push((MCP_METHOD, value));
    }
    if let Some(name) = named_target(message)
        && let Ok(value) = HeaderValue::from_str(&encode_header_text(&name))
    {
        headers.push((MCP_NAME, value));
    }
    headers
}

/// `params.name` or `params.uri` of the methods that name what they act on.
pub fn named_target(message: &Message) -> Option<String> {
    /// Only these fields are read; the arguments and the rest are skipped unparsed.
    #[derive(serde::Deserialize)]
    struct Request<'a> {
        #[serde(borrow, default)]
        params: Option<Target<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Target<'a> {
        #[serde(borrow, default)]
        name: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        uri: Option<Cow<'a, str>>,
    }
    let by_name = match message.method()? {
        "tools/call" | "prompts/get" => true,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => false,
        _ => return None,
    };
    let target = serde_json::from_slice::<Request>(message.raw())
        .ok()?
        .params?;
    let named = if by_name { target.name } else { target.uri };
    named.map(Cow::into_owned)
}

const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// A header value as 2026-07-28 writes it: as is when it is plain visible text, else
/// `=?base64?...?=`.
pub fn encode_header_text(text: &str) -> String {
    use base64::Engine;
    let visible = !text.is_empty() && text.bytes().all(|b| (0x20..0x7f).contains(&b));
    let padded = text.starts_with([' ', '\t']) || text.ends_with([' ', '\t']);
    let sentinel = text.starts_with(BASE64_PREFIX) && text.ends_with(BASE64_SUFFIX);
    let plain = visible && !padded && !sentinel;
    if plain {
        return text.to_owned();
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    format!("{BASE64_PREFIX}{encoded}{BASE64_SUFFIX}")
}

/// The text a header value stands for, Base64 sentinel decoded.
pub fn decode_header_text(value: &str) -> Option<String> {
    use base64::Engine;
    match value
        .strip_prefix(BASE64_PREFIX)
        .and_then(|v| v.strip_suffix(BASE64_SUFFIX))
    {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(value.to_owned()),
    }
}

/// Whether the `Accept` header lists `media` (or a wildcard covering it).
pub fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|range| range.split(';').next().unwrap_or("").trim())
        .any(|range| {
            range.eq_ignore_ascii_case(media)
                || range == "*/*"
                || range
                    .strip_suffix("/*")
                    .is_some_and(|k| k.eq_ignore_ascii_case(kind))
        })
}

/// Whether the body is declared as JSON (`application/json`, parameters allowed).
pub fn is_json_content(headers: &HeaderMap) -> bool {
    content_type_is(headers, "application/json")
}

/// Whether a response's `Content-Type` is `media`, parameters aside.
pub fn content_type_is(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case(media))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn accept_lists_and_wildcards() {
        let both = with(header::ACCEPT, "application/json, text/event-stream;q=0.9");
        assert!(accepts(&both, "application/json") && accepts(&both, "text/event-stream"));
        let json = with(header::ACCEPT, "application/json");
        assert!(!accepts(&json, "text/event-stream"));
        assert!(accepts(&with(header::ACCEPT, "*/*"), "text/event-stream"));
        assert!(accepts(
            &with(header::ACCEPT, "text/*"),
            "text/event-stream"
        ));
        assert!(!accepts(&HeaderMap::new(), "application/json"));
    }

    #[test]
    fn content_types_ignore_parameters_and_case() {
        assert!(is_json_content(&with(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8"
        )));
        assert!(!is_json_content(&with(header::CONTENT_TYPE, "text/plain")));
        assert!(!is_json_content(&HeaderMap::new()));
    }

    #[test]
    fn mirrored_headers_follow_the_body() {
        let call = Message::new(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather"}}"#,
        );
        let headers = mirrored_headers(&call);
        assert_eq!(
            headers[0],
            (MCP_METHOD, HeaderValue::from_static("tools/call"))
        );
        assert_eq!(
            headers[1],
            (MCP_NAME, HeaderValue::from_static("get_weather"))
        );
        let list = Message::new(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
        assert_eq!(mirrored_headers(&list).len(), 1);
    }

    #[test]
    fn header_text_is_wrapped_when_not_plain() {
        assert_eq!(encode_header_text("us-west1"), "us-west1");
        assert_eq!(
            encode_header_text("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(encode_header_text(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(
            encode_header_text("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
        for text in ["Hello, 世界", " padded ", "line1\nline2", "plain"] {
            assert_eq!(decode_header_text(&encode_header_text(text)).unwrap(), text);
        }
    }

    #[test]
    fn revisions() {
        assert!(allows_batches("2025-03-26") && !allows_batches("2025-11-25"));
        assert!(allows_priming("2025-11-25") && !allows_priming("2025-06-18"));
    }
}
