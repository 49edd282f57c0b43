//! The redactor: built-in detectors for credentials and personal data, the operator's own
//! patterns, and the walk over a JSON-RPC message that applies them to every string of its
//! `result`, `error` or `params`. Plain functions over JSON text, tested natively.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// A built-in detector: a name, a pattern, and an extra check for patterns that would
/// otherwise match too much. A group named `secret` narrows the redaction to that group.
struct BuiltIn(&'static str, &'static str, Option<fn(&str) -> bool>);

const BUILT_IN: &[BuiltIn] = &[
    BuiltIn(
        "private-key",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        None,
    ),
    BuiltIn("aws-access-key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", None),
    BuiltIn(
        "aws-secret-key",
        r#"(?i)aws_?secret_?(?:access_?)?key["']?\s*[:=]\s*["']?(?P<secret>[A-Za-z0-9/+=]{40})\b"#,
        None,
    ),
    BuiltIn(
        "github-token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        None,
    ),
    BuiltIn("slack-token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", None),
    BuiltIn(
        "stripe-key",
        r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b",
        None,
    ),
    BuiltIn("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}\b", None),
    BuiltIn(
        "openai-key",
        r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,}",
        None,
    ),
    BuiltIn(
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
        None,
    ),
    BuiltIn(
        "bearer-token",
        r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/-]{20,}=*)",
        None,
    ),
    BuiltIn(
        "password",
        r#"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token)["']?\s*[:=]\s*["']?(?P<secret>[^\s"',;]{6,})"#,
        None,
    ),
    BuiltIn(
        "email",
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
        None,
    ),
    BuiltIn("credit-card", r"\b(?:\d[ -]?){12,18}\d\b", Some(luhn)),
    BuiltIn(
        "us-ssn",
        r"\b(?P<secret>(?:00[1-9]|0[1-9]\d|[1-578]\d\d|6[0-57-9]\d|66[0-57-9])-(?:0[1-9]|[1-9]\d)-(?:000[1-9]|00[1-9]\d|0[1-9]\d\d|[1-9]\d{3}))\b",
        None,
    ),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_methods")]
    methods: Vec<String>,
    detectors: Option<Vec<String>>,
    #[serde(default)]
    patterns: Vec<Pattern>,
    #[serde(default = "default_replacement")]
    replacement: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pattern {
    name: String,
    regex: String,
}

fn default_methods() -> Vec<String> {
    ["tools/call", "resources/read", "prompts/get"]
        .map(String::from)
        .to_vec()
}

fn default_replacement() -> String {
    "[REDACTED:{name}]".to_owned()
}

struct Detector {
    name: String,
    regex: Regex,
    check: Option<fn(&str) -> bool>,
}

pub struct Redactor {
    methods: Vec<String>,
    detectors: Vec<Detector>,
    replacement: String,
}

/// A message with its findings replaced.
#[derive(Debug)]
pub struct Redacted {
    pub json: String,
    /// Replacements made, by detector.
    pub found: BTreeMap<String, usize>,
}

impl Redacted {
    /// "3 findings (email ×2, jwt)"
    pub fn summary(&self) -> String {
        let total: usize = self.found.values().sum();
        let kinds: Vec<String> = self
            .found
            .iter()
            .map(|(name, &n)| {
                if n > 1 {
                    format!("{name} x{n}")
                } else {
                    name.clone()
                }
            })
            .collect();
        format!(
            "{total} finding{} ({})",
            if total == 1 { "" } else { "s" },
            kinds.join(", ")
        )
    }
}

