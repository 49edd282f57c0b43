//! [`TapeRecorder`]: writes the tapes of recorded sessions. The message path only queues what
//! happened (a few reference-counted clones) with a non-blocking send that wakes nobody; one
//! writer thread takes what is queued every few milliseconds and turns it into lines. When the queue is full, the disk is full or a tape or the directory reaches
//! its cap, lines are dropped (counted and logged), never messages. A tape's header waits for
//! the session's handshake, so it can name the protocol version and both peers; a tape is
//! closed when its session ends. To stay under the directory's cap the oldest closed tapes are
//! removed first.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use super::tape::{FORMAT, TapeEntry, TapeHeader, TapePlugin, entry_line};
use crate::session::Session;

/// `[record]`: where tapes go, which sessions get one, and how large they may grow.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// Where tapes go, one JSON Lines file per session.
    pub dir: PathBuf,
    /// The fraction of new sessions recorded.
    #[serde(default = "all_sessions")]
    pub sessions: f64,
    #[serde(default = "default_max_tape_bytes")]
    pub max_tape_bytes: u64,
    #[serde(default = "default_max_dir_bytes")]
    pub max_dir_bytes: u64,
    /// Bytes of messages waiting for the writer (they keep their buffers alive); past this,
    /// lines are dropped, so a slow disk cannot make membrane hold on to every message.
    #[serde(default = "default_max_queue_bytes")]
    pub max_queue_bytes: u64,
    /// The plugin after which tapes copy messages; before the whole chain when unset.
    pub after: Option<String>,
}

impl RecordConfig {
    /// Recording every session into `dir`, with the default bounds.
    pub fn into_dir(dir: PathBuf) -> Self {
        Self {
            dir,
            sessions: all_sessions(),
            max_tape_bytes: default_max_tape_bytes(),
            max_dir_bytes: default_max_dir_bytes(),
            max_queue_bytes: default_max_queue_bytes(),
            after: None,
        }
    }
}

fn all_sessions() -> f64 {
    1.0
}

fn default_max_tape_bytes() -> u64 {
    64 << 20
}

fn default_max_queue_bytes() -> u64 {
    64 << 20
}

fn default_max_dir_bytes() -> u64 {
    1 << 30
}

/// Records waiting for the writer; past this, lines are dropped.
const QUEUE_DEPTH: usize = 8192;

/// How often the writer takes what is queued: waking it for every message would cost the
/// message path a wake-up and the proxy a context switch each.
const TICK: Duration = Duration::from_millis(10);

/// Lines, and bytes of them, a tape holds back for its header before it is written without
/// the handshake.
const MAX_BUFFERED: usize = 32;
const MAX_BUFFERED_BYTES: usize = 256 << 10;

enum Record {
    Open {
        tape: u64,
        header: Box<TapeHeader>,
        alive: Weak<()>,
    },
    Handshake {
        tape: u64,
        protocol_version: String,
        client_info: Option<serde_json::Value>,
        server_info: Option<serde_json::Value>,
    },
    Entry {
        tape: u64,
        entry: Box<TapeEntry>,
    },
    Flush(std::sync::mpsc::Sender<()>),
}

/// What the recorder has done, for metrics.
#[derive(Debug, Default)]
pub struct RecorderStats {
    pub tapes: AtomicU64,
    pub lines: AtomicU64,
    pub dropped: AtomicU64,
    /// Bytes of messages queued for the writer now (bounded by `max_queue_bytes`).
    queued_bytes: AtomicU64,
}

pub struct TapeRecorder {
    records: flume::Sender<Record>,
    fraction: f64,
    plugins: ArcSwap<Vec<TapePlugin>>,
    stats: Arc<RecorderStats>,
    max_queue_bytes: u64,
    next_tape: AtomicU64,
}

/// A recorded session's handle on its tape; the tape closes when it is dropped.
pub struct SessionTape {
    tape: u64,
    opened: Instant,
    records: flume::Sender<Record>,
    stats: Arc<RecorderStats>,
    max_queue_bytes: u64,
    _alive: Arc<()>,
}

