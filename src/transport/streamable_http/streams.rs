//! [`SessionStreams`]: where the messages membrane sends to one HTTP client go. Each POST that
//! carries requests opens a stream that ends with their last answer; the client's GET opens the
//! standalone stream. Answers follow their request's stream; progress follows the
//! request that asked for it (its `progressToken`); anything else the server starts goes to the
//! GET stream if one is open, else to the newest POST stream someone still reads as an event
//! stream, else waits on the standalone stream for the next GET. Every event gets an
//! [`EventId`] naming its stream and its place in it, and the session keeps its latest events up
//! to a budget in bytes, so a client whose stream was cut can resume it with `Last-Event-ID` and
//! miss nothing, on that stream only. Events delivered on a stream answered as JSON (which
//! cannot be resumed) are not kept. With a durable session store, kept events are also queued
//! for its [`EventWriter`], so a stream can be resumed after a restart or on another replica;
//! each instance numbers its streams from a random base so that their ids never collide there.
//! The open streams of a session are capped.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use tokio::sync::mpsc;

use crate::protocol::{Message, MessageKind, id_key};
use crate::session::{EventWriter, SessionId, StoredEvent};

/// A stream of one session: the standalone (GET) stream, then one per POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StreamId(pub u32);

/// An SSE event id: the stream and the event's sequence number in it, written `stream.seq`.
/// Sequence numbers start at 1; 0 names the priming event before the first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    pub stream: StreamId,
    pub seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.stream.0, self.seq)
    }
}

impl FromStr for EventId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (stream, seq) = s.split_once('.').ok_or(())?;
        Ok(EventId {
            stream: StreamId(stream.parse().map_err(|_| ())?),
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

/// One message on its way to the client, with the id of the event that carries it.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    pub id: EventId,
    pub message: Message,
}

/// Where a routed message must be sent: the stream's live receiver, if one is attached.
pub struct Delivery {
    pub to: Option<mpsc::Sender<StreamEvent>>,
    pub event: StreamEvent,
}

/// Why a stream cannot be opened or attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("a GET stream is already open for this session")]
    Conflict,
    #[error("no such stream in this session (or its events are gone)")]
    UnknownStream,
    #[error("the session has ended")]
    Closed,
    #[error("this session has too many open streams; wait for answers before sending more")]
    TooMany,
}

/// Events waiting in a live stream's channel before routing waits for the client to read.
const LIVE_DEPTH: usize = 64;

/// Finished POST streams remembered for replay, per session (their events count toward the
/// byte budget too).
const FINISHED_KEPT: usize = 32;

/// The client-facing streams of one session.
pub struct SessionStreams {
    state: Mutex<State>,
    retention_bytes: usize,
    max_streams: usize,
    /// Where kept events also go, with a durable store: the session's id and the writer.
    durable: OnceLock<(SessionId, EventWriter)>,
}

#[derive(Default)]
struct State {
    standalone: StreamId,
    next_stream: u32,
    streams: HashMap<StreamId, Stream>,
    /// Requests awaiting an answer (by id key), and the stream the answer goes out on.
    requests: HashMap<String, StreamId>,
    /// Progress tokens of requests awaiting an answer, and their stream.
    progress: HashMap<String, StreamId>,
    /// Finished POST streams, oldest first.
    finished: VecDeque<StreamId>,
    /// Every kept event, oldest first: its stream, sequence number and size.
    kept: VecDeque<(StreamId, u64, usize)>,
    kept_bytes: usize,
    /// Events dropped for the byte budget before any client received them.
    lost: u64,
    closed: bool,
}

/// How a POST stream's response is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Not decided yet: the handler waits for the first message or the upstream's framing.
    #[default]
    Undecided,
    EventStream,
}

#[derive(Default)]
struct Stream {
    /// Requests on this stream not answered yet; a POST stream ends at zero.
    pending: usize,
    framing: Framing,
    last_seq: u64,
    /// The last sequence number handed to a live receiver.
    delivered: u64,
    tail: VecDeque<StreamEvent>,
    live: Option<mpsc::Sender<StreamEvent>>,
}

impl Stream {
    fn is_read(&self) -> bool {
        self.live.as_ref().is_some_and(|live| !live.is_closed())
    }
}

