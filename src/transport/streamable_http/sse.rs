//! [`SseParser`]: reads the server-sent events of an upstream's response incrementally, as
//! the WHATWG event-stream format defines them (lines ending in LF, CR or CRLF; `data`, `id`,
//! `retry` and `event` fields; comments), with a bound: an event whose data grows past the
//! maximum message size is reported as [`SseItem::Oversized`] the moment it does, with what
//! its first bytes tell of it (its JSON-RPC id), and the rest of it is discarded as it streams
//! in, never buffered. A line that runs past the bound without being data is skipped the same
//! way. The parser holds at most about the bound in memory, whatever the upstream sends.

use bytes::{Bytes, BytesMut};

use super::super::framing::OversizedProbe;

const BOM: &[u8] = "\u{feff}".as_bytes();

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event's `id` field, when it had one (an id sets the stream's position).
    pub id: Option<String>,
    /// The `retry` field in milliseconds, when it had a valid one.
    pub retry: Option<u64>,
    /// The data lines joined by newlines; empty for an event with no data (a priming event).
    pub data: Bytes,
}

/// What the parser found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    /// An event whose data exceeded the bound, reported when it did (the rest of it is
    /// skipped): its size then, and its JSON-RPC id and request nature when its head shows
    /// them.
    Oversized {
        len: usize,
        id: Option<String>,
        request: bool,
    },
}

/// An incremental event-stream parser; feed it chunks as they arrive.
#[derive(Debug)]
pub struct SseParser {
    max_data: usize,
    /// The current line, not yet ended.
    line: BytesMut,
    /// Skipping the rest of a line that ran past the bound.
    skipping_line: bool,
    /// A CR ended the last line: an LF right after it belongs to that line ending.
    after_cr: bool,
    /// The stream's first line, which may start with a byte-order mark.
    first_line: bool,
    data: BytesMut,
    has_data: bool,
    id: Option<String>,
    retry: Option<u64>,
    /// Set while the rest of an oversized event is being discarded.
    discarding: bool,
}

impl SseParser {
    /// A parser that discards events with more than `max_data` bytes of data.
    pub fn new(max_data: usize) -> Self {
        Self {
            max_data,
            line: BytesMut::new(),
            skipping_line: false,
            after_cr: false,
            first_line: true,
            data: BytesMut::new(),
            has_data: false,
            id: None,
            retry: None,
            discarding: false,
        }
    }

    /// Whether an event has begun and not ended yet (so a stream that stops here is stuck
    /// mid-event, not idle between events).
    pub fn mid_event(&self) -> bool {
        !self.line.is_empty()
            || self.skipping_line
            || self.has_data
            || self.discarding
            || self.id.is_some()
    }

