//! `rate-limit`: a membrane interceptor that gives each session a budget of calls: in all, per
//! tool, and per time window. Counts live in the session's key-value store (capability
//! `session-kv`), so every instance of the plugin sees the same numbers and they end with the
//! session. A window needs the real time (capability `clock`). The rules live in [`limits`];
//! this file wires them to membrane through the SDK (`membrane-plugin`).
//!
//! Configuration (every field optional; unknown fields are refused):
//!
//! ```toml
//! methods = ["tools/call"]          # the requests that count (the default)
//! max_calls = 100                   # per session, in all
//! per_tool = { "search_*" = 10 }    # per session, for tools/call whose tool name matches
//! window_secs = 60                  # with max_per_window: at most that many calls per window
//! max_per_window = 20
//! ```

pub mod limits;

use std::time::{SystemTime, UNIX_EPOCH};

use membrane_plugin::host::{self, Level, session_kv};
use membrane_plugin::{Action, Filter, Message, Plugin};

use crate::limits::{Counter, Limits};

/// The session's counters, in membrane's session store (natively, the SDK's in-memory one).
struct SessionCounter;

impl Counter for SessionCounter {
    fn increment(&mut self, key: &str) -> Result<i64, String> {
        session_kv::increment(key, 1)
    }
    fn delete(&mut self, key: &str) {
        session_kv::delete(key)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The budget, as `init` read it.
pub struct RateLimit(Limits);

impl Plugin for RateLimit {
    fn init(config: &str) -> Result<(Self, Vec<Filter>), String> {
        let limits = Limits::from_json(config)?;
        if limits.needs_clock() && now_secs() == 0 {
            return Err(
                "rate-limit: `window_secs` needs the real time: grant the plugin the 'clock' capability"
                    .to_owned(),
            );
        }
        let filter = Filter::requests(limits.methods().iter().cloned());
        Ok((RateLimit(limits), vec![filter]))
    }

    fn intercept(&self, message: &Message) -> Action {
        // The tool's name is asked of membrane only when a budget is per tool.
        let tool = self.0.counts_tools().then(|| message.tool_name()).flatten();
        match self
            .0
            .check(tool.as_deref(), now_secs(), &mut SessionCounter)
        {
            Ok(None) => Action::Continue,
            Ok(Some(reason)) => {
                host::log(
                    Level::Info,
                    &format!("session {}: {reason}", message.session_id()),
                );
                Action::Block(reason)
            }
            // Fail closed: a count that cannot be kept is a budget that cannot be enforced.
            Err(e) => Action::Block(format!("rate-limit cannot count this call: {e}")),
        }
    }
}

membrane_plugin::export!(RateLimit);

#[cfg(test)]
mod tests {
    use membrane_plugin::testing;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_budget_is_kept_in_the_session_store() {
        testing::reset();
        let (limit, _) = RateLimit::init(r#"{"max_calls": 2}"#).unwrap();
        let call = testing::tool_call("echo", json!({}));
        assert_eq!(limit.intercept(&call), Action::Continue);
        assert_eq!(limit.intercept(&call), Action::Continue);
        assert!(matches!(limit.intercept(&call), Action::Block(_)));
        // Another instance shares the session's budget.
        let (other, _) = RateLimit::init(r#"{"max_calls": 2}"#).unwrap();
        assert!(matches!(other.intercept(&call), Action::Block(_)));
        testing::reset();
        assert_eq!(other.intercept(&call), Action::Continue);
    }
}
