//! Driving a real server with a tape's client side: every message the recorded server
//! received is sent again in order, each request waiting for its answer, and each answer is
//! compared with the recorded one (ids and `_meta` aside). Requests the server makes of the
//! client are answered as the recorded client answered the same method, else with an error.
//! What answers differently is reported; nothing else is judged.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::tape::Tape;
use super::with_id;
use crate::protocol::{Direction, ErrorCode, Message, MessageKind, error_response, id_key};
use crate::transport::{Connection, Frame, Listening, OutgoingTransport, TransportError};

/// A request the server answered otherwise than on the tape.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The request's position among the tape's entries, from 1.
    pub entry: usize,
    pub method: String,
    pub params: Value,
    pub recorded: Value,
    /// The answer now; `null` when none came in time.
    pub now: Value,
}

#[derive(Debug, Default, Serialize)]
pub struct AgainstReport {
    pub requests: usize,
    pub same: usize,
    pub differences: Vec<Difference>,
}

/// Replays the client side of `tape` against `upstream`, waiting at most `wait` per answer.
pub async fn drive(
    tape: &Tape,
    upstream: &dyn OutgoingTransport,
    wait: Duration,
) -> Result<AgainstReport, TransportError> {
    let mut connection = upstream.connect(&Listening::always()).await?;
    let recorded = recorded_answers(tape);
    let client_answers = client_answers(tape);
    let mut report = AgainstReport::default();
    for (index, entry) in tape.entries.iter().enumerate() {
        if entry.direction != Direction::ClientToServer {
            continue;
        }
        let Some(sent) = entry.received_by_peer() else {
            continue;
        };
        match sent.kind() {
            Some(MessageKind::Notification) => {
                connection.outbox.send(sent.clone()).await;
            }
            Some(MessageKind::Request) => {
                let id = sent.id().unwrap_or("null").to_owned();
                connection.outbox.send(sent.clone()).await;
                let now = await_answer(&mut connection, &id, &client_answers, wait).await;
                let Some(before) = recorded.get(id_key(&id).as_ref()) else {
                    continue;
                };
                report.requests += 1;
                let now = now.map(|m| comparable(&m)).unwrap_or(Value::Null);
                if now == comparable(before) {
                    report.same += 1;
                } else {
                    let value = sent.to_value().unwrap_or_default();
                    report.differences.push(Difference {
                        entry: index + 1,
                        method: sent.method().unwrap_or_default().to_owned(),
                        params: value["params"].clone(),
                        recorded: comparable(before),
                        now,
                    });
                }
            }
            _ => {}
        }
    }
    let _ = connection.closer.close(Duration::from_secs(3)).await;
    Ok(report)
}

/// The server's recorded answer to each client request, by request id.
fn recorded_answers(tape: &Tape) -> HashMap<String, Message> {
    tape.entries
        .iter()
        .filter(|e| e.direction == Direction::ServerToClient)
        .filter_map(|e| e.message.as_ref())
        .filter(|m| matches!(m.kind(), Some(MessageKind::Response | MessageKind::Error)))
        .filter_map(|m| Some((id_key(m.id()?).into_owned(), m.clone())))
        .collect()
}

/// How the recorded client answered the server's requests, by the requests' method.
fn client_answers(tape: &Tape) -> HashMap<String, Value> {
    let mut methods = HashMap::new();
    let mut answers = HashMap::new();
    for entry in &tape.entries {
        let Some(message) = &entry.message else {
            continue;
        };
        match (entry.direction, message.kind()) {
            (Direction::ServerToClient, Some(MessageKind::Request)) => {
                if let (Some(id), Some(method)) = (message.id(), message.method()) {
                    methods.insert(id_key(id).into_owned(), method.to_owned());
                }
            }
            (Direction::ClientToServer, Some(MessageKind::Response | MessageKind::Error)) => {
                let method = message.id().and_then(|id| methods.get(id_key(id).as_ref()));
                if let (Some(method), Ok(value)) = (method, message.to_value()) {
                    answers.entry(method.clone()).or_insert(value);
                }
            }
            _ => {}
        }
    }
    answers
}

/// Reads from the server until the answer to `id` arrives (answering its own requests on the
/// way), or `wait` runs out.
async fn await_answer(
    connection: &mut Connection,
    id: &str,
    client_answers: &HashMap<String, Value>,
    wait: Duration,
) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let frame = tokio::time::timeout_at(deadline, connection.inbound.next())
            .await
            .ok()??;
        let Frame::Message(message) = frame else {
            continue;
        };
        match message.kind() {
            Some(MessageKind::Response | MessageKind::Error)
                if message.id().map(id_key) == Some(id_key(id)) =>
            {
                return Some(message);
            }
            Some(MessageKind::Request) => {
                let asked = message.id().unwrap_or("null");
                let method = message.method().unwrap_or_default();
                let answer = match client_answers.get(method) {
                    Some(recorded) => with_id(recorded, asked),
                    None => error_response(
                        Some(asked),
                        ErrorCode::MethodNotFound,
                        &format!("the tape's client never answered {method}"),
                    ),
                };
                connection.outbox.send(answer).await;
            }
            _ => {}
        }
    }
}

/// An answer as compared: its `result` or `error`, `_meta` removed throughout.
fn comparable(answer: &Message) -> Value {
    let value = answer.to_value().unwrap_or_default();
    let mut body = match value.get("result") {
        Some(result) => serde_json::json!({ "result": result }),
        None => serde_json::json!({ "error": value.get("error") }),
    };
    strip_meta(&mut body);
    body
}

fn strip_meta(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.remove("_meta");
            object.values_mut().for_each(strip_meta);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_meta),
        _ => {}
    }
}

impl std::fmt::Display for AgainstReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.differences {
            writeln!(f, "#{} {} {}", d.entry, d.method, d.params)?;
            writeln!(f, "  recorded: {}", d.recorded)?;
            writeln!(f, "  now:      {}", d.now)?;
        }
        writeln!(
            f,
            "{} requests: {} answered as recorded, {} differently",
            self.requests,
            self.same,
            self.differences.len()
        )
    }
}