    /// Parses `chunk`, handing each complete item to `emit`.
    pub fn feed(&mut self, mut chunk: &[u8], emit: &mut impl FnMut(SseItem)) {
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\n', b'\r', chunk) {
                Some(end) => {
                    self.after_cr = chunk[end] == b'\r';
                    self.take_line_part(&chunk[..end], emit);
                    self.end_line(emit);
                    chunk = &chunk[end + 1..];
                }
                None => {
                    self.take_line_part(chunk, emit);
                    chunk = &[];
                }
            }
        }
    }

    /// Appends to the current line, or starts skipping it once it runs past what any field
    /// may hold.
    fn take_line_part(&mut self, part: &[u8], emit: &mut impl FnMut(SseItem)) {
        if self.skipping_line {
            return;
        }
        // `data: ` plus the bound; a longer line cannot be a data line within the bound.
        if self.line.len() + part.len() > self.max_data + 8 {
            self.skipping_line = true;
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(part);
            // An oversized data line discards the event, its head probed for the id; any other
            // line that long is nonsense and is skipped on its own.
            if let Some(value) = line.strip_prefix(b"data:")
                && !self.discarding
            {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                let mut head = std::mem::take(&mut self.data);
                if self.has_data {
                    head.extend_from_slice(b"\n");
                }
                head.extend_from_slice(value);
                self.oversized(&head, emit);
            }
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn end_line(&mut self, emit: &mut impl FnMut(SseItem)) {
        if std::mem::take(&mut self.skipping_line) {
            return;
        }
        let mut line = std::mem::take(&mut self.line);
        if std::mem::take(&mut self.first_line) && line.starts_with(BOM) {
            let _ = line.split_to(BOM.len());
        }
        if line.is_empty() {
            return self.dispatch(emit);
        }
        if line[0] == b':' {
            return; // a comment
        }
        let (field, value) = match memchr::memchr(b':', &line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &b""[..]),
        };
        match field {
            b"data" => self.take_data(value, emit),
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {} // `event` and unknown fields: MCP messages are all of the default type
        }
    }

    fn take_data(&mut self, value: &[u8], emit: &mut impl FnMut(SseItem)) {
        if self.discarding {
            return;
        }
        let separator = usize::from(self.has_data);
        if self.data.len() + separator + value.len() > self.max_data {
            let mut head = std::mem::take(&mut self.data);
            head.extend_from_slice(b"\n");
            head.extend_from_slice(value);
            return self.oversized(&head, emit);
        }
        if self.has_data {
            self.data.extend_from_slice(b"\n");
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
    }

    /// Reports the current event as oversized, probing `head` (its data so far), and discards
    /// the rest of it.
    fn oversized(&mut self, head: &[u8], emit: &mut impl FnMut(SseItem)) {
        let mut probe = OversizedProbe::new(head);
        probe.skip(head);
        let (len, id, request) = probe.finish();
        emit(SseItem::Oversized { len, id, request });
        self.discarding = true;
        self.data = BytesMut::new();
        self.has_data = false;
    }

    /// A blank line ends the event.
    fn dispatch(&mut self, emit: &mut impl FnMut(SseItem)) {
        let id = self.id.take();
        let retry = self.retry.take();
        if std::mem::take(&mut self.discarding) {
            return; // reported when it grew too large
        }
        let data = std::mem::take(&mut self.data).freeze();
        let has_data = std::mem::take(&mut self.has_data);
        if has_data || id.is_some() || retry.is_some() {
            emit(SseItem::Event(SseEvent { id, retry, data }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]], max: usize) -> Vec<SseItem> {
        let mut parser = SseParser::new(max);
        let mut items = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut |item| items.push(item));
        }
        items
    }

    fn event(id: Option<&str>, data: &str) -> SseItem {
        SseItem::Event(SseEvent {
            id: id.map(str::to_owned),
            retry: None,
            data: Bytes::copy_from_slice(data.as_bytes()),
        })
    }

    #[test]
    fn events_with_any_line_ending_split_anywhere() {
        let stream = b"\xEF\xBB\xBFid: 1\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\nid:2\rdata:x\rdata: y\r\rretry: 250\n\n";
        let expected = vec![
            event(Some("1"), "{\"a\":1}"),
            event(Some("2"), "x\ny"),
            SseItem::Event(SseEvent {
                id: None,
                retry: Some(250),
                data: Bytes::new(),
            }),
        ];
        assert_eq!(parse(&[stream], 64), expected);
        // The same bytes one at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse(&bytes, 64), expected);
    }

    #[test]
    fn a_priming_event_has_an_id_and_no_data() {
        assert_eq!(
            parse(&[b"id: 0.0\ndata:\n\n"], 64),
            vec![event(Some("0.0"), "")]
        );
        assert!(parse(&[b"event: message\n\n"], 64).is_empty());
    }

    #[test]
    fn an_oversized_event_is_discarded_while_it_streams() {
        let mut parser = SseParser::new(32);
        let mut items = Vec::new();
        parser.feed(
            b"id: 7\ndata: {\"jsonrpc\":\"2.0\",\"id\":42,\"result\":{\"x\":\"",
            &mut |i| items.push(i),
        );
        assert_eq!(items.len(), 1, "reported as soon as it outgrows the bound");
        for _ in 0..1000 {
            parser.feed(&[b'a'; 1024], &mut |i| items.push(i));
            assert!(parser.data.capacity() <= 64 && parser.line.capacity() <= 128);
        }
        assert!(parser.mid_event());
        parser.feed(b"\"}}\n\ndata: {\"ok\":1}\n\n", &mut |i| items.push(i));
        assert!(!parser.mid_event());
        let [SseItem::Oversized { len, id, request }, next] = &items[..] else {
            panic!("{items:?}")
        };
        assert!(*len > 32);
        assert_eq!(id.as_deref(), Some("42"));
        assert!(!request);
        assert_eq!(next, &event(None, "{\"ok\":1}"));
    }

    #[test]
    fn many_small_data_lines_count_toward_the_bound() {
        let mut stream = Vec::new();
        for _ in 0..100 {
            stream.extend_from_slice(b"data: 0123456789\n");
        }
        stream.extend_from_slice(b"\n");
        let items = parse(&[&stream], 64);
        assert!(
            matches!(items[..], [SseItem::Oversized { .. }]),
            "{items:?}"
        );
    }

    #[test]
    fn a_long_line_that_is_not_data_is_skipped() {
        let mut stream = b": ".to_vec();
        stream.extend_from_slice(&[b'x'; 500]);
        stream.extend_from_slice(b"\ndata: ok\n\n");
        assert_eq!(parse(&[&stream], 16), vec![event(None, "ok")]);
    }
}