impl TapeRecorder {
    /// Creates the tape directory and starts the writer thread.
    pub fn start(section: &RecordConfig) -> std::io::Result<Self> {
        std::fs::create_dir_all(&section.dir)?;
        let (records, queue) = flume::bounded(QUEUE_DEPTH);
        let stats = Arc::new(RecorderStats::default());
        let mut writer = Writer {
            dir: section.dir.clone(),
            max_tape_bytes: section.max_tape_bytes,
            max_dir_bytes: section.max_dir_bytes,
            dir_bytes: tapes_in(&section.dir).iter().map(|(_, _, len)| len).sum(),
            open: HashMap::new(),
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name("membrane-tapes".into())
            .spawn(move || writer.run(queue))?;
        Ok(Self {
            records,
            fraction: section.sessions.clamp(0.0, 1.0),
            plugins: ArcSwap::default(),
            stats,
            max_queue_bytes: section.max_queue_bytes,
            next_tape: AtomicU64::new(1),
        })
    }

    /// The chain's plugins, named in the headers of tapes opened from now on.
    pub fn set_plugins(&self, plugins: Vec<TapePlugin>) {
        self.plugins.store(Arc::new(plugins));
    }

    /// A tape for `session`, if it falls in the recorded fraction (by a hash of its id).
    pub fn open(&self, session: &Session) -> Option<SessionTape> {
        let mut hasher = std::hash::DefaultHasher::new();
        ("record", session.id.as_str()).hash(&mut hasher);
        if hasher.finish() as f64 >= self.fraction * u64::MAX as f64 {
            return None;
        }
        let tape = self.next_tape.fetch_add(1, Ordering::Relaxed);
        let alive = Arc::new(());
        let header = TapeHeader {
            tape: FORMAT.into(),
            membrane: env!("CARGO_PKG_VERSION").into(),
            recorded_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            session: session.id.redacted().to_string(),
            client_transport: session.client_transport,
            upstream_transport: session.upstream_transport,
            protocol_version: session.protocol_version.clone(),
            client_info: parsed(&session.client_info),
            server_info: parsed(&session.server_info),
            plugins: self.plugins.load().to_vec(),
        };
        let open = Record::Open {
            tape,
            header: Box::new(header),
            alive: Arc::downgrade(&alive),
        };
        if self.records.try_send(open).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("the tape writer is behind: session not recorded");
            return None;
        }
        Some(SessionTape {
            tape,
            opened: Instant::now(),
            records: self.records.clone(),
            stats: self.stats.clone(),
            max_queue_bytes: self.max_queue_bytes,
            _alive: alive,
        })
    }

    pub fn stats(&self) -> &RecorderStats {
        &self.stats
    }

    /// Waits (at most `within`) for every line queued so far to be written out.
    pub fn flush(&self, within: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if self
            .records
            .send_timeout(Record::Flush(done), within)
            .is_ok()
        {
            let _ = wait.recv_timeout(within);
        }
    }
}

impl SessionTape {
    /// Seconds since the session opened.
    pub fn elapsed(&self) -> f64 {
        self.opened.elapsed().as_secs_f64()
    }

    /// Queues an entry; drops it (counted) if the writer is behind.
    pub fn record(&self, entry: TapeEntry) {
        let size = entry_size(&entry);
        let queued = &self.stats.queued_bytes;
        if queued.fetch_add(size, Ordering::Relaxed) + size > self.max_queue_bytes {
            queued.fetch_sub(size, Ordering::Relaxed);
            return self.dropped();
        }
        let entry = Record::Entry {
            tape: self.tape,
            entry: Box::new(entry),
        };
        if self.records.try_send(entry).is_err() {
            queued.fetch_sub(size, Ordering::Relaxed);
            self.dropped();
        }
    }

    /// What the handshake settled, for the tape's header.
    pub fn handshake(
        &self,
        protocol_version: &str,
        client_info: Option<serde_json::Value>,
        server_info: Option<serde_json::Value>,
    ) {
        self.send(Record::Handshake {
            tape: self.tape,
            protocol_version: protocol_version.to_owned(),
            client_info,
            server_info,
        });
    }

    fn send(&self, record: Record) {
        if self.records.try_send(record).is_err() {
            self.dropped();
        }
    }

    fn dropped(&self) {
        let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(dropped, "the tape writer is behind: tape lines dropped");
        }
    }
}

/// The bytes of messages an entry holds.
fn entry_size(entry: &TapeEntry) -> u64 {
    [&entry.message, &entry.delivered, &entry.answer]
        .into_iter()
        .flatten()
        .map(|m| m.raw().len() as u64)
        .sum()
}

struct OpenTape {
    path: PathBuf,
    file: BufWriter<File>,
    bytes: u64,
    /// The header, while it waits for the handshake, and the lines held back behind it.
    waiting: Option<(Box<TapeHeader>, Vec<String>)>,
    alive: Weak<()>,
    /// Whether the tape's loss of lines was logged.
    lossy: bool,
}

struct Writer {
    dir: PathBuf,
    max_tape_bytes: u64,
    max_dir_bytes: u64,
    dir_bytes: u64,
    open: HashMap<u64, OpenTape>,
    stats: Arc<RecorderStats>,
}