impl SessionStreams {
    /// Streams of one session, keeping up to `retention_bytes` of events for replay, with at
    /// most `max_streams` open at once.
    pub fn new(retention_bytes: usize, max_streams: usize) -> Self {
        // Below 2^31, so the numbers that follow never wrap.
        let base = (uuid::Uuid::new_v4().as_u128() as u32) >> 1;
        let standalone = StreamId(base);
        let mut state = State {
            standalone,
            next_stream: base + 1,
            ..State::default()
        };
        state.streams.insert(standalone, Stream::default());
        Self {
            state: Mutex::new(state),
            retention_bytes,
            max_streams,
            durable: OnceLock::new(),
        }
    }

    /// From now on kept events also go to `writer`, as events of session `id`.
    pub fn persist(&self, id: SessionId, writer: EventWriter) {
        let _ = self.durable.set((id, writer));
    }

    /// The standalone stream.
    pub fn standalone(&self) -> StreamId {
        self.state().standalone
    }

    fn write_durably(&self, event: &StreamEvent) {
        if let Some((id, writer)) = self.durable.get() {
            writer.write(
                id,
                StoredEvent {
                    stream: event.id.stream.0,
                    seq: event.id.seq,
                    message: event.message.clone(),
                },
            );
        }
    }

    /// Opens the stream for a POST carrying `requests`; it ends once each is answered.
    pub fn open(
        &self,
        requests: &[Message],
    ) -> Result<(StreamId, mpsc::Receiver<StreamEvent>), AttachError> {
        let mut state = self.state();
        if state.closed {
            return Err(AttachError::Closed);
        }
        let standalone = state.standalone;
        let open = state
            .streams
            .iter()
            .filter(|(id, entry)| **id != standalone && entry.pending > 0)
            .count();
        if open >= self.max_streams {
            return Err(AttachError::TooMany);
        }
        let (tx, rx) = mpsc::channel(LIVE_DEPTH);
        let id = StreamId(state.next_stream);
        state.next_stream += 1;
        for request in requests {
            if let Some(key) = request.id() {
                state.requests.insert(id_key(key).into_owned(), id);
            }
            if let Some(token) = progress_token(request, "_meta") {
                state.progress.insert(token, id);
            }
        }
        let stream = Stream {
            pending: requests.len(),
            live: Some(tx),
            ..Stream::default()
        };
        state.streams.insert(id, stream);
        Ok((id, rx))
    }

    /// The response of a POST stream is an event stream: messages the server starts may go
    /// out on it.
    pub fn streaming(&self, stream: StreamId) {
        let mut state = self.state();
        if let Some(entry) = state.streams.get_mut(&stream)
            && entry.framing != Framing::EventStream
        {
            entry.framing = Framing::EventStream;
            // What went out before the framing was known is kept now.
            for event in &entry.tail {
                self.write_durably(event);
            }
        }
    }

    /// A POST stream answered as JSON: nothing on it can be resumed, so nothing is kept.
    pub fn discard(&self, stream: StreamId) {
        let mut state = self.state();
        if let Some(entry) = state.streams.remove(&stream) {
            state.kept_bytes -= entry
                .tail
                .iter()
                .map(|e| e.message.raw().len())
                .sum::<usize>();
        }
        state.finished.retain(|s| *s != stream);
        state.requests.retain(|_, s| *s != stream);
        state.progress.retain(|_, s| *s != stream);
    }

    /// Decides which stream `message` goes out on and records it there. `undecided_ok` lets
    /// messages the server starts go to a POST stream whose framing is not decided yet (it
    /// then becomes an event stream); without it they wait for one that is.
    pub fn route(&self, message: Message, undecided_ok: bool) -> Delivery {
        let mut state = self.state();
        let answered = match message.kind() {
            Some(MessageKind::Response | MessageKind::Error) => message
                .id()
                .and_then(|id| state.requests.remove(id_key(id).as_ref())),
            _ => None,
        };
        let stream = answered
            .or_else(|| {
                progress_token(&message, "params")
                    .and_then(|token| state.progress.get(&token).copied())
            })
            .unwrap_or_else(|| state.unsolicited_stream(undecided_ok));
        let size = message.raw().len();
        let standalone = state.standalone;
        let entry = state.streams.entry(stream).or_default();
        entry.last_seq += 1;
        let event = StreamEvent {
            id: EventId {
                stream,
                seq: entry.last_seq,
            },
            message,
        };
        entry.tail.push_back(event.clone());
        if entry.framing == Framing::EventStream || stream == standalone {
            self.write_durably(&event);
        }
        if entry.live.is_some() {
            entry.delivered = entry.last_seq;
        }
        let mut to = entry.live.clone();
        if answered.is_some() {
            entry.pending = entry.pending.saturating_sub(1);
            if entry.pending == 0 {
                // The stream's last answer: the live sender goes with it, ending the response.
                to = entry.live.take();
                state.finish(stream);
            }
        }
        state.kept.push_back((stream, event.id.seq, size));
        state.kept_bytes += size;
        state.evict(self.retention_bytes);
        Delivery { to, event }
    }

