//! [`ScopeRules`]: the scopes a request needs, by method and by tool. Every request needs the
//! scopes of `required_scopes`; a rule adds its scopes for the methods it names (globs), and,
//! when it names tools, only for `tools/call` of those tools (globs on `params.name`). A
//! principal lacking any of them is refused with 403 `insufficient_scope`.

use std::collections::BTreeSet;

use serde::Deserialize;
use wildmatch::WildMatch;

use super::Principal;

/// One rule as configured under `[[auth.scopes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    /// Method globs; empty means every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Tool name globs; when given, the rule holds for `tools/call` of those tools only.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Scopes the matching requests need, all of them.
    pub scopes: Vec<String>,
}

/// Compiled scope requirements.
#[derive(Debug, Default)]
pub struct ScopeRules {
    always: Vec<String>,
    rules: Vec<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    methods: Vec<WildMatch>,
    tools: Vec<WildMatch>,
    scopes: Vec<String>,
}

impl ScopeRules {
    pub fn new(always: &[String], rules: &[ScopeRule]) -> Self {
        let globs = |patterns: &[String]| patterns.iter().map(|p| WildMatch::new(p)).collect();
        Self {
            always: always.to_vec(),
            rules: rules
                .iter()
                .map(|rule| Compiled {
                    methods: globs(&rule.methods),
                    tools: globs(&rule.tools),
                    scopes: rule.scopes.clone(),
                })
                .collect(),
        }
    }

    /// Whether any scope is ever required (else no message needs to be looked at).
    pub fn is_empty(&self) -> bool {
        self.always.is_empty() && self.rules.iter().all(|rule| rule.scopes.is_empty())
    }

    /// The scopes `principal` lacks for a message with `method` naming `tool` (for
    /// `tools/call`); empty when it may go on.
    pub fn missing(
        &self,
        principal: &Principal,
        method: &str,
        tool: Option<&str>,
    ) -> BTreeSet<String> {
        let applies = |rule: &Compiled| {
            let method_matches =
                rule.methods.is_empty() || rule.methods.iter().any(|m| m.matches(method));
            let tool_matches = rule.tools.is_empty()
                || (method == "tools/call"
                    && tool.is_some_and(|tool| rule.tools.iter().any(|t| t.matches(tool))));
            method_matches && tool_matches
        };
        self.always
            .iter()
            .chain(
                self.rules
                    .iter()
                    .filter(|rule| applies(rule))
                    .flat_map(|rule| &rule.scopes),
            )
            .filter(|scope| !principal.scopes.contains(*scope))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &[&str]) -> Principal {
        Principal {
            subject: "alice".into(),
            issuer: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            claims: Default::default(),
        }
    }

    #[test]
    fn scopes_by_method_and_tool() {
        let rules = ScopeRules::new(
            &["mcp".into()],
            &[
                ScopeRule {
                    methods: vec!["tools/*".into()],
                    tools: vec![],
                    scopes: vec!["tools".into()],
                },
                ScopeRule {
                    methods: vec![],
                    tools: vec!["delete_*".into()],
                    scopes: vec!["admin".into()],
                },
            ],
        );
        let user = principal(&["mcp", "tools"]);
        assert!(rules.missing(&user, "tools/call", Some("echo")).is_empty());
        assert!(rules.missing(&user, "ping", None).is_empty());
        assert_eq!(
            rules.missing(&user, "tools/call", Some("delete_all")),
            BTreeSet::from(["admin".to_string()])
        );
        assert!(
            rules
                .missing(&user, "prompts/get", Some("delete_all"))
                .is_empty(),
            "tool rules hold for tools/call only"
        );
        assert_eq!(rules.missing(&principal(&[]), "ping", None).len(), 1);
        assert!(!rules.is_empty() && ScopeRules::default().is_empty());
    }
}
