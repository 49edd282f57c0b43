//! The guard's policy: its configuration and the decisions on `tools/call` requests and
//! `tools/list` results, as plain functions over JSON text so they can be tested natively.

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use wildmatch::WildMatch;

/// The configuration as the operator writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    deny: Vec<DenyRule>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny_arguments: Vec<ArgumentRule>,
    #[serde(default = "enabled")]
    hide_denied: bool,
    #[serde(default)]
    only: Vec<OnlyRule>,
}

/// Denied tools: a glob, or globs with the reason the caller is given.
#[derive(Deserialize)]
#[serde(untagged)]
enum DenyRule {
    Glob(String),
    Explained(ExplainedDeny),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainedDeny {
    tools: Vec<String>,
    reason: String,
}

/// Tools only some principals may call: those whose subject matches `subjects`, or whose
/// claim `claim` (a string, or a list of strings) holds one of `any_of`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnlyRule {
    tools: Vec<String>,
    #[serde(default)]
    subjects: Vec<String>,
    claim: Option<String>,
    #[serde(default)]
    any_of: Vec<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArgumentRule {
    #[serde(default = "any_tool")]
    tool: String,
    pattern: String,
    reason: Option<String>,
}

fn enabled() -> bool {
    true
}

fn any_tool() -> String {
    "*".to_owned()
}

/// A parsed, validated policy. Each rule keeps the reason it gives, when it has its own.
pub struct Policy {
    deny: Vec<(WildMatch, Option<String>)>,
    allow: Vec<WildMatch>,
    deny_arguments: Vec<(WildMatch, Regex, Option<String>)>,
    hide_denied: bool,
    only: Vec<Only>,
}

struct Only {
    tools: Vec<WildMatch>,
    subjects: Vec<WildMatch>,
    claim: Option<(String, Vec<String>)>,
    reason: Option<String>,
}

/// Who calls, as membrane tells it (the session's principal).
pub struct Caller {
    pub subject: String,
    /// The claims passed on to plugins, as a JSON object.
    pub claims: Value,
}

impl Only {
    fn admits(&self, caller: Option<&Caller>) -> bool {
        let Some(caller) = caller else {
            return false; // nobody authenticated: these tools are off limits
        };
        let by_subject = self
            .subjects
            .iter()
            .any(|glob| glob.matches(&caller.subject));
        let by_claim = self.claim.as_ref().is_some_and(|(claim, any_of)| {
            let holds = |value: &Value| {
                value
                    .as_str()
                    .is_some_and(|v| any_of.iter().any(|a| a == v))
            };
            match &caller.claims[claim] {
                Value::Array(values) => values.iter().any(holds),
                value => holds(value),
            }
        });
        by_subject || by_claim
    }
}

impl Policy {
    pub fn from_json(config: &str) -> Result<Self, String> {
        let invalid = |detail: String| format!("invalid tool-guard config: {detail}");
        let config: Config = serde_json::from_str(config).map_err(|e| invalid(e.to_string()))?;
        let deny_arguments = config
            .deny_arguments
            .iter()
            .map(|rule| match Regex::new(&rule.pattern) {
                Ok(regex) => Ok((WildMatch::new(&rule.tool), regex, rule.reason.clone())),
                Err(e) => Err(invalid(format!(
                    "deny_arguments pattern {:?}: {e}",
                    rule.pattern
                ))),
            })
            .collect::<Result<_, _>>()?;
        let globs = |patterns: &[String]| patterns.iter().map(|p| WildMatch::new(p)).collect();
        let only = config
            .only
            .iter()
            .map(|rule| {
                if rule.subjects.is_empty() && (rule.claim.is_none() || rule.any_of.is_empty()) {
                    return Err(invalid(
                        "an `only` rule needs `subjects`, or `claim` with `any_of`".into(),
                    ));
                }
                Ok(Only {
                    tools: globs(&rule.tools),
                    subjects: globs(&rule.subjects),
                    claim: rule.claim.clone().map(|claim| (claim, rule.any_of.clone())),
                    reason: rule.reason.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        let deny = config
            .deny
            .iter()
            .flat_map(|rule| match rule {
                DenyRule::Glob(glob) => vec![(WildMatch::new(glob), None)],
                DenyRule::Explained(rule) => rule
                    .tools
                    .iter()
                    .map(|glob| (WildMatch::new(glob), Some(rule.reason.clone())))
                    .collect(),
            })
            .collect();
        Ok(Self {
            deny,
            allow: globs(&config.allow),
            deny_arguments,
            hide_denied: config.hide_denied,
            only,
        })
    }

    /// Whether `tools/list` results need filtering: hiding is on and some name can be refused.
    pub fn filters_lists(&self) -> bool {
        self.hide_denied && !(self.deny.is_empty() && self.allow.is_empty() && self.only.is_empty())
    }

    /// Whether decisions depend on who calls.
    pub fn asks_who(&self) -> bool {
        !self.only.is_empty()
    }

    /// Whether `caller` may call a tool by name: not denied, allowed when there is an allow
    /// list, and admitted by every `only` rule naming it.
    pub fn permits(&self, tool: &str, caller: Option<&Caller>) -> bool {
        self.permits_by_name(tool) && self.admits(tool, caller)
    }

    fn permits_by_name(&self, tool: &str) -> bool {
        self.refusal_by_name(tool).is_none()
    }

    /// Why `tool` may not be called by name: the deny rule's reason, or the default one.
    fn refusal_by_name(&self, tool: &str) -> Option<String> {
        let default = || format!("tool '{tool}' is blocked by policy");
        if let Some((_, reason)) = self.deny.iter().find(|(glob, _)| glob.matches(tool)) {
            return Some(reason.clone().unwrap_or_else(default));
        }
        let allowed = self.allow.is_empty() || self.allow.iter().any(|glob| glob.matches(tool));
        (!allowed).then(default)
    }

    fn admits(&self, tool: &str, caller: Option<&Caller>) -> bool {
        self.refusing(tool, caller).is_none()
    }

    /// The first `only` rule naming `tool` that does not admit `caller`.
    fn refusing(&self, tool: &str, caller: Option<&Caller>) -> Option<&Only> {
        self.only
            .iter()
            .filter(|rule| rule.tools.iter().any(|glob| glob.matches(tool)))
            .find(|rule| !rule.admits(caller))
    }

    /// The reason to block a `tools/call` request, or `None` to let it through: the call's
    /// `tool`, and its `arguments`, read only when a pattern applies to the tool. A request
    /// without a tool name is blocked, since no policy can be applied to it.
    pub fn check(
        &self,
        tool: Option<&str>,
        arguments: impl FnOnce() -> Option<Value>,
        caller: Option<&Caller>,
    ) -> Option<String> {
        let Some(tool) = tool else {
            return Some("tools/call request has no tool name".to_owned());
        };
        if let Some(refusal) = self.refusal_by_name(tool) {
            return Some(refusal);
        }
        if let Some(rule) = self.refusing(tool, caller) {
            let who = caller.map_or("an unauthenticated caller".to_owned(), |c| {
                format!("'{}'", c.subject)
            });
            return Some(
                rule.reason
                    .clone()
                    .unwrap_or_else(|| format!("tool '{tool}' is not for {who}")),
            );
        }
        let mut patterns = self
            .deny_arguments
            .iter()
            .filter(|(glob, ..)| glob.matches(tool))
            .peekable();
        patterns.peek()?;
        let arguments = arguments().unwrap_or(Value::Null);
        let (.., reason) = patterns.find(|(_, regex, _)| any_string_matches(&arguments, regex))?;
        Some(
            reason
                .clone()
                .unwrap_or_else(|| format!("arguments of tool '{tool}' match a blocked pattern")),
        )
    }

    /// [`Policy::check`] of a whole `tools/call` request's JSON text.
    #[cfg(test)]
    pub fn check_call(&self, json: &str, caller: Option<&Caller>) -> Option<String> {
        let call = serde_json::from_str::<Value>(json).ok();
        let params = call.as_ref().and_then(|call| call.get("params"));
        let tool = params.and_then(|params| params.get("name")?.as_str());
        self.check(tool, || params?.get("arguments").cloned(), caller)
    }

    /// A `tools/list` response without the tools this policy refuses `caller` by name, or
    /// `None` when it lists none of them (the message is then passed on untouched).
    pub fn filter_list(&self, json: &str, caller: Option<&Caller>) -> Option<String> {
        let mut message: Value = serde_json::from_str(json).ok()?;
        let tools = message
            .get_mut("result")?
            .get_mut("tools")?
            .as_array_mut()?;
        let listed = tools.len();
        tools.retain(|tool| {
            tool["name"]
                .as_str()
                .is_none_or(|name| self.permits(name, caller))
        });
        (tools.len() != listed).then(|| message.to_string())
    }
}

/// Whether any string anywhere inside `value` matches `regex`. The depth is bounded by
/// `serde_json`'s recursion limit on parsing.
fn any_string_matches(value: &Value, regex: &Regex) -> bool {
    match value {
        Value::String(text) => regex.is_match(text),
        Value::Array(items) => items.iter().any(|item| any_string_matches(item, regex)),
        Value::Object(members) => members.values().any(|item| any_string_matches(item, regex)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(config: Value) -> Policy {
        Policy::from_json(&config.to_string()).unwrap()
    }

    fn call(name: &str, arguments: Value) -> String {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": name, "arguments": arguments}})
        .to_string()
    }

    #[test]
    fn empty_config_permits_everything_and_filters_nothing() {
        let policy = policy(json!({}));
        assert!(policy.permits("shell", None));
        assert!(!policy.filters_lists());
        assert_eq!(policy.check_call(&call("shell", json!({})), None), None);
    }

    #[test]
    fn rejects_malformed_config() {
        let unknown = Policy::from_json(r#"{"denied": ["x"]}"#).err().unwrap();
        assert!(unknown.contains("unknown field `denied`"), "{unknown}");
        let regex = Policy::from_json(r#"{"deny_arguments": [{"pattern": "("}]}"#)
            .err()
            .unwrap();
        assert!(regex.contains("deny_arguments pattern \"(\""), "{regex}");
        assert!(Policy::from_json(r#"{"deny_arguments": [{"tool": "x"}]}"#).is_err());
        assert!(Policy::from_json(r#"{"deny": "shell"}"#).is_err());
        assert!(Policy::from_json("not json").is_err());
    }

    #[test]
    fn deny_wins_over_allow() {
        let policy = policy(json!({"deny": ["delete_*", "shel?"], "allow": ["get_*", "delete_*"]}));
        assert!(policy.permits("get_user", None));
        assert!(!policy.permits("delete_user", None));
        assert!(!policy.permits("shell", None));
        assert!(!policy.permits("echo", None));
        assert!(policy.filters_lists());
    }

    #[test]
    fn blocks_calls_by_name() {
        let policy = policy(json!({"deny": ["shell"]}));
        assert_eq!(
            policy
                .check_call(&call("shell", json!({})), None)
                .as_deref(),
            Some("tool 'shell' is blocked by policy")
        );
        assert_eq!(policy.check_call(&call("echo", json!({})), None), None);
        let nameless = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}});
        assert_eq!(
            policy.check_call(&nameless.to_string(), None).as_deref(),
            Some("tools/call request has no tool name")
        );
    }

    #[test]
    fn blocks_calls_by_nested_argument() {
        let policy = policy(json!({"deny_arguments": [
            {"tool": "run_*", "pattern": "rm\\s+-rf"},
            {"pattern": "(?i)password"}
        ]}));
        let nested = json!({"steps": [{"cmd": "ls"}, {"cmd": ["sh", "-c", "rm  -rf /"]}]});
        assert_eq!(
            policy
                .check_call(&call("run_script", nested.clone()), None)
                .as_deref(),
            Some("arguments of tool 'run_script' match a blocked pattern")
        );
        assert_eq!(policy.check_call(&call("echo", nested), None), None);
        assert!(
            policy
                .check_call(&call("echo", json!({"q": "PassWord"})), None)
                .is_some()
        );
        assert_eq!(
            policy.check_call(&call("echo", json!({"n": 3})), None),
            None
        );
    }

    #[test]
    fn removes_refused_tools_from_lists() {
        let policy = policy(json!({"deny": ["delete_*"]}));
        let list = r#"{"jsonrpc":"2.0","id":"a1","result":{"tools":[{"name":"echo","inputSchema":{}},{"name":"delete_all"}],"nextCursor":"c"}}"#;
        let filtered: Value =
            serde_json::from_str(&policy.filter_list(list, None).unwrap()).unwrap();
        assert_eq!(
            filtered,
            json!({"jsonrpc": "2.0", "id": "a1",
                   "result": {"tools": [{"name": "echo", "inputSchema": {}}], "nextCursor": "c"}})
        );
        let clean = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo"}]}}"#;
        assert_eq!(policy.filter_list(clean, None), None);
        assert_eq!(
            policy.filter_list(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#, None),
            None
        );
    }

    #[test]
    fn some_tools_only_for_some_principals() {
        let policy = policy(json!({"only": [
            {"tools": ["deploy_*"], "claim": "groups", "any_of": ["release"]},
            {"tools": ["admin"], "subjects": ["root", "ops-*"]}
        ]}));
        let member = Caller {
            subject: "alice".into(),
            claims: json!({"groups": ["dev", "release"]}),
        };
        let other = Caller {
            subject: "ops-bob".into(),
            claims: json!({"groups": "dev"}),
        };
        assert!(policy.permits("deploy_prod", Some(&member)));
        assert!(!policy.permits("deploy_prod", Some(&other)));
        assert!(!policy.permits("deploy_prod", None), "nobody authenticated");
        assert!(policy.permits("admin", Some(&other)) && !policy.permits("admin", Some(&member)));
        assert!(policy.permits("echo", None), "other tools are for everyone");
        assert_eq!(
            policy
                .check_call(&call("deploy_prod", json!({})), Some(&other))
                .as_deref(),
            Some("tool 'deploy_prod' is not for 'ops-bob'")
        );
        let list = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"deploy_prod"}]}}"#;
        assert!(policy.filter_list(list, Some(&member)).is_none());
        assert!(
            policy
                .filter_list(list, Some(&other))
                .unwrap()
                .contains("echo")
        );
        assert!(Policy::from_json(r#"{"only": [{"tools": ["x"]}]}"#).is_err());
    }

    #[test]
    fn rules_can_carry_their_own_reasons() {
        let policy = policy(json!({
            "deny": ["shell", {"tools": ["delete_*", "drop_*"], "reason": "destructive tools need a ticket"}],
            "deny_arguments": [
                {"pattern": "rm\\s+-rf", "reason": "no recursive deletes"},
                {"pattern": "sudo"}
            ],
            "only": [{"tools": ["deploy"], "subjects": ["ci"], "reason": "deploys run from CI"}]
        }));
        let reason = |name: &str, arguments: Value| policy.check_call(&call(name, arguments), None);
        assert_eq!(
            reason("drop_table", json!({})).as_deref(),
            Some("destructive tools need a ticket")
        );
        assert_eq!(
            reason("shell", json!({})).as_deref(),
            Some("tool 'shell' is blocked by policy")
        );
        assert_eq!(
            reason("run", json!({"c": "rm -rf /"})).as_deref(),
            Some("no recursive deletes")
        );
        assert_eq!(
            reason("run", json!({"c": "sudo ls"})).as_deref(),
            Some("arguments of tool 'run' match a blocked pattern")
        );
        assert_eq!(
            reason("deploy", json!({})).as_deref(),
            Some("deploys run from CI")
        );
        assert!(!policy.permits("delete_x", None), "hidden from lists too");
        let unknown = Policy::from_json(r#"{"deny": [{"tools": ["x"], "why": "y"}]}"#);
        assert!(unknown.is_err(), "a rule without a reason is refused");
    }

    #[test]
    fn hiding_can_be_turned_off() {
        assert!(!policy(json!({"deny": ["x"], "hide_denied": false})).filters_lists());
    }
}