impl Writer {
    fn run(&mut self, queue: flume::Receiver<Record>) {
        loop {
            std::thread::sleep(TICK);
            // Seen before draining, so that nothing sent before the last sender left is missed.
            let senders_gone = queue.is_disconnected();
            for record in queue.drain() {
                self.handle(record);
            }
            self.flush();
            self.close_ended();
            if senders_gone {
                for tape in self.open.keys().copied().collect::<Vec<_>>() {
                    self.close(tape);
                }
                return;
            }
        }
    }

    fn handle(&mut self, record: Record) {
        match record {
            Record::Open {
                tape,
                header,
                alive,
            } => self.open(tape, header, alive),
            Record::Handshake {
                tape,
                protocol_version,
                client_info,
                server_info,
            } => {
                if let Some((header, _)) = self.open.get_mut(&tape).and_then(|t| t.waiting.as_mut())
                {
                    header.protocol_version = Some(protocol_version);
                    header.client_info = client_info;
                    header.server_info = server_info;
                }
                self.release_header(tape);
            }
            Record::Entry { tape, entry } => {
                let line = entry_line(&entry);
                let size = entry_size(&entry);
                self.stats.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                drop(entry);
                match self.open.get_mut(&tape).map(|t| &mut t.waiting) {
                    Some(Some((_, held))) => {
                        held.push(line);
                        let held_bytes: usize = held.iter().map(String::len).sum();
                        if held.len() >= MAX_BUFFERED || held_bytes >= MAX_BUFFERED_BYTES {
                            self.release_header(tape);
                        }
                    }
                    Some(None) => self.write(tape, &line),
                    None => {}
                }
            }
            Record::Flush(done) => {
                self.close_ended();
                self.flush();
                let _ = done.send(());
            }
        }
    }

    fn open(&mut self, tape: u64, header: Box<TapeHeader>, alive: Weak<()>) {
        let stamp = header.recorded_at.replace(':', "-");
        let stamp = stamp.split('.').next().unwrap_or_default();
        let base = format!("{stamp}Z-{}", header.session.trim_end_matches('…'));
        let created = (1..100).find_map(|n| {
            let name = match n {
                1 => format!("{base}.jsonl"),
                n => format!("{base}-{n}.jsonl"),
            };
            let path = self.dir.join(name);
            let file = File::options().write(true).create_new(true).open(&path);
            file.ok().map(|file| (path, file))
        });
        let Some((path, file)) = created else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(dir = %self.dir.display(), "cannot create a tape");
            return;
        };
        self.stats.tapes.fetch_add(1, Ordering::Relaxed);
        self.open.insert(
            tape,
            OpenTape {
                path,
                file: BufWriter::new(file),
                bytes: 0,
                waiting: Some((header, Vec::new())),
                alive,
                lossy: false,
            },
        );
    }

    /// Writes the header of `tape` and the lines it held back.
    fn release_header(&mut self, tape: u64) {
        let Some((header, held)) = self.open.get_mut(&tape).and_then(|t| t.waiting.take()) else {
            return;
        };
        let mut line = serde_json::to_string(&header).expect("a tape header serializes");
        line.push('\n');
        self.write(tape, &line);
        for line in held {
            self.write(tape, &line);
        }
    }

    /// Appends a line to a tape, within the tape's and the directory's caps.
    fn write(&mut self, tape: u64, line: &str) {
        let len = line.len() as u64;
        if self.dir_bytes + len > self.max_dir_bytes {
            self.make_room(len);
        }
        let fits_dir = self.dir_bytes + len <= self.max_dir_bytes;
        let Some(open) = self.open.get_mut(&tape) else {
            return;
        };
        let outcome = if open.bytes + len > self.max_tape_bytes {
            Err(format!(
                "the tape reached max_tape_bytes ({})",
                self.max_tape_bytes
            ))
        } else if !fits_dir {
            Err(format!(
                "the tape directory reached max_dir_bytes ({})",
                self.max_dir_bytes
            ))
        } else {
            open.file
                .write_all(line.as_bytes())
                .map_err(|e| format!("cannot write: {e}"))
        };
        match outcome {
            Ok(()) => {
                open.bytes += len;
                self.dir_bytes += len;
                self.stats.lines.fetch_add(1, Ordering::Relaxed);
            }
            Err(reason) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                if !open.lossy {
                    open.lossy = true;
                    tracing::warn!(tape = %open.path.display(), "tape lines dropped from now on: {reason}");
                }
            }
        }
    }

    /// Removes the oldest closed tapes until `len` more bytes fit in the directory.
    fn make_room(&mut self, len: u64) {
        let open: Vec<&Path> = self.open.values().map(|t| t.path.as_path()).collect();
        let mut closed: Vec<_> = tapes_in(&self.dir)
            .into_iter()
            .filter(|(path, ..)| !open.contains(&path.as_path()))
            .collect();
        closed.sort_by_key(|(_, modified, _)| *modified);
        for (path, _, size) in closed {
            if self.dir_bytes + len <= self.max_dir_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                self.dir_bytes = self.dir_bytes.saturating_sub(size);
                tracing::info!(tape = %path.display(), "removed the oldest tape to stay under max_dir_bytes");
            }
        }
    }

    fn flush(&mut self) {
        for open in self.open.values_mut() {
            if let Err(e) = open.file.flush()
                && !open.lossy
            {
                open.lossy = true;
                tracing::warn!(tape = %open.path.display(), "cannot write the tape: {e}");
            }
        }
    }

    /// Closes the tapes of sessions that ended.
    fn close_ended(&mut self) {
        let ended: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, t)| t.alive.strong_count() == 0)
            .map(|(tape, _)| *tape)
            .collect();
        for tape in ended {
            self.close(tape);
        }
    }

    fn close(&mut self, tape: u64) {
        self.release_header(tape);
        if let Some(mut open) = self.open.remove(&tape) {
            let _ = open.file.flush();
        }
    }
}

