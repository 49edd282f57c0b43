//! The limits and the counting, over a [`Counter`] so they can be tested natively: each call
//! increments the counters it falls under (in all, its tool's, the current window's) and is
//! refused when one of them goes over its limit. Refused calls count too, so a client that
//! keeps hammering stays refused.

use std::collections::BTreeMap;

use serde::Deserialize;
use wildmatch::WildMatch;

/// Session-scoped counters.
pub trait Counter {
    /// Adds one to the counter under `key` and returns its new value.
    fn increment(&mut self, key: &str) -> Result<i64, String>;
    fn delete(&mut self, key: &str);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_methods")]
    methods: Vec<String>,
    max_calls: Option<i64>,
    #[serde(default)]
    per_tool: BTreeMap<String, i64>,
    window_secs: Option<u64>,
    max_per_window: Option<i64>,
}

fn default_methods() -> Vec<String> {
    vec!["tools/call".to_owned()]
}

pub struct Limits {
    methods: Vec<String>,
    max_calls: Option<i64>,
    per_tool: Vec<(String, WildMatch, i64)>,
    window: Option<(u64, i64)>,
}

impl Limits {
    pub fn from_json(config: &str) -> Result<Self, String> {
        let invalid = |detail: &str| format!("invalid rate-limit config: {detail}");
        let config: Config = serde_json::from_str(config).map_err(|e| invalid(&e.to_string()))?;
        let window = match (config.window_secs, config.max_per_window) {
            (Some(0), _) => return Err(invalid("window_secs must be at least 1")),
            (Some(secs), Some(max)) => Some((secs, max)),
            (None, None) => None,
            _ => return Err(invalid("window_secs and max_per_window go together")),
        };
        if config.max_calls.is_none() && config.per_tool.is_empty() && window.is_none() {
            return Err(invalid(
                "set at least one of max_calls, per_tool, window_secs",
            ));
        }
        Ok(Self {
            methods: config.methods,
            max_calls: config.max_calls,
            per_tool: config
                .per_tool
                .into_iter()
                .map(|(glob, max)| (glob.clone(), WildMatch::new(&glob), max))
                .collect(),
            window,
        })
    }

    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    pub fn needs_clock(&self) -> bool {
        self.window.is_some()
    }

    /// Whether a budget is kept per tool, so `check` needs the call's tool.
    pub fn counts_tools(&self) -> bool {
        !self.per_tool.is_empty()
    }

    /// Counts the request (a `tools/call` of `tool`, when it is one) and says why it is
    /// refused, if it is.
    pub fn check(
        &self,
        tool: Option<&str>,
        now_secs: u64,
        counter: &mut dyn Counter,
    ) -> Result<Option<String>, String> {
        if let Some(max) = self.max_calls
            && counter.increment("calls")? > max
        {
            return Ok(Some(format!(
                "call budget exhausted: {max} calls per session"
            )));
        }
        if !self.per_tool.is_empty()
            && let Some(tool) = tool
        {
            for (glob, pattern, max) in &self.per_tool {
                if pattern.matches(tool) && counter.increment(&format!("tool:{glob}"))? > *max {
                    return Ok(Some(format!(
                        "call budget exhausted for tool '{tool}': {max} calls per session"
                    )));
                }
            }
        }
        if let Some((secs, max)) = self.window {
            let window = now_secs / secs;
            counter.delete(&format!("window:{}", window.wrapping_sub(1)));
            if counter.increment(&format!("window:{window}"))? > max {
                return Ok(Some(format!(
                    "rate limit exceeded: {max} calls per {secs} s; try again later"
                )));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Memory(HashMap<String, i64>);

    impl Counter for Memory {
        fn increment(&mut self, key: &str) -> Result<i64, String> {
            let value = self.0.entry(key.to_owned()).or_default();
            *value += 1;
            Ok(*value)
        }
        fn delete(&mut self, key: &str) {
            self.0.remove(key);
        }
    }

    /// A `tools/call` of `tool`, as `check` sees it.
    fn call(tool: &str) -> Option<&str> {
        Some(tool)
    }

    #[test]
    fn refuses_calls_beyond_the_session_budget() {
        let limits = Limits::from_json(r#"{"max_calls":2}"#).unwrap();
        let mut counter = Memory::default();
        assert_eq!(limits.check(call("a"), 0, &mut counter), Ok(None));
        assert_eq!(limits.check(call("b"), 0, &mut counter), Ok(None));
        let refused = limits.check(call("a"), 0, &mut counter).unwrap().unwrap();
        assert_eq!(refused, "call budget exhausted: 2 calls per session");
        // A fresh session (counter) starts again.
        assert_eq!(limits.check(call("a"), 0, &mut Memory::default()), Ok(None));
    }

    #[test]
    fn counts_tools_by_glob() {
        let limits = Limits::from_json(r#"{"per_tool":{"search_*":1}}"#).unwrap();
        let mut counter = Memory::default();
        assert_eq!(limits.check(call("search_web"), 0, &mut counter), Ok(None));
        assert_eq!(limits.check(call("echo"), 0, &mut counter), Ok(None));
        assert_eq!(limits.check(call("echo"), 0, &mut counter), Ok(None));
        let refused = limits
            .check(call("search_docs"), 0, &mut counter)
            .unwrap()
            .unwrap();
        assert!(refused.contains("'search_docs'"), "{refused}");
    }

    #[test]
    fn windows_start_afresh_and_forget_the_old_one() {
        let limits = Limits::from_json(r#"{"window_secs":10,"max_per_window":1}"#).unwrap();
        assert!(limits.needs_clock());
        let mut counter = Memory::default();
        assert_eq!(limits.check(call("a"), 100, &mut counter), Ok(None));
        assert!(
            limits
                .check(call("a"), 105, &mut counter)
                .unwrap()
                .is_some()
        );
        assert_eq!(limits.check(call("a"), 110, &mut counter), Ok(None));
        assert_eq!(
            counter.0.len(),
            1,
            "the previous window's counter is deleted"
        );
    }

    #[test]
    fn refuses_configurations_that_limit_nothing_or_half() {
        for bad in [
            "{}",
            r#"{"window_secs":5}"#,
            r#"{"window_secs":0,"max_per_window":1}"#,
            r#"{"max_call":1}"#,
        ] {
            assert!(Limits::from_json(bad).is_err(), "{bad}");
        }
    }
}