    /// Forgets a receiver that stopped reading (its client went away, or did not read in
    /// time); its events stay for a resuming GET.
    pub fn detach(&self, stream: StreamId, sender: &mpsc::Sender<StreamEvent>) {
        let mut state = self.state();
        if let Some(entry) = state.streams.get_mut(&stream)
            && entry
                .live
                .as_ref()
                .is_some_and(|live| live.same_channel(sender))
        {
            entry.live = None;
        }
    }

    /// Attaches a GET to the standalone stream: the events it holds that no one received yet,
    /// then whatever comes next.
    pub fn attach_standalone(
        &self,
    ) -> Result<(Vec<StreamEvent>, mpsc::Receiver<StreamEvent>), AttachError> {
        let mut state = self.state();
        if state.closed {
            return Err(AttachError::Closed);
        }
        let standalone = state.standalone;
        let entry = state.streams.entry(standalone).or_default();
        if entry.is_read() {
            return Err(AttachError::Conflict);
        }
        let delivered = entry.delivered;
        let backlog = entry.replay_after(delivered);
        entry.delivered = entry.last_seq;
        let (tx, rx) = mpsc::channel(LIVE_DEPTH);
        entry.live = Some(tx);
        Ok((backlog, rx))
    }

    /// Resumes the stream `last` belongs to: the events after it, then (if the stream has not
    /// ended) whatever comes next.
    pub fn resume(
        &self,
        last: EventId,
    ) -> Result<(Vec<StreamEvent>, Option<mpsc::Receiver<StreamEvent>>), AttachError> {
        let mut state = self.state();
        let (closed, standalone) = (state.closed, state.standalone);
        let entry = state
            .streams
            .get_mut(&last.stream)
            .ok_or(AttachError::UnknownStream)?;
        if last.seq > entry.last_seq {
            return Err(AttachError::UnknownStream);
        }
        if last.stream == standalone && entry.is_read() {
            return Err(AttachError::Conflict);
        }
        let replay = entry.replay_after(last.seq);
        let ongoing = last.stream == standalone || entry.pending > 0;
        let live = (ongoing && !closed).then(|| {
            let (tx, rx) = mpsc::channel(LIVE_DEPTH);
            entry.live = Some(tx);
            entry.framing = Framing::EventStream;
            entry.delivered = entry.last_seq;
            rx
        });
        Ok((replay, live))
    }

