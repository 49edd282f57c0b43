//! `rules`: a membrane interceptor that applies a declarative list of rules, for mocking
//! servers, holding calls and testing. The first rule matching a message decides what happens
//! to it (continue, block, mock, modify, pause or delay); no match lets it through. The rules
//! live in [`ruleset`] and [`pointer`]; this file wires them to membrane through the SDK
//! (`membrane-plugin`).
//!
//! Configuration: `{"rules": [rule, ...]}` (no rules: the plugin is never called). A rule:
//!
//! ```toml
//! method = "tools/call"            # required glob; `*` also matches answers of unknown method
//! tool = "echo"                    # optional glob on the called tool: of a request, or with
//!                                  # kind = "response" or "error", of the call answered;
//!                                  # without a kind, requests only
//! direction = "client-to-server"   # optional: or "server-to-client"
//! kind = "request"                 # optional: or "notification", "response", "error"
//! action = "mock"                  # continue | block | mock | modify | pause | delay
//! # block: reason = "..."; mock: result = <any JSON>, requests only;
//! # modify: set = { "/json/pointer" = <value>, ... } (the last key may be new);
//! # pause: timeout_ms = 5000; delay: delay_ms = 250 and then = "continue" (default),
//! # "block", "mock" or "modify" with that verdict's field. Other fields are refused.
//! ```

pub mod pointer;
pub mod ruleset;

use membrane_plugin::host::{self, Level};
use membrane_plugin::{Action, Direction, Filter, Message, MessageKind, Plugin, Verdict};

use crate::ruleset::{Envelope, Ruleset};

/// The rules, as `init` read them.
pub struct Rules(Ruleset);

impl Plugin for Rules {
    fn init(config: &str) -> Result<(Self, Vec<Filter>), String> {
        let rules = Ruleset::from_json(config)?;
        let filters = rules
            .filters()
            .into_iter()
            .map(|filter| Filter {
                methods: filter.methods,
                directions: filter.directions.into_iter().map(direction).collect(),
                kinds: filter.kinds.into_iter().map(kind).collect(),
            })
            .collect();
        Ok((Rules(rules), filters))
    }

    fn intercept(&self, message: &Message) -> Action {
        let method = message.method();
        let envelope = Envelope {
            kind: match message.kind() {
                MessageKind::Request => ruleset::Kind::Request,
                MessageKind::Notification => ruleset::Kind::Notification,
                MessageKind::Response => ruleset::Kind::Response,
                MessageKind::Error => ruleset::Kind::Error,
            },
            direction: match message.direction() {
                Direction::ClientToServer => ruleset::Direction::ClientToServer,
                Direction::ServerToClient => ruleset::Direction::ServerToClient,
            },
            method: method.as_deref(),
            tool: self.0.reads_tools().then(|| message.tool_name()).flatten(),
        };
        let Some((index, action)) = self.0.first_match(&envelope) else {
            return Action::Continue;
        };
        host::log(
            Level::Debug,
            &format!("rules[{index}] matched frame {}", message.frame_id()),
        );
        match action {
            ruleset::Action::Pause(millis) => Action::Pause(*millis),
            ruleset::Action::Delay { millis, then } => Action::Delay {
                millis: *millis,
                then: verdict(then, index, message),
            },
            ruleset::Action::Verdict(then) => match verdict(then, index, message) {
                Verdict::Continue => Action::Continue,
                Verdict::Modify(json) => Action::Modify(json),
                Verdict::Edit(edits) => Action::Edit(edits),
                Verdict::Patch(patch) => Action::Patch(patch),
                Verdict::Block(reason) => Action::Block(reason),
                Verdict::Mock(result) => Action::Mock(result),
            },
        }
    }
}

/// The verdict for this message; a `modify` that cannot be applied lets the message through
/// unchanged rather than half-edited.
fn verdict(verdict: &ruleset::Verdict, index: usize, message: &Message) -> Verdict {
    match verdict {
        ruleset::Verdict::Continue => Verdict::Continue,
        ruleset::Verdict::Block(reason) => Verdict::Block(reason.clone()),
        ruleset::Verdict::Mock(result) => Verdict::Mock(result.clone()),
        ruleset::Verdict::Modify(edits) => match edits.apply(&message.json()) {
            Ok(json) => Verdict::Modify(json),
            Err(e) => {
                let line = format!("rules[{index}]: cannot modify message: {e}");
                host::log(Level::Warn, &line);
                Verdict::Continue
            }
        },
    }
}

fn direction(direction: ruleset::Direction) -> Direction {
    match direction {
        ruleset::Direction::ClientToServer => Direction::ClientToServer,
        ruleset::Direction::ServerToClient => Direction::ServerToClient,
    }
}

fn kind(kind: ruleset::Kind) -> MessageKind {
    match kind {
        ruleset::Kind::Request => MessageKind::Request,
        ruleset::Kind::Notification => MessageKind::Notification,
        ruleset::Kind::Response => MessageKind::Response,
        ruleset::Kind::Error => MessageKind::Error,
    }
}

membrane_plugin::export!(Rules);
