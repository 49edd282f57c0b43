//! The gate's policy: its configuration and the decision on each message, as plain functions
//! over JSON text so they can be tested natively.

use std::borrow::Cow;
use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use wildmatch::WildMatch;

/// How long a call is held when the operator does not say: five minutes.
const DEFAULT_TIMEOUT_MS: u64 = 300_000;

/// The configuration as the operator writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    tools: Vec<String>,
    arguments: Option<BTreeMap<String, String>>,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// A parsed, validated policy.
pub struct Policy {
    tools: Vec<WildMatch>,
    /// Argument name and the regex its value must match; all must hold.
    arguments: Vec<(String, Regex)>,
    timeout_ms: u64,
}

impl Policy {
    pub fn from_json(config: &str) -> Result<Self, String> {
        let invalid = |detail: String| format!("invalid approval config: {detail}");
        let config: Config = serde_json::from_str(config).map_err(|e| invalid(e.to_string()))?;
        if config.tools.is_empty() {
            return Err(invalid("`tools` must name at least one tool glob".into()));
        }
        if config.timeout_ms == 0 {
            return Err(invalid("`timeout_ms` must be greater than 0".into()));
        }
        let arguments = config
            .arguments
            .unwrap_or_default()
            .into_iter()
            .map(|(name, pattern)| match Regex::new(&pattern) {
                Ok(regex) => Ok((name, regex)),
                Err(e) => Err(invalid(format!(
                    "arguments.{name} pattern {pattern:?}: {e}"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            tools: config.tools.iter().map(|p| WildMatch::new(p)).collect(),
            arguments,
            timeout_ms: config.timeout_ms,
        })
    }

    /// The milliseconds to hold a message for approval, or `None` to let it through. Only a
    /// client's `tools/call` request can be held; one without a tool name never is.
    pub fn check(&self, client_request: bool, method: Option<&str>, json: &str) -> Option<u64> {
        if !client_request || method != Some("tools/call") {
            return None;
        }
        // Only the name is read up front; the arguments are parsed only when conditions apply.
        let call = serde_json::from_str::<Call<'_>>(json).ok()?;
        let tool = &*call.params.name;
        if !self.tools.iter().any(|glob| glob.matches(tool)) {
            return None;
        }
        if self.arguments.is_empty() {
            return Some(self.timeout_ms);
        }
        // Arguments that are absent or not an object hold none of the named ones.
        let arguments = call
            .params
            .arguments
            .and_then(|raw| serde_json::from_str::<Map<String, Value>>(raw.get()).ok())?;
        self.arguments
            .iter()
            .all(|(name, regex)| {
                arguments
                    .get(name)
                    .is_some_and(|value| regex.is_match(&render(value)))
            })
            .then_some(self.timeout_ms)
    }
}

/// An argument's value as its regex sees it: a string as it is, anything else as compact JSON.
fn render(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(text) => Cow::Borrowed(text),
        other => Cow::Owned(other.to_string()),
    }
}

/// The parts of a `tools/call` request the gate reads, borrowed from the message text.
#[derive(Deserialize)]
struct Call<'a> {
    #[serde(borrow)]
    params: CallParams<'a>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(config: Value) -> Policy {
        Policy::from_json(&config.to_string()).unwrap()
    }

    fn error(config: &str) -> String {
        Policy::from_json(config).err().unwrap()
    }

    fn call(name: &str, arguments: Value) -> String {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": name, "arguments": arguments}})
        .to_string()
    }

    /// The decision on a client's `tools/call` request.
    fn hold(policy: &Policy, json: &str) -> Option<u64> {
        policy.check(true, Some("tools/call"), json)
    }

