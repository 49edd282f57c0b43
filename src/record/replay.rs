//! [`TapeServer`]: a tape served back as the MCP server it recorded, an upstream transport like
//! a child process or an HTTP server, so every client side and the whole pipeline work in
//! front of it. Each request is answered with the recorded answer of the request it matches
//! (see [`Matching`]; the handshake — `initialize`, `server/discover` — and `ping` match by
//! method alone, so a tape recorded with one SDK replays to another), under the client's own
//! id. What the server sent on its own (notifications, its requests to the client) is sent
//! again at the point it was recorded: after the client message it followed, before or after
//! the answer as it was. A request the tape cannot answer gets a JSON-RPC error saying so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::tape::Tape;
use super::with_id;
use crate::protocol::{
    Direction, ErrorCode, INITIALIZE, Message, MessageKind, error_response, id_key,
};
use crate::transport::{
    Closed, Connection, ConnectionCloser, Frame, Inbound, Listening, Outbox, OutgoingTransport,
    TransportError, TransportType, receiver_stream,
};

/// How closely a request must match a recorded one to get its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Matching {
    /// Method and params, `_meta` included.
    Exact,
    /// Method and params, `_meta` aside (progress tokens, trace context, SDK stamps).
    #[default]
    Params,
    /// Method alone: the recorded answers of a method, in recorded order.
    Method,
}

/// Methods answered from the tape whatever their params.
const BY_METHOD: [&str; 3] = [INITIALIZE, "server/discover", "ping"];

/// A recorded request and what the server did about it.
#[derive(Debug, Default)]
struct Exchange {
    method: String,
    /// Params as matched ([`Matching`]).
    params: Value,
    answer: Option<Value>,
    /// What the server sent on its own before and after its answer, until the client's next.
    before: Vec<Message>,
    after: Vec<Message>,
}

/// A tape, arranged for answering.
#[derive(Debug, Default)]
struct Script {
    /// What the server sent before the client said anything.
    opening: Vec<Message>,
    exchanges: Vec<Exchange>,
    /// What the server sent after a client notification, by its method.
    reactions: Vec<(String, Vec<Message>)>,
}

enum Anchor {
    Start,
    Request(usize),
    Notification(usize),
}

impl Script {
    fn of(tape: &Tape, matching: Matching) -> Self {
        let mut script = Script::default();
        let mut awaiting: HashMap<String, usize> = HashMap::new();
        let mut anchor = Anchor::Start;
        for entry in &tape.entries {
            let Some(message) = &entry.message else {
                continue;
            };
            let Ok(value) = message.to_value() else {
                continue;
            };
            match (entry.direction, message.kind()) {
                (Direction::ClientToServer, Some(MessageKind::Request)) => {
                    let method = message.method().unwrap_or_default().to_owned();
                    if let Some(id) = message.id() {
                        awaiting.insert(id_key(id).into_owned(), script.exchanges.len());
                    }
                    let answer = entry.answer.as_ref().and_then(|a| a.to_value().ok());
                    anchor = Anchor::Request(script.exchanges.len());
                    script.exchanges.push(Exchange {
                        params: matched_params(&method, &value["params"], matching),
                        method,
                        answer,
                        ..Exchange::default()
                    });
                }
                (Direction::ClientToServer, Some(MessageKind::Notification)) => {
                    let method = message.method().unwrap_or_default().to_owned();
                    anchor = Anchor::Notification(script.reactions.len());
                    script.reactions.push((method, Vec::new()));
                }
                (Direction::ServerToClient, Some(MessageKind::Response | MessageKind::Error)) => {
                    let asked = message
                        .id()
                        .and_then(|id| awaiting.remove(id_key(id).as_ref()));
                    if let Some(exchange) = asked.map(|i| &mut script.exchanges[i]) {
                        exchange.answer.get_or_insert(value);
                    }
                }
                (Direction::ServerToClient, Some(_)) => {
                    let sent = message.clone();
                    match anchor {
                        Anchor::Start => script.opening.push(sent),
                        Anchor::Request(i) => {
                            let exchange = &mut script.exchanges[i];
                            match exchange.answer {
                                None => exchange.before.push(sent),
                                Some(_) => exchange.after.push(sent),
                            }
                        }
                        Anchor::Notification(i) => script.reactions[i].1.push(sent),
                    }
                }
                // The client's answers to the server's requests are the client's to give.
                _ => {}
            }
        }
        script
    }
}

