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

#[derive(Serialize, Deserialize)]
struct EntryLine<'a> {
    t: f64,
    dir: Direction,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    msg: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    verdicts: Vec<LinkVerdict>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    delivered: Option<&'a RawValue>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
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

/// One entry as a line of text (with its `\n`).
pub(super) fn entry_line(entry: &TapeEntry) -> String {
    let raw = |message: &Option<Message>| {
        message.as_ref().and_then(|m| {
            let text = m.as_str();
            let text = if text.contains(['\n', '\r']) {
                text.replace(['\n', '\r'], " ")
            } else {
                text.to_owned()
            };
            RawValue::from_string(text).ok()
        })
    };
    let (msg, delivered, answer) = (
        raw(&entry.message),
        raw(&entry.delivered),
        raw(&entry.answer),
    );
    let line = EntryLine {
        t: (entry.t * 1e6).round() / 1e6,
        dir: entry.direction,
        msg: msg.as_deref(),
        verdicts: entry.verdicts.clone(),
        delivered: delivered.as_deref(),
        answer: answer.as_deref(),
    };
    let mut text = serde_json::to_string(&line).expect("a tape entry serializes");
    text.push('\n');
    text
}
