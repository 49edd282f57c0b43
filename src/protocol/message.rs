//! [`Message`]: one JSON-RPC message, kept as the exact bytes it arrived in.
//!
//! The envelope (kind, id, method) is parsed lazily and at most once, without copying: the id and
//! method are spans into the raw bytes. A message that nobody changes is forwarded as those same
//! bytes; cloning one clones a reference-counted buffer.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{IgnoredAny, Visitor};
use serde_json::value::RawValue;

/// The JSON-RPC shape of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Request,
    Notification,
    Response,
    Error,
    /// A JSON array of messages (JSON-RPC batch, MCP 2025-03-26 only).
    Batch,
}

/// Why bytes are not a JSON-RPC message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("not a JSON-RPC message: {0}")]
    Shape(&'static str),
}

impl MessageError {
    /// The JSON-RPC error code that reports this problem.
    pub fn code(&self) -> super::ErrorCode {
        match self {
            MessageError::Json(_) => super::ErrorCode::ParseError,
            MessageError::Shape(_) => super::ErrorCode::InvalidRequest,
        }
    }
}

/// A byte range inside the raw message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

#[derive(Debug, Clone)]
enum Method {
    /// The method as it appears in the raw bytes (no escapes).
    Span(Span),
    /// A method written with JSON escapes, decoded.
    Owned(Box<str>),
}

#[derive(Debug, Clone)]
struct Envelope {
    kind: MessageKind,
    id: Option<Span>,
    method: Option<Method>,
    /// `params.name` when it is a string: the tool of a `tools/call`.
    tool: Option<Method>,
    /// For a batch, how many elements it has.
    batch_len: u32,
}

/// One JSON-RPC message: raw bytes plus a lazily parsed envelope.
#[derive(Clone)]
pub struct Message {
    raw: Bytes,
    envelope: OnceLock<Result<Envelope, MessageError>>,
}

/// The fields of a message object that decide its envelope; everything else is skipped.
#[derive(Deserialize)]
struct EnvelopeFields<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    // A `RawValue`, not `Cow<str>`: serde cannot borrow a `Cow` inside an `Option`, and the
    // method must not cost an allocation.
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: ParamsName<'a>,
    #[serde(default, deserialize_with = "present")]
    result: bool,
    #[serde(default, deserialize_with = "present")]
    error: bool,
}

/// True for a field that is there at all, even as `null` (a valid JSON-RPC result).
fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(value).map(|_| true)
}

impl Message {
    /// Wraps raw bytes; nothing is parsed until the envelope is asked for.
    pub fn new(raw: impl Into<Bytes>) -> Self {
        Self {
            raw: raw.into(),
            envelope: OnceLock::new(),
        }
    }

