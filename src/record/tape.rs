//! The tape format: JSON Lines, a [`TapeHeader`] first, then one [`TapeEntry`] per message in
//! either direction, in the order membrane handled them. Messages are kept as the JSON text
//! they arrived in (line breaks between tokens become spaces), so a tape replays byte for
//! byte what was seen.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::interceptor::LinkVerdict;
use crate::protocol::{Direction, Message, MessageKind};
use crate::transport::TransportType;

/// The format a tape's header names.
pub const FORMAT: &str = "membrane-tape/1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TapeHeader {
    /// [`FORMAT`].
    pub tape: String,
    /// The membrane version that recorded it.
    pub membrane: String,
    /// RFC 3339, when the session opened.
    pub recorded_at: String,
    /// The session's id, cut short: enough to find it in logs, not to take it over.
    pub session: String,
    pub client_transport: TransportType,
    pub upstream_transport: TransportType,
    #[serde(default)]
    pub protocol_version: Option<String>,
    #[serde(default)]
    pub client_info: Option<serde_json::Value>,
    #[serde(default)]
    pub server_info: Option<serde_json::Value>,
    /// The chain's plugins when the session opened, in order.
    #[serde(default)]
    pub plugins: Vec<TapePlugin>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TapePlugin {
    pub name: String,
    /// `sha256:` and the hex digest of the component.
    pub hash: String,
}

/// One message and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TapeEntry {
    /// Seconds since the session opened.
    pub t: f64,
    pub direction: Direction,
    /// The message as it reached the recorder's place in the chain (as it arrived, unless
    /// `[record] after` names a plugin); `None` when the chain stopped it before that place.
    pub message: Option<Message>,
    /// Each interceptor's verdict, in chain order.
    pub verdicts: Vec<LinkVerdict>,
    /// What was delivered onwards, when it differs from `message`.
    pub delivered: Option<Message>,
    /// What membrane answered in the message's place (a blocked or mocked request's answer).
    pub answer: Option<Message>,
}

impl TapeEntry {
    /// The verdict that decided the message's fate: the first enforced one other than
    /// `continue` and `modify`, else `modify` when one modified it, else `continue`.
    pub fn verdict(&self) -> &str {
        decisive(&self.verdicts)
    }

    /// What the other side received: the delivered message, else the recorded one unless
    /// membrane answered in its place.
    pub fn received_by_peer(&self) -> Option<&Message> {
        match (&self.delivered, &self.answer) {
            (Some(delivered), _) => Some(delivered),
            (None, Some(_)) => None,
            (None, None) => self.message.as_ref(),
        }
    }
}

/// The decisive verdict of a chain's verdicts (see [`TapeEntry::verdict`]).
pub fn decisive(verdicts: &[LinkVerdict]) -> &str {
    let enforced = || verdicts.iter().filter(|v| v.enforced);
    if let Some(stop) = enforced().find(|v| v.verdict != "continue" && v.verdict != "modify") {
        return &stop.verdict;
    }
    if enforced().any(|v| v.verdict == "modify") {
        "modify"
    } else {
        "continue"
    }
}

#[derive(Deserialize)]
struct EntryLine<'a> {
    t: f64,
    dir: Direction,
    #[serde(borrow, default)]
    msg: Option<&'a RawValue>,
    #[serde(default)]
    verdicts: Vec<LinkVerdict>,
    #[serde(borrow, default)]
    delivered: Option<&'a RawValue>,
    #[serde(borrow, default)]
    answer: Option<&'a RawValue>,
}

/// A tape read back.
#[derive(Debug, Clone)]
pub struct Tape {
    pub header: TapeHeader,
    pub entries: Vec<TapeEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TapeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Format {
        path: String,
        line: usize,
        reason: String,
    },
}

impl Tape {
    /// Reads a tape; a batch is read as its messages, one entry each.
    pub fn read(path: &Path) -> Result<Self, TapeError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TapeError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let format = |line: usize, reason: String| TapeError::Format {
            path: shown.clone(),
            line: line + 1,
            reason,
        };
        let (_, first) = lines
            .next()
            .ok_or_else(|| format(0, "empty: not a tape".into()))?;
        let header: TapeHeader = serde_json::from_str(first)
            .map_err(|e| format(0, format!("not a tape header: {e}")))?;
        if header.tape != FORMAT {
            return Err(format(0, format!("format {:?}, not {FORMAT}", header.tape)));
        }
        let mut entries = Vec::new();
        for (number, line) in lines {
            let entry: EntryLine =
                serde_json::from_str(line).map_err(|e| format(number, e.to_string()))?;
            let message =
                |raw: Option<&RawValue>| raw.map(|raw| Message::new(raw.get().to_owned()));
            let entry = TapeEntry {
                t: entry.t,
                direction: entry.dir,
                message: message(entry.msg),
                verdicts: entry.verdicts,
                delivered: message(entry.delivered),
                answer: message(entry.answer),
            };
            match entry.message.as_ref().map(Message::validate) {
                Some(Ok(MessageKind::Batch)) => {
                    let batch = entry.message.clone().expect("a batch was read");
                    for element in batch.batch_elements().unwrap_or_default() {
                        entries.push(TapeEntry {
                            message: Some(element),
                            delivered: None,
                            answer: None,
                            ..entry.clone()
                        });
                    }
                }
                _ => entries.push(entry),
            }
        }
        Ok(Self { header, entries })
    }
}