/// The params a request is matched by.
fn matched_params(method: &str, params: &Value, matching: Matching) -> Value {
    if matching == Matching::Method || BY_METHOD.contains(&method) {
        return Value::Null;
    }
    let mut params = params.clone();
    if matching == Matching::Params
        && let Some(object) = params.as_object_mut()
    {
        object.remove("_meta");
    }
    params
}

/// Serves a tape as an MCP server, one replay per connection.
#[derive(Debug, Clone)]
pub struct TapeServer {
    script: Arc<Script>,
    matching: Matching,
}

impl TapeServer {
    pub fn new(tape: &Tape, matching: Matching) -> Self {
        Self {
            script: Arc::new(Script::of(tape, matching)),
            matching,
        }
    }
}

#[async_trait]
impl OutgoingTransport for TapeServer {
    /// A tape is replayed like a child process: its sessions cannot be resumed.
    fn transport_type(&self) -> TransportType {
        TransportType::Stdio
    }

    async fn connect(&self, _: &Listening) -> Result<Connection, TransportError> {
        let (outbox, requests) = Outbox::channel();
        let (frames, inbound) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let replay = Replay {
            script: self.script.clone(),
            matching: self.matching,
            used: vec![false; self.script.exchanges.len()],
            frames,
        };
        let task = tokio::spawn(replay.run(requests, stop.clone()));
        Ok(Connection::new(
            TransportType::Stdio,
            Inbound::stream(receiver_stream(inbound)),
            outbox,
            Box::new(ReplayCloser { stop, task }),
        ))
    }
}

/// One client's replay of the tape.
struct Replay {
    script: Arc<Script>,
    matching: Matching,
    /// Which exchanges were answered already.
    used: Vec<bool>,
    frames: mpsc::Sender<Frame>,
}

