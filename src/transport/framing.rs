//! [`NewlineCodec`]: newline-delimited JSON framing for stdio, as MCP defines it, with a maximum
//! message size. A line is cut from the read buffer without copying. A line over the limit is
//! discarded as it streams in and reported as [`Frame::Oversized`]; the stream carries on.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::Frame;
use crate::protocol::Message;

/// The default maximum message size: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How much of an oversized line is kept to recover its JSON-RPC id.
const ID_PROBE_LEN: usize = 512;

#[derive(Debug)]
pub struct NewlineCodec {
    max_len: usize,
    /// Where to resume looking for a newline in the buffer.
    scanned: usize,
    /// Set while skipping the rest of an oversized line.
    discarding: Option<Discard>,
}

#[derive(Debug)]
struct Discard {
    len: usize,
    id: Option<String>,
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
                        buf.advance(end + 1);
                        self.scanned = 0;
                        let Discard { len, id } = self.discarding.take().expect("discarding");
                        return Ok(Some(Frame::Oversized { len: len + end, id }));
                    }
                    None => {
                        discard.len += buf.len();
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
                    if trimmed.iter().all(u8::is_ascii_whitespace) {
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
}

impl NewlineCodec {
    /// Begins skipping an oversized line, remembering its id; drops the first `upto` bytes.
    fn start_discarding(&mut self, buf: &mut BytesMut, upto: usize) {
        let probe = &buf[..upto.min(ID_PROBE_LEN)];
        self.discarding = Some(Discard {
            len: upto,
            id: probe_id(probe),
        });
        // Leave the newline (if any) in place so the discard branch ends the line.
        buf.advance(upto);
        self.scanned = 0;
    }
}

/// Reads the JSON-RPC id from the first bytes of a message that is too large to parse, when the
/// id comes before the large part (as JSON-RPC libraries write it).
fn probe_id(prefix: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(prefix);
    let at = text.find("\"id\"")?;
    let rest = text[at + 4..].trim_start().strip_prefix(':')?.trim_start();
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    match stream.next()? {
        Ok(id @ (serde_json::Value::Number(_) | serde_json::Value::String(_))) => {
            Some(id.to_string())
        }
        _ => None,
    }
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
            Frame::Message(m) => m.as_str(),
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
            Frame::Oversized { len, id } => {
                assert_eq!(*len, big.len() - 1);
                assert_eq!(id.as_deref(), Some("42"));
            }
            other => panic!("expected oversized, got {other:?}"),
        }
        assert_eq!(text(&frames[1]), "{\"ok\":true}");
    }

    #[test]
    fn string_ids_are_probed() {
        assert_eq!(
            probe_id(br#"{"jsonrpc":"2.0", "id" : "r-9", "params":"#).as_deref(),
            Some("\"r-9\"")
        );
        assert_eq!(probe_id(br#"{"jsonrpc":"2.0","params":"#), None);
    }
}