/// One entry as a line of text (with its `\n`). Messages were validated on the way in, so their
/// text goes in as it is, not parsed again.
pub(super) fn entry_line(entry: &TapeEntry) -> String {
    let size = |m: &Option<Message>| m.as_ref().map_or(0, |m| m.as_str().len());
    let mut line = String::with_capacity(
        96 + size(&entry.message) + size(&entry.delivered) + size(&entry.answer),
    );
    let direction = match entry.direction {
        Direction::ClientToServer => "client_to_server",
        Direction::ServerToClient => "server_to_client",
    };
    let t = (entry.t * 1e6).round() / 1e6;
    line.push_str(&format!("{{\"t\":{t},\"dir\":\"{direction}\""));
    let mut raw = |name: &str, message: &Option<Message>| {
        if let Some(message) = message {
            line.push_str(&format!(",\"{name}\":"));
            // Line breaks can only be whitespace between tokens here: they become spaces.
            line.extend(message.as_str().chars().map(|c| match c {
                '\n' | '\r' => ' ',
                c => c,
            }));
        }
    };
    raw("msg", &entry.message);
    raw("delivered", &entry.delivered);
    raw("answer", &entry.answer);
    if !entry.verdicts.is_empty() {
        let verdicts = serde_json::to_string(&entry.verdicts).expect("verdicts serialize");
        line.push_str(&format!(",\"verdicts\":{verdicts}"));
    }
    line.push_str("}\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(by: &str, verdict: &str, enforced: bool) -> LinkVerdict {
        LinkVerdict {
            by: by.into(),
            verdict: verdict.into(),
            reason: None,
            error: None,
            enforced,
        }
    }

    #[test]
    fn entries_read_back_as_written() {
        let header = TapeHeader {
            tape: FORMAT.into(),
            membrane: "0".into(),
            recorded_at: "2026-12-01T00:00:00.000Z".into(),
            session: "abcd".into(),
            client_transport: TransportType::Stdio,
            upstream_transport: TransportType::StreamableHttp,
            protocol_version: Some("2025-06-18".into()),
            client_info: None,
            server_info: None,
            plugins: vec![],
        };
        let pretty = "{\n  \"jsonrpc\": \"2.0\",\r\n  \"id\": 1, \"method\": \"tools/call\"}";
        let modified = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#;
        let entry = TapeEntry {
            t: 0.0000015,
            direction: Direction::ClientToServer,
            message: Some(Message::new(pretty)),
            verdicts: vec![verdict("a", "modify", true), verdict("b", "block", false)],
            delivered: Some(Message::new(modified)),
            answer: None,
        };
        let batch = TapeEntry {
            t: 1.5,
            direction: Direction::ServerToClient,
            message: Some(Message::new(
                r#"[{"jsonrpc":"2.0","method":"a"},{"jsonrpc":"2.0","method":"b"}]"#,
            )),
            verdicts: vec![],
            delivered: None,
            answer: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let text = format!(
            "{}\n{}{}",
            serde_json::to_string(&header).unwrap(),
            entry_line(&entry),
            entry_line(&batch)
        );
        assert_eq!(text.lines().count(), 3, "one line each: {text}");
        std::fs::write(&path, text).unwrap();
        let tape = Tape::read(&path).unwrap();
        assert_eq!(tape.header, header);
        assert_eq!(tape.entries.len(), 3, "the batch is read as its messages");
        let read = &tape.entries[0];
        assert_eq!(read.message.as_ref().unwrap().method(), Some("tools/call"));
        assert_eq!(read.delivered.as_ref().unwrap().as_str(), modified);
        assert_eq!(read.verdicts, entry.verdicts);
        assert_eq!(read.t, 0.000002, "microseconds");
        assert_eq!(
            read.verdict(),
            "modify",
            "an unenforced block decides nothing"
        );
        assert_eq!(
            tape.entries[2].message.as_ref().unwrap().method(),
            Some("b")
        );
    }

    #[test]
    fn the_decisive_verdict_is_the_first_that_stops_the_message() {
        assert_eq!(decisive(&[]), "continue");
        let verdicts = [verdict("a", "modify", true), verdict("b", "pause", true)];
        assert_eq!(decisive(&verdicts), "pause");
        assert_eq!(decisive(&[verdict("a", "block", false)]), "continue");
    }

    #[test]
    fn what_is_not_a_tape_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        std::fs::write(&path, "{\"tape\":\"other/9\"}\n").unwrap();
        let error = Tape::read(&path).unwrap_err().to_string();
        assert!(error.contains(":1: "), "{error}");
        std::fs::write(&path, format!("{{\"tape\":\"{FORMAT}\",\"membrane\":\"0\",\"recorded_at\":\"\",\"session\":\"\",\"client_transport\":\"stdio\",\"upstream_transport\":\"stdio\"}}\n{{\"t\":1}}\n")).unwrap();
        let error = Tape::read(&path).unwrap_err().to_string();
        assert!(error.contains(":2: missing field"), "{error}");
    }
}