    /// Serializes a JSON value into a new message.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self::new(serde_json::to_vec(value).expect("a JSON value always serializes"))
    }

    /// The exact bytes of the message.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The message as text; empty when the bytes are not a valid message.
    pub fn as_str(&self) -> &str {
        match self.envelope() {
            // SAFETY: `raw` never changes, and a parsed envelope means it was checked to be UTF-8.
            Ok(_) => unsafe { std::str::from_utf8_unchecked(&self.raw) },
            Err(_) => "",
        }
    }

    /// Parses the envelope if that has not happened yet, and reports whether the bytes are a
    /// JSON-RPC message.
    pub fn validate(&self) -> Result<MessageKind, MessageError> {
        self.envelope().map(|e| e.kind).map_err(Clone::clone)
    }

    /// The message's kind, or `None` when it is not a valid JSON-RPC message.
    pub fn kind(&self) -> Option<MessageKind> {
        self.envelope().ok().map(|e| e.kind)
    }

    /// The id as JSON text (`7`, `"a1"`), for requests, responses and errors.
    pub fn id(&self) -> Option<&str> {
        let span = self.envelope().ok()?.id?;
        Some(self.span(span))
    }

    /// The method of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match self.envelope().ok()?.method.as_ref()? {
            Method::Span(span) => Some(self.span(*span)),
            Method::Owned(method) => Some(method),
        }
    }

    /// The tool of a `tools/call` request (its `params.name`), read with the envelope.
    pub fn tool_name(&self) -> Option<&str> {
        let envelope = self.envelope().ok()?;
        if self.method()? != "tools/call" {
            return None;
        }
        match envelope.tool.as_ref()? {
            Method::Span(span) => Some(self.span(*span)),
            Method::Owned(tool) => Some(tool),
        }
    }

    /// The JSON text of the value at a JSON pointer (RFC 6901), as the message spells it;
    /// `""` is the whole message. Each level is scanned once, and nothing is built.
    pub fn pointer(&self, pointer: &str) -> Option<&str> {
        self.envelope().ok()?;
        super::pointer::get(self.as_str(), pointer)
    }

    /// Parses the whole message into a JSON value (for the rare messages that need their body).
    pub fn to_value(&self) -> Result<serde_json::Value, MessageError> {
        serde_json::from_slice(&self.raw).map_err(|e| MessageError::Json(e.to_string()))
    }

    /// How many elements a batch has (0 for anything else); counted when the envelope is
    /// parsed, without holding the elements.
    pub fn batch_len(&self) -> usize {
        self.envelope().map_or(0, |e| e.batch_len as usize)
    }

    /// The elements of a batch, each a message sharing this message's buffer.
    pub fn batch_elements(&self) -> Result<Vec<Message>, MessageError> {
        let elements: Vec<&RawValue> =
            serde_json::from_slice(&self.raw).map_err(|e| MessageError::Json(e.to_string()))?;
        Ok(elements
            .into_iter()
            .map(|element| Message::new(self.raw.slice_ref(element.get().as_bytes())))
            .collect())
    }

    fn span(&self, span: Span) -> &str {
        // Spans are cut from `str` slices of `raw` at parse time, so they are valid UTF-8.
        std::str::from_utf8(&self.raw[span.start as usize..span.end as usize]).unwrap_or("")
    }

    fn envelope(&self) -> Result<&Envelope, &MessageError> {
        self.envelope
            .get_or_init(|| parse_envelope(&self.raw))
            .as_ref()
    }
}

fn parse_envelope(raw: &[u8]) -> Result<Envelope, MessageError> {
    let text = std::str::from_utf8(raw).map_err(|e| MessageError::Json(e.to_string()))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        // Validate the batch as JSON and count its elements, holding none of them: they are
        // parsed one by one when needed.
        let mut parser = serde_json::Deserializer::from_str(text);
        let count = serde::Deserializer::deserialize_seq(&mut parser, CountElements)
            .and_then(|count| parser.end().map(|()| count))
            .map_err(|e| MessageError::Json(e.to_string()))?;
        return Ok(Envelope {
            kind: MessageKind::Batch,
            id: None,
            method: None,
            tool: None,
            batch_len: u32::try_from(count).unwrap_or(u32::MAX),
        });
    }
    if !trimmed.starts_with('{') {
        serde_json::from_str::<IgnoredAny>(text).map_err(|e| MessageError::Json(e.to_string()))?;
        return Err(MessageError::Shape("a message must be a JSON object"));
    }
    let fields: EnvelopeFields<'_> =
        serde_json::from_str(text).map_err(|e| MessageError::Json(e.to_string()))?;
    let span_of = |s: &str| {
        let start = s.as_ptr() as usize - text.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + s.len()) as u32,
        }
    };
    // `"id": null` (an error about an unreadable request) deserializes as no id at all.
    let id = fields.id.map(|id| span_of(id.get()));
    // A string's text without its quotes: a span when it has no escapes, else decoded.
    let string = |quoted: &str| -> Result<Method, MessageError> {
        if quoted.contains('\\') {
            let decoded: String =
                serde_json::from_str(quoted).map_err(|e| MessageError::Json(e.to_string()))?;
            return Ok(Method::Owned(decoded.into_boxed_str()));
        }
        Ok(Method::Span(span_of(&quoted[1..quoted.len() - 1])))
    };
    let method = match fields.method.map(RawValue::get) {
        None => None,
        Some(quoted) if !quoted.starts_with('"') => {
            return Err(MessageError::Shape("the method must be a string"));
        }
        Some(quoted) => Some(string(quoted)?),
    };
    let tool = match fields.params.0.map(RawValue::get) {
        Some(quoted) if quoted.starts_with('"') => Some(string(quoted)?),
        _ => None,
    };
    let kind = match (&method, &id) {
        (Some(_), Some(_)) => MessageKind::Request,
        (Some(_), None) => MessageKind::Notification,
        (None, _) if fields.error => MessageKind::Error,
        (None, Some(_)) if fields.result => MessageKind::Response,
        _ => return Err(MessageError::Shape("no method, result or error")),
    };
    Ok(Envelope {
        kind,
        id,
        method,
        tool,
        batch_len: 0,
    })
}

