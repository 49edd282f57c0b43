//! The rule list: parsing and validating the configuration, the filters it implies, and
//! finding the first rule that matches a message. Independent of the bindings.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use wildmatch::WildMatch;

use crate::pointer::Edits;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Request,
    Notification,
    Response,
    Error,
}

/// A final decision, prepared at load time.
#[derive(Debug)]
pub enum Verdict {
    Continue,
    Block(String),
    /// The `result` value as JSON text.
    Mock(String),
    Modify(Edits),
}

#[derive(Debug)]
pub enum Action {
    Verdict(Verdict),
    Pause(u64),
    Delay { millis: u64, then: Verdict },
}

/// The parts of a message the rules look at.
pub struct Envelope<'a> {
    pub kind: Kind,
    pub direction: Direction,
    pub method: Option<&'a str>,
    /// The tool a `tools/call` request names (or, for an answer, its request named), when
    /// some rule matches by tool.
    pub tool: Option<String>,
}

/// What one rule wants to see; each empty list means "any".
#[derive(Debug, PartialEq)]
pub struct Filter {
    pub methods: Vec<String>,
    pub directions: Vec<Direction>,
    pub kinds: Vec<Kind>,
}

#[derive(Debug)]
pub struct Rule {
    method: String,
    method_glob: WildMatch,
    tool: Option<WildMatch>,
    direction: Option<Direction>,
    /// `Some(Kind::Request)` whenever the action mocks, or `tool` is set without a kind.
    kind: Option<Kind>,
    action: Action,
}

#[derive(Debug)]
pub struct Ruleset(Vec<Rule>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// A rule as written; the action's fields are checked against the action by hand, since
/// serde cannot combine a flattened tagged enum with `deny_unknown_fields`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    method: String,
    tool: Option<String>,
    direction: Option<Direction>,
    kind: Option<Kind>,
    action: String,
    reason: Option<String>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    set: Option<Map<String, Value>>,
    timeout_ms: Option<u64>,
    delay_ms: Option<u64>,
    then: Option<String>,
}

/// Tells an explicit `"result": null` apart from a missing `result`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl RawRule {
    /// Takes the fields of `verdict` out of the rule; `None` if it names no verdict.
    fn take_verdict(&mut self, verdict: &str) -> Option<Result<Verdict, String>> {
        let missing = |field: &str| format!("\"{verdict}\" needs \"{field}\"");
        Some(match verdict {
            "continue" => Ok(Verdict::Continue),
            "block" => self
                .reason
                .take()
                .map(Verdict::Block)
                .ok_or_else(|| missing("reason")),
            "mock" => match self.result.take() {
                Some(result) => Ok(Verdict::Mock(result.to_string())),
                None => Err(missing("result")),
            },
            "modify" => match self.set.take() {
                Some(set) => Edits::parse(set).map(Verdict::Modify),
                None => Err(missing("set")),
            },
            _ => return None,
        })
    }

    /// Takes the action and its fields out of the rule, refusing fields it does not use.
    fn take_action(&mut self) -> Result<Action, String> {
        let action = match self.action.as_str() {
            "pause" => Action::Pause(
                self.timeout_ms
                    .take()
                    .ok_or("\"pause\" needs \"timeout_ms\"")?,
            ),
            "delay" => {
                let millis = self.delay_ms.take().ok_or("\"delay\" needs \"delay_ms\"")?;
                let then = self.then.take().unwrap_or_else(|| "continue".to_owned());
                let then = self.take_verdict(&then).ok_or_else(|| {
                    format!("unknown \"then\" {then:?} (expected continue, block, mock or modify)")
                })??;
                Action::Delay { millis, then }
            }
            name => {
                let name = name.to_owned();
                Action::Verdict(self.take_verdict(&name).ok_or_else(|| {
                    format!(
                        "unknown action {name:?} \
                         (expected continue, block, mock, modify, pause or delay)"
                    )
                })??)
            }
        };
        let unused = [
            ("reason", self.reason.is_some()),
            ("result", self.result.is_some()),
            ("set", self.set.is_some()),
            ("timeout_ms", self.timeout_ms.is_some()),
            ("delay_ms", self.delay_ms.is_some()),
            ("then", self.then.is_some()),
        ];
        match unused.into_iter().find(|(_, present)| *present) {
            Some((field, _)) => Err(format!(
                "\"{field}\" does not apply to action {:?}",
                self.action
            )),
            None => Ok(action),
        }
    }
}

impl Rule {
    fn parse(mut raw: RawRule) -> Result<Self, String> {
        let action = raw.take_action()?;
        let mocks = matches!(
            action,
            Action::Verdict(Verdict::Mock(_))
                | Action::Delay {
                    then: Verdict::Mock(_),
                    ..
                }
        );
        // A tool names a call: its request, or (with an explicit kind) the call's answer.
        let kind = match (raw.kind, raw.tool.is_some(), mocks) {
            (Some(kind), _, true) if kind != Kind::Request => {
                return Err("\"mock\" only answers requests".to_owned());
            }
            (Some(Kind::Notification), true, _) => {
                return Err("\"tool\" applies to requests and their answers".to_owned());
            }
            (None, true, _) | (None, _, true) => Some(Kind::Request),
            (kind, ..) => kind,
        };
        Ok(Self {
            method_glob: WildMatch::new(&raw.method),
            method: raw.method,
            tool: raw.tool.as_deref().map(WildMatch::new),
            direction: raw.direction,
            kind,
            action,
        })
    }