/// The tapes in `dir`: path, last change and size.
fn tapes_in(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|ext| ext == "jsonl"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// A peer's info as a record keeps it (its JSON text), parsed for a tape's header.
fn parsed(info: &Option<Box<serde_json::value::RawValue>>) -> Option<serde_json::Value> {
    serde_json::from_str(info.as_deref()?.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionId;
    use crate::transport::TransportType;

    fn recorder(dir: &Path, sessions: f64) -> TapeRecorder {
        let mut section = RecordConfig::into_dir(dir.to_owned());
        section.sessions = sessions;
        TapeRecorder::start(&section).unwrap()
    }

    fn session() -> Session {
        let stdio = TransportType::Stdio;
        Session::new(SessionId::generate(), stdio, stdio)
    }

    #[test]
    fn records_its_fraction_of_sessions_each_on_a_tape_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let none = recorder(dir.path(), 0.0);
        assert!((0..100).all(|_| none.open(&session()).is_none()));
        let some = recorder(dir.path(), 0.3);
        let tapes: Vec<SessionTape> = (0..1000).filter_map(|_| some.open(&session())).collect();
        assert!(
            (200..=400).contains(&tapes.len()),
            "{} of 1000",
            tapes.len()
        );
        drop(tapes);
        some.flush(Duration::from_secs(5));
        let written = std::fs::read_dir(dir.path()).unwrap().count() as u64;
        assert_eq!(written, some.stats().tapes.load(Ordering::Relaxed));
        assert_eq!(some.stats().dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_tape_waits_for_the_handshake_to_write_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = recorder(dir.path(), 1.0);
        let tape = recorder.open(&session()).unwrap();
        let entry = TapeEntry {
            t: tape.elapsed(),
            direction: crate::protocol::Direction::ClientToServer,
            message: Some(crate::protocol::Message::new(
                r#"{"jsonrpc":"2.0","id":0,"method":"initialize"}"#,
            )),
            verdicts: Vec::new(),
            delivered: None,
            answer: None,
        };
        tape.record(entry);
        let info = serde_json::json!({"name": "server"});
        tape.handshake("2025-11-25", None, Some(info.clone()));
        drop(tape);
        recorder.flush(Duration::from_secs(5));
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let read = super::super::Tape::read(&path).unwrap();
        assert_eq!(read.header.protocol_version.as_deref(), Some("2025-11-25"));
        assert_eq!(read.header.server_info, Some(info));
        assert_eq!(read.entries.len(), 1);
    }

    #[test]
    fn the_queue_holds_a_bounded_number_of_message_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = recorder(dir.path(), 1.0);
        let tape = recorder.open(&session()).unwrap();
        let big = crate::protocol::Message::new(format!(
            r#"{{"jsonrpc":"2.0","method":"x","params":"{}"}}"#,
            "y".repeat(1 << 20)
        ));
        // Faster than the writer's tick: what is queued past 64 MiB is dropped at once.
        for _ in 0..100 {
            tape.record(TapeEntry {
                t: 0.0,
                direction: crate::protocol::Direction::ServerToClient,
                message: Some(big.clone()),
                verdicts: Vec::new(),
                delivered: None,
                answer: None,
            });
        }
        let stats = recorder.stats();
        let dropped = stats.dropped.load(Ordering::Relaxed);
        assert!((30..=99).contains(&dropped), "{dropped} of 100 dropped");
        drop(tape);
        recorder.flush(Duration::from_secs(10));
        assert_eq!(
            stats.queued_bytes.load(Ordering::Relaxed),
            0,
            "all accounted for"
        );
        let lines = stats.lines.load(Ordering::Relaxed);
        assert_eq!(
            lines - 1 + dropped,
            100,
            "each entry written or dropped (plus the header)"
        );
    }
}