    /// Ends every stream: the session is over.
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        for entry in state.streams.values_mut() {
            entry.live = None;
        }
    }

    /// Requests still waiting for their answer.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.state().requests.len()
    }

    /// Bytes of events kept for replay.
    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        self.state().kept_bytes
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Where a message the client did not ask for goes: the GET stream when one is open, else
    /// the newest POST stream still waiting for an answer that someone reads as events (a
    /// client whose stream broke resumes it), else the standalone stream's backlog.
    fn unsolicited_stream(&self, undecided_ok: bool) -> StreamId {
        let standalone = self.standalone;
        if self.streams.get(&standalone).is_some_and(Stream::is_read) {
            return standalone;
        }
        self.streams
            .iter()
            .filter(|(id, entry)| {
                **id != standalone
                    && entry.pending > 0
                    && entry.is_read()
                    && (undecided_ok || entry.framing == Framing::EventStream)
            })
            .map(|(id, _)| *id)
            .max_by_key(|id| id.0)
            .unwrap_or(standalone)
    }

    /// A POST stream whose requests are all answered: kept a while for replay.
    fn finish(&mut self, stream: StreamId) {
        self.progress.retain(|_, s| *s != stream);
        // What an idle session keeps is sized to what it holds: a finished stream's events
        // (most often one answer), and no room for requests it no longer has.
        if let Some(entry) = self.streams.get_mut(&stream) {
            entry.tail.shrink_to_fit();
        }
        if self.requests.is_empty() {
            self.requests.shrink_to_fit();
        }
        if self.progress.is_empty() {
            self.progress.shrink_to_fit();
        }
        self.finished.push_back(stream);
        if self.finished.len() > FINISHED_KEPT
            && let Some(oldest) = self.finished.pop_front()
            && let Some(entry) = self.streams.remove(&oldest)
        {
            self.kept_bytes -= entry
                .tail
                .iter()
                .map(|e| e.message.raw().len())
                .sum::<usize>();
        }
    }

    /// Drops the oldest kept events until they fit in `budget` bytes.
    fn evict(&mut self, budget: usize) {
        while self.kept_bytes > budget {
            let Some((stream, seq, _)) = self.kept.pop_front() else {
                break;
            };
            // Entries of streams discarded or forgotten since are stale: nothing to free.
            let Some(entry) = self.streams.get_mut(&stream) else {
                continue;
            };
            if entry.tail.front().is_none_or(|event| event.id.seq != seq) {
                continue;
            }
            let event = entry.tail.pop_front().expect("checked");
            self.kept_bytes -= event.message.raw().len();
            if seq > entry.delivered {
                self.lost += 1;
                tracing::warn!(
                    lost = self.lost,
                    "a message for the client was dropped before anyone read it: the session's event retention is full"
                );
            }
        }
        // Entries of discarded streams go stale; shed them before they outnumber the rest.
        let events: usize = self.streams.values().map(|entry| entry.tail.len()).sum();
        if self.kept.len() > 2 * events + 64 {
            let streams = &self.streams;
            self.kept.retain(|(stream, seq, _)| {
                streams.get(stream).is_some_and(|entry| {
                    entry.tail.front().is_some_and(|first| first.id.seq <= *seq)
                        && *seq <= entry.last_seq
                })
            });
        }
    }
}

impl Stream {
    fn replay_after(&self, seq: u64) -> Vec<StreamEvent> {
        self.tail
            .iter()
            .filter(|event| event.id.seq > seq)
            .cloned()
            .collect()
    }
}