impl Redactor {
    pub fn from_json(config: &str) -> Result<Self, String> {
        let invalid = |detail: String| format!("invalid secret-redactor config: {detail}");
        let config: Config = serde_json::from_str(config).map_err(|e| invalid(e.to_string()))?;
        let built_in = |name: &str| BUILT_IN.iter().find(|BuiltIn(known, _, _)| *known == name);
        let chosen: Vec<_> = match &config.detectors {
            None => BUILT_IN.iter().collect(),
            Some(names) => names
                .iter()
                .map(|name| {
                    built_in(name).ok_or_else(|| {
                        let known: Vec<&str> = BUILT_IN.iter().map(|BuiltIn(n, _, _)| *n).collect();
                        invalid(format!(
                            "unknown detector '{name}' (known: {})",
                            known.join(", ")
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut detectors: Vec<Detector> = chosen
            .into_iter()
            .map(|BuiltIn(name, pattern, check)| Detector {
                name: (*name).to_owned(),
                regex: Regex::new(pattern).expect("built-in patterns compile"),
                check: *check,
            })
            .collect();
        for pattern in config.patterns {
            let regex = Regex::new(&pattern.regex)
                .map_err(|e| invalid(format!("pattern '{}': {e}", pattern.name)))?;
            detectors.push(Detector {
                name: pattern.name,
                regex,
                check: None,
            });
        }
        Ok(Self {
            methods: config.methods,
            detectors,
            replacement: config.replacement,
        })
    }

    /// The methods whose answers (and notifications) are scanned.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// The message with every finding replaced, or `None` when there is nothing to redact.
    pub fn redact_message(&self, json: &str) -> Result<Option<Redacted>, String> {
        let mut message: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut found = BTreeMap::new();
        if let Some(object) = message.as_object_mut() {
            for part in ["result", "error", "params"] {
                if let Some(value) = object.get_mut(part) {
                    self.redact_value(value, &mut found);
                }
            }
        }
        if found.is_empty() {
            return Ok(None);
        }
        let json = serde_json::to_string(&message).map_err(|e| e.to_string())?;
        Ok(Some(Redacted { json, found }))
    }

    fn redact_value(&self, value: &mut Value, found: &mut BTreeMap<String, usize>) {
        match value {
            Value::String(text) => {
                if let Some(redacted) = self.redact_text(text, found) {
                    *text = redacted;
                }
            }
            Value::Array(items) => items
                .iter_mut()
                .for_each(|item| self.redact_value(item, found)),
            Value::Object(fields) => fields
                .values_mut()
                .for_each(|field| self.redact_value(field, found)),
            _ => {}
        }
    }

    /// The text with every finding replaced, or `None` when nothing was found.
    pub fn redact_text(&self, text: &str, found: &mut BTreeMap<String, usize>) -> Option<String> {
        let mut current: Option<String> = None;
        for detector in &self.detectors {
            let haystack = current.as_deref().unwrap_or(text);
            let mut out = String::new();
            let mut last = 0;
            for captures in detector.regex.captures_iter(haystack) {
                let whole = captures.get(0).expect("group 0 always matches");
                let secret = captures.name("secret").unwrap_or(whole);
                if detector.check.is_some_and(|check| !check(secret.as_str())) {
                    continue;
                }
                out.push_str(&haystack[last..secret.start()]);
                out.push_str(&self.replacement.replace("{name}", &detector.name));
                last = secret.end();
                *found.entry(detector.name.clone()).or_default() += 1;
            }
            if last > 0 {
                out.push_str(&haystack[last..]);
                current = Some(out);
            }
        }
        current
    }
}

/// The Luhn checksum that every payment card number satisfies.
fn luhn(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2 == 1, d * 2) {
            (true, doubled) if doubled > 9 => doubled - 9,
            (true, doubled) => doubled,
            (false, _) => d,
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(config: &str) -> Redactor {
        Redactor::from_json(config).unwrap()
    }

    fn redact(text: &str) -> String {
        redactor("{}")
            .redact_text(text, &mut BTreeMap::new())
            .unwrap_or_else(|| text.to_owned())
    }

    #[test]
    fn finds_credentials() {
        assert_eq!(
            redact("key AKIAIOSFODNN7EXAMPLE here"),
            "key [REDACTED:aws-access-key] here"
        );
        assert_eq!(
            redact("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "aws_secret_access_key = [REDACTED:aws-secret-key]"
        );
        assert_eq!(
            redact("token ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            "token [REDACTED:github-token]"
        );
        assert_eq!(
            redact("Authorization: Bearer abcdefghijklmnopqrstuvwxyz.123"),
            "Authorization: Bearer [REDACTED:bearer-token]"
        );
        assert_eq!(
            redact(r#"{"password": "hunter22"}"#),
            r#"{"password": "[REDACTED:password]"}"#
        );
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----";
        assert_eq!(redact(&format!("a {key} b")), "a [REDACTED:private-key] b");
        assert_eq!(
            redact(
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
            ),
            "[REDACTED:jwt]"
        );
    }

    #[test]
    fn finds_personal_data_and_checks_card_numbers() {
        assert_eq!(
            redact("mail ada@example.org now"),
            "mail [REDACTED:email] now"
        );
        assert_eq!(
            redact("card 4111 1111 1111 1111."),
            "card [REDACTED:credit-card]."
        );
        // Not a valid card number (Luhn): an order number stays.
        assert_eq!(
            redact("order 4111 1111 1111 1112"),
            "order 4111 1111 1111 1112"
        );
        assert_eq!(redact("ssn 123-45-6789"), "ssn [REDACTED:us-ssn]");
        assert_eq!(redact("not an ssn 000-45-6789"), "not an ssn 000-45-6789");
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        for text in [
            "Hello, world",
            "version 1.2.3-beta",
            "sum: 42",
            "see https://example.org/a",
        ] {
            assert_eq!(
                redactor("{}").redact_text(text, &mut BTreeMap::new()),
                None,
                "{text}"
            );
        }
    }

    #[test]
    fn redacts_every_string_of_an_answer_and_counts() {
        let message = r#"{"jsonrpc":"2.0","id":4,"result":{"content":[{"type":"text","text":"AKIAIOSFODNN7EXAMPLE and bob@example.com"}],"structuredContent":{"owner":"eve@example.com"}}}"#;
        let redacted = redactor("{}").redact_message(message).unwrap().unwrap();
        let value: Value = serde_json::from_str(&redacted.json).unwrap();
        assert_eq!(
            value["result"]["content"][0]["text"],
            "[REDACTED:aws-access-key] and [REDACTED:email]"
        );
        assert_eq!(
            value["result"]["structuredContent"]["owner"],
            "[REDACTED:email]"
        );
        assert_eq!(value["id"], 4);
        assert_eq!(redacted.summary(), "3 findings (aws-access-key, email x2)");
        let clean = r#"{"jsonrpc":"2.0","id":4,"result":{"content":[]}}"#;
        assert!(redactor("{}").redact_message(clean).unwrap().is_none());
    }

    #[test]
    fn takes_selected_detectors_custom_patterns_and_replacement() {
        let redactor = redactor(
            r#"{"detectors":["email"],"patterns":[{"name":"ticket","regex":"TCK-(?P<secret>[0-9]{6})"}],"replacement":"<{name}>"}"#,
        );
        let mut found = BTreeMap::new();
        assert_eq!(
            redactor.redact_text("AKIAIOSFODNN7EXAMPLE a@b.io TCK-123456", &mut found),
            Some("AKIAIOSFODNN7EXAMPLE <email> TCK-<ticket>".to_owned())
        );
        assert!(
            Redactor::from_json(r#"{"detectors":["nope"]}"#)
                .is_err_and(|e| e.contains("unknown detector 'nope'"))
        );
        assert!(Redactor::from_json(r#"{"patterns":[{"name":"x","regex":"("}]}"#).is_err());
        assert!(Redactor::from_json(r#"{"colour":1}"#).is_err());
    }
}