/// A message's `params`, read only for its `name` member; anything else is skipped.
#[derive(Default)]
struct ParamsName<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for ParamsName<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(params: D) -> Result<Self, D::Error> {
        params.deserialize_any(ParamsName::default())
    }
}

impl<'de: 'a, 'a> Visitor<'de> for ParamsName<'a> {
    type Value = Self;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON-RPC params")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut name = None;
        while let Some(key) = map.next_key::<super::pointer::Key>()? {
            if key.0 == "name" {
                name = Some(map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(ParamsName(name))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
}

/// Counts the elements of a JSON array, skipping each.
struct CountElements;

impl<'de> serde::de::Visitor<'de> for CountElements {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut count = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok(count)
    }
}

/// Messages are equal when their bytes are.
impl Eq for Message {}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("kind", &self.kind())
            .field("id", &self.id())
            .field("method", &self.method())
            .field("len", &self.raw.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_of_each_kind() {
        let request = Message::new(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#);
        assert_eq!(request.kind(), Some(MessageKind::Request));
        assert_eq!(request.id(), Some("7"));
        assert_eq!(request.method(), Some("tools/call"));

        let note = Message::new(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(note.kind(), Some(MessageKind::Notification));
        assert_eq!(note.id(), None);

        let response = Message::new(r#"{"jsonrpc":"2.0","id":"a-1","result":{"x":[1,2]}}"#);
        assert_eq!(response.kind(), Some(MessageKind::Response));
        assert_eq!(response.id(), Some(r#""a-1""#));
        assert_eq!(response.method(), None);

        let error = Message::new(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700}}"#);
        assert_eq!(error.kind(), Some(MessageKind::Error));
        assert_eq!(error.id(), None);

        let null_result = Message::new(r#"{"jsonrpc":"2.0","id":2,"result":null}"#);
        assert_eq!(null_result.kind(), Some(MessageKind::Response));
    }

    #[test]
    fn escaped_method_is_decoded() {
        let m = Message::new(r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call"}"#);
        assert_eq!(m.method(), Some("tools/call"));
    }

    #[test]
    fn invalid_messages_are_reported() {
        assert!(matches!(
            Message::new("{not json").validate(),
            Err(MessageError::Json(_))
        ));
        assert!(matches!(
            Message::new("42").validate(),
            Err(MessageError::Shape(_))
        ));
        assert!(matches!(
            Message::new(r#"{"jsonrpc":"2.0","id":1}"#).validate(),
            Err(MessageError::Shape(_))
        ));
        assert!(matches!(
            Message::new(r#"{"jsonrpc":"2.0","id":1,"method":7}"#).validate(),
            Err(MessageError::Shape(_))
        ));
        assert_eq!(
            Message::new("{oops").as_str(),
            "",
            "no text without a valid envelope"
        );
    }

    #[test]
    fn batch_elements_share_the_buffer() {
        let batch = Message::new(
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, {"jsonrpc":"2.0","method":"x"}]"#,
        );
        assert_eq!(batch.kind(), Some(MessageKind::Batch));
        assert_eq!(batch.batch_len(), 2);
        let elements = batch.batch_elements().unwrap();
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].method(), Some("ping"));
        assert_eq!(elements[1].kind(), Some(MessageKind::Notification));
        assert_eq!(
            elements[0].raw().as_ptr(),
            batch.raw()[1..].as_ptr(),
            "elements are slices, not copies"
        );
    }
}
