//! [`NewlineCodec`]: newline-delimited JSON framing for stdio, as MCP defines it, with a maximum
//! message size. A line is cut from the read buffer without copying. A line over the limit is
//! discarded as it streams in and reported as [`Frame::Oversized`]; the stream carries on.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::Frame;
use crate::protocol::Message;

/// The default maximum message size: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How much of each end of an oversized line is kept to recover its JSON-RPC id.
const ID_PROBE_LEN: usize = 512;

#[derive(Debug)]
pub struct NewlineCodec {
    max_len: usize,
    /// Where to resume looking for a newline in the buffer.
    scanned: usize,
    /// Set while skipping the rest of an oversized line.
    discarding: Option<OversizedProbe>,
}

/// An oversized message being skipped: what its head told, and its last bytes so far. Shared
/// with the SSE parser, which discards oversized events the same way.
#[derive(Debug)]
pub(crate) struct OversizedProbe {
    len: usize,
    id: Option<String>,
    request: bool,
    tail: Vec<u8>,
}

impl OversizedProbe {
    /// Probes the head of the message (only its first bytes are looked at); counts nothing yet.
    pub(crate) fn new(head: &[u8]) -> Self {
        let (id, request) = probe(&head[..head.len().min(ID_PROBE_LEN)]);
        Self {
            len: 0,
            id,
            request,
            tail: Vec::with_capacity(ID_PROBE_LEN),
        }
    }

    /// Counts skipped bytes, keeping the last few.
    pub(crate) fn skip(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        let keep = bytes.len().min(ID_PROBE_LEN);
        let overflow = (self.tail.len() + keep).saturating_sub(ID_PROBE_LEN);
        self.tail.drain(..overflow);
        self.tail.extend_from_slice(&bytes[bytes.len() - keep..]);
    }

    /// The message's length, its id and whether it is a request. Libraries that write the id
    /// last (as the TypeScript SDK does) leave it in the tail.
    pub(crate) fn finish(self) -> (usize, Option<String>, bool) {
        let id = self.id.or_else(|| tail_id(&self.tail));
        (self.len, id, self.request)
    }

    fn into_frame(self) -> Frame {
        let (len, id, request) = self.finish();
        Frame::Oversized { len, id, request }
    }
}

impl NewlineCodec {
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            scanned: 0,
            discarding: None,
        }
    }
}

impl Decoder for NewlineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        loop {
            let newline = memchr::memchr(b'\n', &buf[self.scanned..]).map(|i| self.scanned + i);
            if let Some(discard) = &mut self.discarding {
                match newline {
                    Some(end) => {
                        discard.skip(&buf[..end]);
                        buf.advance(end + 1);
                        self.scanned = 0;
                        let discard = self.discarding.take().expect("discarding");
                        return Ok(Some(discard.into_frame()));
                    }
                    None => {
                        discard.skip(buf);
                        buf.clear();
                        self.scanned = 0;
                        return Ok(None);
                    }
                }
            }
            match newline {
                Some(end) if end > self.max_len => {
                    self.start_discarding(buf, end);
                }
                Some(end) => {
                    let line = buf.split_to(end + 1);
                    self.scanned = 0;
                    let line = line.freeze().slice(..end);
                    let trimmed = line.trim_ascii_end();
                    if trimmed.trim_ascii_start().is_empty() {
                        continue; // blank lines carry nothing
                    }
                    return Ok(Some(Frame::Message(Message::new(
                        line.slice(..trimmed.len()),
                    ))));
                }
                None if buf.len() > self.max_len => {
                    let len = buf.len();
                    self.start_discarding(buf, len);
                    return Ok(None);
                }
                None => {
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    /// At end of stream, a last line without its newline still counts, and a line being
    /// discarded is reported.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if self.discarding.is_some() || buf.trim_ascii().is_empty() {
            buf.clear();
            return Ok(self.discarding.take().map(OversizedProbe::into_frame));
        }
        // The remainder is within the limit (`decode` would have started discarding it).
        buf.extend_from_slice(b"\n");
        self.decode(buf)
    }
}

impl NewlineCodec {
    /// Begins skipping an oversized line, probing its head; drops the first `upto` bytes.
    fn start_discarding(&mut self, buf: &mut BytesMut, upto: usize) {
        let mut discard = OversizedProbe::new(&buf[..upto]);
        discard.skip(&buf[..upto]);
        self.discarding = Some(discard);
        // Leave the newline (if any) in place so the discard branch ends the line.
        buf.advance(upto);
        self.scanned = 0;
    }
}