impl Replay {
    async fn run(mut self, requests: flume::Receiver<Message>, stop: CancellationToken) {
        let script = self.script.clone();
        self.send_all(&script.opening).await;
        loop {
            let message = tokio::select! {
                message = requests.recv_async() => message,
                _ = stop.cancelled() => break,
            };
            let Ok(message) = message else { break };
            match message.validate() {
                Ok(MessageKind::Request) => self.answer(&message).await,
                Ok(MessageKind::Notification) => {
                    let method = message.method().unwrap_or_default();
                    let reaction = script.reactions.iter().find(|(m, _)| m == method);
                    if let Some((_, sent)) = reaction {
                        self.send_all(sent).await;
                    }
                }
                Ok(MessageKind::Batch) => {
                    for element in message.batch_elements().unwrap_or_default() {
                        if element.kind() == Some(MessageKind::Request) {
                            self.answer(&element).await;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Answers a request from the tape: the first unanswered exchange it matches, else the last
    /// one it matches (a client may ask again), else an error.
    async fn answer(&mut self, request: &Message) {
        let script = self.script.clone();
        let method = request.method().unwrap_or_default();
        let id = request.id().unwrap_or("null");
        let params = request
            .to_value()
            .map(|v| matched_params(method, &v["params"], self.matching))
            .unwrap_or_default();
        let matches = |e: &&Exchange| e.method == method && e.params == params;
        let found = script
            .exchanges
            .iter()
            .enumerate()
            .find(|(i, e)| !self.used[*i] && matches(e))
            .or_else(|| {
                script
                    .exchanges
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, e)| matches(e))
            });
        let Some((index, exchange)) = found else {
            let (code, what) = if script.exchanges.iter().any(|e| e.method == method) {
                (ErrorCode::InvalidParams, "never with these params")
            } else {
                (ErrorCode::MethodNotFound, "never")
            };
            let reason = format!("the tape has no answer for this request: it saw {method} {what}");
            tracing::info!(method, "{reason}");
            self.send(error_response(Some(id), code, &reason)).await;
            return;
        };
        self.used[index] = true;
        self.send_all(&exchange.before).await;
        if let Some(answer) = &exchange.answer {
            self.send(with_id(answer, id)).await;
        }
        self.send_all(&exchange.after).await;
    }

    async fn send_all(&self, messages: &[Message]) {
        for message in messages {
            self.send(message.clone()).await;
        }
    }

    async fn send(&self, message: Message) {
        let _ = self.frames.send(Frame::Message(message)).await;
    }
}

struct ReplayCloser {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl ConnectionCloser for ReplayCloser {
    async fn close(self: Box<Self>, grace: Duration) -> Closed {
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, self.task).await;
        Closed {
            exit_code: None,
            description: "tape replayed".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::TapeEntry;
    use crate::record::tape::{FORMAT, TapeHeader};

    fn entry(direction: Direction, json: &str) -> TapeEntry {
        TapeEntry {
            t: 0.0,
            direction,
            message: Some(Message::new(json.to_owned())),
            verdicts: Vec::new(),
            delivered: None,
            answer: None,
        }
    }

    fn tape(entries: Vec<TapeEntry>) -> Tape {
        Tape {
            header: TapeHeader {
                tape: FORMAT.into(),
                membrane: "0".into(),
                recorded_at: String::new(),
                session: String::new(),
                client_transport: TransportType::Stdio,
                upstream_transport: TransportType::Stdio,
                protocol_version: None,
                client_info: None,
                server_info: None,
                plugins: Vec::new(),
            },
            entries,
        }
    }

    async fn next(connection: &mut Connection) -> serde_json::Value {
        let frame = tokio::time::timeout(Duration::from_secs(5), connection.inbound.next());
        match frame.await.unwrap().unwrap() {
            Frame::Message(message) => message.to_value().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn answers_under_the_clients_id_with_the_servers_own_messages_where_they_were() {
        use Direction::{ClientToServer as C, ServerToClient as S};
        let tape = tape(vec![
            entry(
                S,
                r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"n":0}}"#,
            ),
            entry(
                C,
                r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":1}}}"#,
            ),
            entry(
                S,
                r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"n":1}}"#,
            ),
            entry(S, r#"{"jsonrpc":"2.0","id":"s1","method":"roots/list"}"#),
            entry(C, r#"{"jsonrpc":"2.0","id":"s1","result":{"roots":[]}}"#),
            entry(S, r#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#),
            entry(
                S,
                r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"n":2}}"#,
            ),
            entry(
                C,
                r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            ),
            entry(
                S,
                r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"n":3}}"#,
            ),
        ]);
        let server = TapeServer::new(&tape, Matching::Params);
        let mut connection = server.connect(&Listening::always()).await.unwrap();
        assert_eq!(
            next(&mut connection).await["params"]["n"],
            0,
            "sent before anything"
        );

        let call = r#"{"jsonrpc":"2.0","id":"mine","method":"tools/call","params":{"name":"x","_meta":{"progressToken":"other"}}}"#;
        connection.outbox.send(Message::new(call)).await;
        assert_eq!(next(&mut connection).await["params"]["n"], 1);
        assert_eq!(next(&mut connection).await["method"], "roots/list");
        let answer = next(&mut connection).await;
        assert_eq!(
            (&answer["id"], &answer["result"]),
            (&json!("mine"), &json!({"content": []}))
        );
        assert_eq!(
            next(&mut connection).await["params"]["n"],
            2,
            "after the answer"
        );

        let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        connection.outbox.send(Message::new(initialized)).await;
        assert_eq!(
            next(&mut connection).await["params"]["n"],
            3,
            "after the notification"
        );

        let other = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"y"}}"#;
        connection.outbox.send(Message::new(other)).await;
        assert_eq!(next(&mut connection).await["error"]["code"], -32602);

        let exact = TapeServer::new(&tape, Matching::Exact);
        let mut connection = exact.connect(&Listening::always()).await.unwrap();
        next(&mut connection).await;
        connection.outbox.send(Message::new(call)).await;
        assert_eq!(
            next(&mut connection).await["error"]["code"],
            -32602,
            "_meta differs"
        );
    }
}