    #[test]
    fn holds_calls_by_tool_glob() {
        let policy = policy(json!({"tools": ["delete_*", "send_email", "run_?"]}));
        assert_eq!(
            hold(&policy, &call("delete_user", json!({}))),
            Some(300_000)
        );
        assert_eq!(
            hold(&policy, &call("send_email", json!({"to": "a@b"}))),
            Some(300_000)
        );
        assert_eq!(hold(&policy, &call("run_1", json!({}))), Some(300_000));
        assert_eq!(hold(&policy, &call("run_10", json!({}))), None);
        assert_eq!(hold(&policy, &call("send_emails", json!({}))), None);
        assert_eq!(hold(&policy, &call("get_user", json!({}))), None);
        let nameless = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}});
        assert_eq!(hold(&policy, &nameless.to_string()), None);
        assert_eq!(hold(&policy, "not json"), None);
    }

    #[test]
    fn uses_the_configured_timeout() {
        let policy = policy(json!({"tools": ["*"], "timeout_ms": 600_000}));
        assert_eq!(hold(&policy, &call("anything", json!({}))), Some(600_000));
    }

    #[test]
    fn holds_only_client_tool_calls() {
        let policy = policy(json!({"tools": ["*"]}));
        let json = call("delete_user", json!({}));
        assert_eq!(policy.check(true, Some("tools/call"), &json), Some(300_000));
        assert_eq!(policy.check(true, Some("tools/list"), &json), None);
        assert_eq!(policy.check(true, Some("resources/read"), &json), None);
        assert_eq!(policy.check(true, None, &json), None);
        // A response answering a `tools/call`, or a request from the server.
        assert_eq!(policy.check(false, Some("tools/call"), &json), None);
    }

    #[test]
    fn holds_when_every_named_argument_matches() {
        let policy = policy(json!({"tools": ["write_*"],
                                   "arguments": {"path": "^/etc/", "mode": "^w"}}));
        let both = json!({"path": "/etc/passwd", "mode": "write", "extra": 1});
        assert_eq!(
            hold(&policy, &call("write_file", both.clone())),
            Some(300_000)
        );
        assert_eq!(
            hold(&policy, &call("read_file", both)),
            None,
            "tool must match too"
        );
        let one = json!({"path": "/etc/passwd", "mode": "append"});
        assert_eq!(hold(&policy, &call("write_file", one)), None);
        let unanchored = json!({"path": "/home/etc/x", "mode": "w"});
        assert_eq!(hold(&policy, &call("write_file", unanchored)), None);
    }

    #[test]
    fn missing_arguments_are_not_held() {
        let policy = policy(json!({"tools": ["write_file"], "arguments": {"path": "."}}));
        assert_eq!(
            hold(&policy, &call("write_file", json!({"file": "/etc/x"}))),
            None
        );
        assert_eq!(hold(&policy, &call("write_file", json!(["/etc/x"]))), None);
        assert_eq!(hold(&policy, &call("write_file", json!("/etc/x"))), None);
        let bare = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": "write_file"}});
        assert_eq!(hold(&policy, &bare.to_string()), None);
        // Without conditions on arguments, the name alone decides.
        let by_name = self::policy(json!({"tools": ["write_file"], "arguments": {}}));
        assert_eq!(hold(&by_name, &bare.to_string()), Some(300_000));
    }

    #[test]
    fn non_string_arguments_match_as_compact_json() {
        let policy = policy(json!({"tools": ["*"], "arguments": {
            "count": "^[0-9]{3,}$",
            "force": "^true$",
            "target": r#"^\{"host":"prod","port":22\}$"#,
        }}));
        let args = json!({"count": 1000, "force": true,
                          "target": {"host": "prod", "port": 22}});
        assert_eq!(hold(&policy, &call("x", args)), Some(300_000));
        let small = json!({"count": 12, "force": true, "target": {"host": "prod", "port": 22}});
        assert_eq!(hold(&policy, &call("x", small)), None);
        let quoted =
            json!({"count": "1000", "force": "true", "target": {"host": "prod", "port": 22}});
        assert_eq!(
            hold(&policy, &call("x", quoted)),
            Some(300_000),
            "strings unquoted"
        );
        let nulls = self::policy(json!({"tools": ["*"], "arguments": {"to": "^null$"}}));
        assert_eq!(hold(&nulls, &call("x", json!({"to": null}))), Some(300_000));
        let lists = self::policy(json!({"tools": ["*"], "arguments": {"to": r#"^\["a","b"\]$"#}}));
        assert_eq!(
            hold(&lists, &call("x", json!({"to": ["a", "b"]}))),
            Some(300_000)
        );
    }

    #[test]
    fn rejects_malformed_config() {
        let missing = error("{}");
        assert!(
            missing.starts_with("invalid approval config: "),
            "{missing}"
        );
        assert!(missing.contains("missing field `tools`"), "{missing}");
        let empty = error(r#"{"tools": []}"#);
        assert!(
            empty.contains("`tools` must name at least one tool glob"),
            "{empty}"
        );
        let unknown = error(r#"{"tools": ["x"], "timeout": 5}"#);
        assert!(unknown.contains("unknown field `timeout`"), "{unknown}");
        let zero = error(r#"{"tools": ["x"], "timeout_ms": 0}"#);
        assert!(
            zero.contains("`timeout_ms` must be greater than 0"),
            "{zero}"
        );
        let regex = error(r#"{"tools": ["x"], "arguments": {"path": "("}}"#);
        assert!(regex.contains("arguments.path pattern \"(\""), "{regex}");
        assert!(Policy::from_json(r#"{"tools": "x"}"#).is_err());
        assert!(Policy::from_json(r#"{"tools": ["x"], "timeout_ms": -1}"#).is_err());
        assert!(Policy::from_json(r#"{"tools": ["x"], "timeout_ms": "5s"}"#).is_err());
        assert!(Policy::from_json(r#"{"tools": ["x"], "arguments": ["path"]}"#).is_err());
        assert!(Policy::from_json(r#"{"tools": ["x"], "arguments": {"n": 3}}"#).is_err());
        assert!(Policy::from_json("not json").is_err());
    }
}