    fn matches(&self, message: &Envelope) -> bool {
        self.direction.is_none_or(|d| d == message.direction)
            && self.kind.is_none_or(|k| k == message.kind)
            // A message without a known method matches only a glob that accepts "".
            && self.method_glob.matches(message.method.unwrap_or_default())
            && self.tool.as_ref().is_none_or(|glob| {
                message.tool.as_deref().is_some_and(|name| glob.matches(name))
            })
    }
}

/// `params.name` of a request, read without building the whole document.
#[cfg(test)]
fn tool_name(json: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Request {
        params: Params,
    }
    #[derive(Deserialize)]
    struct Params {
        name: String,
    }
    serde_json::from_str::<Request>(json)
        .ok()
        .map(|request| request.params.name)
}

impl Ruleset {
    pub fn from_json(config: &str) -> Result<Self, String> {
        let invalid = |detail: String| format!("invalid rules config: {detail}");
        let config: Config = serde_json::from_str(config).map_err(|e| invalid(e.to_string()))?;
        config
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, raw)| {
                Rule::parse(raw).map_err(|e| invalid(format!("rules[{index}]: {e}")))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// One filter per rule; no rules, no filters.
    pub fn filters(&self) -> Vec<Filter> {
        self.0
            .iter()
            .map(|rule| Filter {
                // A glob that accepts "" (such as `*`) also matches answers of unknown method,
                // which only an empty methods list lets through.
                methods: if rule.method_glob.matches("") {
                    Vec::new()
                } else {
                    vec![rule.method.clone()]
                },
                directions: rule.direction.into_iter().collect(),
                kinds: rule.kind.into_iter().collect(),
            })
            .collect()
    }

    /// Whether some rule matches by the tool a call names.
    pub fn reads_tools(&self) -> bool {
        self.0.iter().any(|rule| rule.tool.is_some())
    }

    /// The position and action of the first rule matching `message`.
    pub fn first_match(&self, message: &Envelope) -> Option<(usize, &Action)> {
        self.0
            .iter()
            .position(|rule| rule.matches(message))
            .map(|index| (index, &self.0[index].action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ruleset(rules: Value) -> Ruleset {
        Ruleset::from_json(&json!({ "rules": rules }).to_string()).unwrap()
    }

    fn error(rules: Value) -> String {
        Ruleset::from_json(&json!({ "rules": rules }).to_string()).unwrap_err()
    }

    fn call(tool: &str) -> String {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": tool, "arguments": {"message": "hi"}}})
        .to_string()
    }

    fn request<'a>(method: &'a str, json: &'a str) -> Envelope<'a> {
        Envelope {
            kind: Kind::Request,
            direction: Direction::ClientToServer,
            method: Some(method),
            tool: tool_name(json),
        }
    }

    #[test]
    fn parses_every_action() {
        let rules = ruleset(json!([
            {"method": "a", "action": "continue"},
            {"method": "b", "action": "block", "reason": "no"},
            {"method": "c", "action": "mock", "result": null},
            {"method": "d", "action": "modify", "set": {"/params/x": 1}},
            {"method": "e", "action": "pause", "timeout_ms": 5000},
            {"method": "f", "action": "delay", "delay_ms": 10},
            {"method": "g", "action": "delay", "delay_ms": 10, "then": "mock", "result": {"ok": true}},
        ]));
        let actions: Vec<_> = rules
            .0
            .iter()
            .map(|rule| format!("{:?}", rule.action))
            .collect();
        assert_eq!(actions[0], "Verdict(Continue)");
        assert_eq!(actions[1], "Verdict(Block(\"no\"))");
        assert_eq!(actions[2], "Verdict(Mock(\"null\"))");
        assert!(actions[3].starts_with("Verdict(Modify("));
        assert_eq!(actions[4], "Pause(5000)");
        assert_eq!(actions[5], "Delay { millis: 10, then: Continue }");
        assert_eq!(
            actions[6],
            "Delay { millis: 10, then: Mock(\"{\\\"ok\\\":true}\") }"
        );
    }

    #[test]
    fn rejects_invalid_rules() {
        let cases = [
            (
                json!([{"method": "a", "action": "explode"}]),
                "rules[0]: unknown action \"explode\"",
            ),
            (json!([{"action": "continue"}]), "missing field `method`"),
            (json!([{"method": "a"}]), "missing field `action`"),
            (
                json!([{"method": "a", "action": "block"}]),
                "\"block\" needs \"reason\"",
            ),
            (
                json!([{"method": "a", "action": "mock"}]),
                "\"mock\" needs \"result\"",
            ),
            (
                json!([{"method": "a", "action": "pause"}]),
                "\"pause\" needs \"timeout_ms\"",
            ),
            (
                json!([{"method": "a", "action": "delay"}]),
                "\"delay\" needs \"delay_ms\"",
            ),
            (
                json!([{"method": "a", "action": "delay", "delay_ms": 1, "then": "pause"}]),
                "unknown \"then\" \"pause\"",
            ),
            (
                json!([{"method": "a", "action": "modify", "set": {"params": 1}}]),
                "JSON pointer \"params\" must be empty or start with '/'",
            ),
            (
                json!([{"method": "a", "action": "block", "reason": "x", "result": 1}]),
                "\"result\" does not apply to action \"block\"",
            ),
            (
                json!([{"method": "a", "action": "continue", "then": "block"}]),
                "\"then\" does not apply",
            ),
            (
                json!([{"method": "a", "kind": "notification", "tool": "x", "action": "continue"}]),
                "\"tool\" applies to requests and their answers",
            ),
            (
                json!([{"method": "a", "kind": "notification", "action": "mock", "result": 1}]),
                "\"mock\" only answers requests",
            ),
            (
                json!([{"method": "a", "action": "continue", "extra": 1}]),
                "unknown field `extra`",
            ),
            (
                json!([{"method": "a", "direction": "up", "action": "continue"}]),
                "unknown variant `up`",
            ),
            (json!({}), "expected a sequence"),
        ];
        for (rules, expected) in cases {
            let error = error(rules);
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn no_rules_want_nothing() {
        let rules = Ruleset::from_json("{}").unwrap();
        assert!(rules.first_match(&request("tools/call", "{}")).is_none());
        assert!(rules.filters().is_empty());
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = ruleset(json!([
            {"method": "tools/call", "tool": "echo", "action": "mock", "result": {"content": []}},
            {"method": "tools/*", "direction": "client-to-server", "action": "block", "reason": "r"},
            {"method": "*", "kind": "notification", "action": "pause", "timeout_ms": 1},
        ]));
        let echo = call("echo");
        assert_eq!(
            rules.first_match(&request("tools/call", &echo)).unwrap().0,
            0
        );
        let other = call("other");
        assert_eq!(
            rules.first_match(&request("tools/call", &other)).unwrap().0,
            1
        );
        assert_eq!(
            rules.first_match(&request("tools/list", "{}")).unwrap().0,
            1
        );
        assert!(rules.first_match(&request("ping", "{}")).is_none());
        let notification = Envelope {
            kind: Kind::Notification,
            direction: Direction::ServerToClient,
            method: None,
            tool: None,
        };
        assert_eq!(rules.first_match(&notification).unwrap().0, 2);
    }

    #[test]
    fn tool_rules_match_requests_naming_a_tool_and_answers_only_when_asked() {
        let rules =
            ruleset(json!([{"method": "tools/call", "tool": "ec?o", "action": "continue"}]));
        let response = Envelope {
            kind: Kind::Response,
            direction: Direction::ServerToClient,
            method: Some("tools/call"),
            tool: Some("echo".into()),
        };
        assert!(
            rules.first_match(&response).is_none(),
            "requests by default"
        );
        assert!(
            rules
                .first_match(&request("tools/call", "{\"params\":{}}"))
                .is_none()
        );
        let echo = call("echo");
        assert!(rules.first_match(&request("tools/call", &echo)).is_some());

        let answers = ruleset(json!([{"method": "tools/call", "kind": "response",
            "tool": "ec?o", "action": "continue"}]));
        assert!(answers.first_match(&response).is_some());
        let other = Envelope {
            tool: Some("search".into()),
            ..response
        };
        assert!(answers.first_match(&other).is_none());
        assert!(answers.first_match(&request("tools/call", &echo)).is_none());
    }

    #[test]
    fn each_rule_is_a_filter() {
        let rules = ruleset(json!([
            {"method": "tools/call", "tool": "echo", "action": "continue"},
            {"method": "resources/read", "action": "mock", "result": {}},
            {"method": "tools/*", "direction": "server-to-client", "kind": "response", "action": "continue"},
            {"method": "*", "direction": "client-to-server", "action": "continue"},
            {"method": "notifications/*", "action": "continue"},
        ]));
        let filter = |method: Option<&str>, directions, kinds| Filter {
            methods: method.map(str::to_owned).into_iter().collect(),
            directions,
            kinds,
        };
        assert_eq!(
            rules.filters(),
            [
                filter(Some("tools/call"), vec![], vec![Kind::Request]),
                filter(Some("resources/read"), vec![], vec![Kind::Request]),
                filter(
                    Some("tools/*"),
                    vec![Direction::ServerToClient],
                    vec![Kind::Response]
                ),
                filter(None, vec![Direction::ClientToServer], vec![]),
                filter(Some("notifications/*"), vec![], vec![]),
            ]
        );
    }
}