/// The `progressToken` in `<field>._meta` (a request asking for progress) or in `<field>` (a
/// progress notification), as JSON text. Only messages that mention one are parsed.
fn progress_token(message: &Message, field: &str) -> Option<String> {
    memchr::memmem::find(message.raw(), b"progressToken")?;
    let value = message.to_value().ok()?;
    let token = match field {
        "_meta" => &value["params"]["_meta"]["progressToken"],
        _ if message.method() == Some("notifications/progress") => {
            &value["params"]["progressToken"]
        }
        _ => return None,
    };
    (token.is_string() || token.is_number()).then(|| id_key(&token.to_string()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(json: &str) -> Message {
        Message::new(json.to_owned())
    }

    fn note(n: usize) -> Message {
        msg(&format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"n":{n}}}}}"#
        ))
    }

    #[test]
    fn event_ids_name_their_stream() {
        let id: EventId = "3.17".parse().unwrap();
        assert_eq!((id.stream, id.seq), (StreamId(3), 17));
        assert_eq!(id.to_string(), "3.17");
        assert!("3".parse::<EventId>().is_err() && "a.1".parse::<EventId>().is_err());
    }

    #[test]
    fn answers_and_progress_follow_their_request() {
        let streams = SessionStreams::new(1 << 20, 8);
        let (a, mut rx_a) = streams
            .open(&[msg(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"p"}}}"#,
            )])
            .unwrap();
        let (b, _rx_b) = streams
            .open(&[msg(r#"{"jsonrpc":"2.0","id":2,"method":"x"}"#)])
            .unwrap();
        let progress = streams.route(
            msg(
                r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}"#,
            ),
            true,
        );
        assert_eq!(progress.event.id, EventId { stream: a, seq: 1 });
        drop(progress);
        let stray = streams.route(note(0), true);
        assert_eq!(stray.event.id.stream, b, "the newest open POST stream");
        let answer = streams.route(msg(r#"{"jsonrpc":"2.0","id":1.0,"result":{}}"#), true);
        assert_eq!(answer.event.id, EventId { stream: a, seq: 2 });
        let sender = answer.to.expect("live");
        sender.try_send(answer.event).unwrap();
        drop(sender);
        assert!(rx_a.try_recv().is_ok());
        assert!(
            rx_a.try_recv().is_err() && rx_a.is_closed(),
            "the stream ended"
        );
        assert_eq!(streams.pending(), 1);
    }

    #[test]
    fn server_messages_go_where_someone_reads_them() {
        let streams = SessionStreams::new(1 << 20, 8);
        let (_, rx) = streams
            .open(&[msg(r#"{"jsonrpc":"2.0","id":1,"method":"x"}"#)])
            .unwrap();
        let held = streams.route(note(1), false);
        assert_eq!(
            held.event.id.stream,
            streams.standalone(),
            "a stream whose framing is undecided is not used when the upstream decides it"
        );
        drop(rx);
        assert_eq!(
            streams.route(note(2), true).event.id.stream,
            streams.standalone(),
            "nor a stream nobody reads any more"
        );
        let (backlog, _live) = streams.attach_standalone().unwrap();
        assert_eq!(backlog.len(), 2, "both wait for the GET");
    }

    #[test]
    fn a_cut_stream_resumes_after_the_last_event_seen() {
        let streams = SessionStreams::new(1 << 20, 8);
        let (s, rx) = streams
            .open(&[msg(r#"{"jsonrpc":"2.0","id":"r","method":"x"}"#)])
            .unwrap();
        let (_get_backlog, _get) = streams.attach_standalone().unwrap();
        // The POST stream stops being read; the GET stream takes what the server starts.
        drop(rx);
        for n in 1..=3 {
            let d = streams.route(note(n), true);
            assert_eq!(
                d.event.id.stream,
                streams.standalone(),
                "the GET stream takes the rest"
            );
        }
        let answer = streams.route(msg(r#"{"jsonrpc":"2.0","id":"r","result":{}}"#), true);
        assert_eq!(answer.event.id, EventId { stream: s, seq: 1 });
        let (replay, live) = streams.resume(EventId { stream: s, seq: 0 }).unwrap();
        assert_eq!(replay.len(), 1, "the answer, kept for the resuming client");
        assert!(live.is_none(), "a finished stream only replays");
        assert_eq!(
            streams.resume(EventId { stream: s, seq: 9 }).unwrap_err(),
            AttachError::UnknownStream
        );
    }

    #[test]
    fn retention_is_counted_in_bytes_and_json_answers_are_not_kept() {
        let one = note(1).raw().len();
        let streams = SessionStreams::new(3 * one, 8);
        for n in 1..=5 {
            streams.route(note(n), true);
        }
        assert!(streams.kept_bytes() <= 3 * one);
        let (backlog, _live) = streams.attach_standalone().unwrap();
        assert_eq!(
            backlog.iter().map(|e| e.id.seq).collect::<Vec<_>>(),
            [3, 4, 5],
            "the oldest went first"
        );
        let (s, _rx) = streams
            .open(&[msg(r#"{"jsonrpc":"2.0","id":7,"method":"x"}"#)])
            .unwrap();
        let before = streams.kept_bytes();
        streams.route(msg(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#), true);
        streams.discard(s);
        assert!(streams.kept_bytes() <= before);
        assert_eq!(
            streams.resume(EventId { stream: s, seq: 0 }).unwrap_err(),
            AttachError::UnknownStream
        );
    }

    #[test]
    fn open_streams_are_capped() {
        let streams = SessionStreams::new(1 << 20, 2);
        let request = |id: u32| msg(&format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"x"}}"#));
        let _a = streams.open(&[request(1)]).unwrap();
        let _b = streams.open(&[request(2)]).unwrap();
        assert_eq!(
            streams.open(&[request(3)]).unwrap_err(),
            AttachError::TooMany
        );
        streams.route(msg(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#), true);
        assert!(
            streams.open(&[request(3)]).is_ok(),
            "an answered stream frees its place"
        );
    }

    #[test]
    fn server_messages_wait_for_a_get() {
        let streams = SessionStreams::new(1 << 20, 8);
        let d = streams.route(
            msg(r#"{"jsonrpc":"2.0","id":5,"method":"roots/list"}"#),
            true,
        );
        assert!(d.to.is_none());
        let (backlog, _rx) = streams.attach_standalone().unwrap();
        assert_eq!(backlog.len(), 1);
        assert_eq!(
            backlog[0].id.to_string(),
            format!("{}.1", streams.standalone().0)
        );
        assert_eq!(
            streams.attach_standalone().unwrap_err(),
            AttachError::Conflict
        );
        streams.close();
        assert_eq!(
            streams.attach_standalone().unwrap_err(),
            AttachError::Closed
        );
    }
}