/// What can be read from the first bytes of a message too large to parse: its top-level `id`
/// and whether it has a top-level `method` (JSON-RPC libraries write both before the bulk).
fn probe(prefix: &[u8]) -> (Option<String>, bool) {
    let (mut id, mut has_method) = (None, false);
    let (mut depth, mut at) = (0usize, 0);
    while at < prefix.len() {
        match prefix[at] {
            b'"' => {
                let start = at + 1;
                at = start;
                while at < prefix.len() && prefix[at] != b'"' {
                    at += if prefix[at] == b'\\' { 2 } else { 1 };
                }
                if at >= prefix.len() {
                    break;
                }
                let string = &prefix[start..at];
                at += 1;
                let rest = &prefix[at..];
                let after = rest.len() - rest.trim_ascii_start().len();
                let is_key = depth == 1 && rest.get(after) == Some(&b':');
                match string {
                    b"id" if is_key => id = probe_value(&rest[after + 1..]),
                    b"method" if is_key => has_method = true,
                    _ => {}
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    (id, has_method)
}

/// The top-level id of a message whose text ends with `"id": VALUE }`.
fn tail_id(tail: &[u8]) -> Option<String> {
    let text = tail.trim_ascii_end().strip_suffix(b"}")?.trim_ascii_end();
    let value_start = if text.ends_with(b"\"") {
        // Back to the opening quote: the nearest quote not escaped by a backslash.
        let mut at = text.len() - 1;
        loop {
            at = text[..at].iter().rposition(|&b| b == b'"')?;
            let escapes = text[..at].iter().rev().take_while(|&&b| b == b'\\').count();
            if escapes % 2 == 0 {
                break at;
            }
        }
    } else {
        text.iter()
            .rposition(|b| !(b.is_ascii_digit() || b"+-.eE".contains(b)))?
            + 1
    };
    let (before, value) = text.split_at(value_start);
    let before = before.trim_ascii_end().strip_suffix(b":")?.trim_ascii_end();
    let before = before.strip_suffix(b"\"id\"")?.trim_ascii_end();
    if !(before.ends_with(b",") || before.ends_with(b"{")) {
        return None; // not a member of its own: "id" was inside a string
    }
    match serde_json::from_slice::<serde_json::Value>(value).ok()? {
        id @ (serde_json::Value::Number(_) | serde_json::Value::String(_)) => Some(id.to_string()),
        _ => None,
    }
}

/// A JSON-RPC id (number or string) at the start of `bytes`, as JSON text. It must end before
/// `bytes` does: a number running up to the end may have been cut short.
fn probe_value(bytes: &[u8]) -> Option<String> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<serde_json::Value>();
    let id = match values.next()? {
        Ok(id @ (serde_json::Value::Number(_) | serde_json::Value::String(_))) => id,
        _ => return None,
    };
    (values.byte_offset() < bytes.len()).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut NewlineCodec, input: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        // Feed in small chunks to exercise partial reads.
        for chunk in input.chunks(7) {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        frames
    }

    fn text(frame: &Frame) -> &str {
        match frame {
            Frame::Message(m) => std::str::from_utf8(m.raw()).unwrap(),
            Frame::Oversized { .. } => panic!("unexpected oversized frame"),
        }
    }

    #[test]
    fn splits_lines_and_skips_blank_ones() {
        let mut codec = NewlineCodec::new(1024);
        let frames = decode_all(&mut codec, b"{\"a\":1}\n\n  \n{\"b\":2}\r\n");
        assert_eq!(frames.len(), 2);
        assert_eq!(text(&frames[0]), "{\"a\":1}");
        assert_eq!(text(&frames[1]), "{\"b\":2}");
    }

    #[test]
    fn oversized_line_is_reported_with_its_id_and_the_stream_goes_on() {
        let mut codec = NewlineCodec::new(64);
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":42,\"method\":\"x\",\"params\":\"{}\"}}\n",
            "y".repeat(500)
        );
        let input = format!("{big}{{\"ok\":true}}\n");
        let frames = decode_all(&mut codec, input.as_bytes());
        assert_eq!(frames.len(), 2);
        match &frames[0] {
            Frame::Oversized { len, id, request } => {
                assert_eq!(*len, big.len() - 1);
                assert_eq!(id.as_deref(), Some("42"));
                assert!(request);
            }
            other => panic!("expected oversized, got {other:?}"),
        }
        assert_eq!(text(&frames[1]), "{\"ok\":true}");
    }

    #[test]
    fn the_probe_reads_only_top_level_keys() {
        assert_eq!(
            probe(br#"{"jsonrpc":"2.0", "id" : "r-9", "method":"x","params":"#),
            (Some("\"r-9\"".into()), true)
        );
        assert_eq!(
            probe(br#"{"jsonrpc":"2.0","result":{"id":5,"method":"m"},"id":7,"x":"ab"#),
            (Some("7".into()), false),
            "nested keys are ignored, an answer has no method"
        );
        assert_eq!(
            probe(br#"{"params":{"id":1},"text":"an \"id\": 3"#),
            (None, false)
        );
    }

    #[test]
    fn an_id_written_last_is_found_in_the_tail() {
        let mut codec = NewlineCodec::new(64);
        let line = format!(
            "{{\"result\":{{\"text\":\"{}\",\"id\":1}},\"jsonrpc\":\"2.0\",\"id\":\"t-7\"}}\n",
            "z".repeat(2000)
        );
        match &decode_all(&mut codec, line.as_bytes())[..] {
            [Frame::Oversized { id, request, .. }] => {
                assert_eq!(id.as_deref(), Some("\"t-7\""));
                assert!(!request);
            }
            other => panic!("expected one oversized frame, got {other:?}"),
        }
        assert_eq!(tail_id(br#"..."a":1, "id" : 42 } "#).as_deref(), Some("42"));
        assert_eq!(
            tail_id(br#"{"x":{"id":5}}"#),
            None,
            "a nested id is not the message's"
        );
        assert_eq!(tail_id(br#""text":"say \"id\": 3}"#), None);
    }

    #[test]
    fn a_number_cut_at_the_probe_limit_is_not_taken_for_an_id() {
        assert_eq!(probe(br#"{"id":12"#), (None, false));
        assert_eq!(probe(br#"{"id":12,"#), (Some("12".into()), false));
    }

    #[test]
    fn end_of_stream_flushes_the_last_line() {
        let mut codec = NewlineCodec::new(16);
        let mut buf = BytesMut::from(&b"{\"a\":1}"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        match codec.decode_eof(&mut buf).unwrap() {
            Some(Frame::Message(m)) => assert_eq!(m.raw().as_ref(), b"{\"a\":1}"),
            other => panic!("expected the last line, got {other:?}"),
        }
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());

        let mut buf = BytesMut::from(&b"{\"id\":3,\"result\":\"xxxxxxxxxxxxxxxxxxxx"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf).unwrap(),
            Some(Frame::Oversized { id: Some(ref id), request: false, .. }) if id == "3"
        ));
    }
}
