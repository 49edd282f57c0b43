//! `rules`: a membrane interceptor that applies a declarative list of rules, for mocking
//! servers, holding calls and testing. The first rule matching a message decides what happens
//! to it (continue, block, mock, modify, pause or delay); no match lets it through. The rules
//! live in [`ruleset`] and [`pointer`]; this file only wires them to the `interceptor` world,
//! and only on wasm32, so that their tests run natively.
//!
//! Configuration: `{"rules": [rule, ...]}` (no rules: the plugin is never called). A rule:
//!
//! ```toml
//! method = "tools/call"            # required glob; `*` also matches answers of unknown method
//! tool = "echo"                    # optional glob on `params.name`; implies kind = "request"
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

#[cfg(target_arch = "wasm32")]
mod plugin {
    use std::sync::OnceLock;

    use crate::ruleset::{self, Envelope, Ruleset};

    wit_bindgen::generate!({ path: "../../wit", world: "interceptor" });

    use membrane::interceptor::host::{Level, log};
    use membrane::interceptor::types::{Delay, Direction, MessageKind, Verdict};

    /// This instance's rules, set once by `init`.
    static RULES: OnceLock<Ruleset> = OnceLock::new();

    struct Rules;

    impl Guest for Rules {
        fn init(config: String) -> Result<Vec<Filter>, String> {
            let rules = Ruleset::from_json(&config)?;
            let filters = rules
                .filters()
                .into_iter()
                .map(|filter| Filter {
                    methods: filter.methods,
                    directions: filter
                        .directions
                        .into_iter()
                        .map(to_wit_direction)
                        .collect(),
                    kinds: filter.kinds.into_iter().map(to_wit_kind).collect(),
                })
                .collect();
            RULES
                .set(rules)
                .map_err(|_| "rules: init called twice".to_owned())?;
            Ok(filters)
        }

        fn intercept(message: Message) -> Action {
            let Some(rules) = RULES.get() else {
                return Action::Continue;
            };
            let envelope = Envelope {
                kind: from_wit_kind(message.kind),
                direction: from_wit_direction(message.direction),
                method: message.method.as_deref(),
                json: &message.json,
            };
            let Some((index, action)) = rules.first_match(&envelope) else {
                return Action::Continue;
            };
            log(
                Level::Debug,
                &format!("rules[{index}] matched frame {}", message.frame_id),
            );
            match action {
                ruleset::Action::Pause(millis) => Action::Pause(*millis),
                ruleset::Action::Delay { millis, then } => Action::Delay(Delay {
                    millis: *millis,
                    then: verdict(then, index, &message.json),
                }),
                ruleset::Action::Verdict(then) => match verdict(then, index, &message.json) {
                    Verdict::Continue => Action::Continue,
                    Verdict::Modify(json) => Action::Modify(json),
                    Verdict::Block(reason) => Action::Block(reason),
                    Verdict::Mock(result) => Action::Mock(result),
                },
            }
        }
    }

    /// The verdict for this message; a `modify` that cannot be applied lets the message through
    /// unchanged rather than half-edited.
    fn verdict(verdict: &ruleset::Verdict, index: usize, json: &str) -> Verdict {
        match verdict {
            ruleset::Verdict::Continue => Verdict::Continue,
            ruleset::Verdict::Block(reason) => Verdict::Block(reason.clone()),
            ruleset::Verdict::Mock(result) => Verdict::Mock(result.clone()),
            ruleset::Verdict::Modify(edits) => match edits.apply(json) {
                Ok(json) => Verdict::Modify(json),
                Err(e) => {
                    log(
                        Level::Warn,
                        &format!("rules[{index}]: cannot modify message: {e}"),
                    );
                    Verdict::Continue
                }
            },
        }
    }

    fn to_wit_direction(direction: ruleset::Direction) -> Direction {
        match direction {
            ruleset::Direction::ClientToServer => Direction::ClientToServer,
            ruleset::Direction::ServerToClient => Direction::ServerToClient,
        }
    }

    fn from_wit_direction(direction: Direction) -> ruleset::Direction {
        match direction {
            Direction::ClientToServer => ruleset::Direction::ClientToServer,
            Direction::ServerToClient => ruleset::Direction::ServerToClient,
        }
    }

    fn to_wit_kind(kind: ruleset::Kind) -> MessageKind {
        match kind {
            ruleset::Kind::Request => MessageKind::Request,
            ruleset::Kind::Notification => MessageKind::Notification,
            ruleset::Kind::Response => MessageKind::Response,
            ruleset::Kind::Error => MessageKind::Error,
        }
    }

    fn from_wit_kind(kind: MessageKind) -> ruleset::Kind {
        match kind {
            MessageKind::Request => ruleset::Kind::Request,
            MessageKind::Notification => ruleset::Kind::Notification,
            MessageKind::Response => ruleset::Kind::Response,
            MessageKind::Error => ruleset::Kind::Error,
        }
    }

    export!(Rules);
}
