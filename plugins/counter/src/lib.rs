//! `counter`: a membrane interceptor that counts the messages it is given and lets each
//! through. It reads nothing of a message, so a call into it costs what the contract itself
//! costs: `benches/chain.rs` measures that floor with it. Configuration: `{"every": N}` logs
//! the count (at debug) every N messages; 0, the default, never logs.

use std::sync::atomic::{AtomicU64, Ordering};

use membrane_plugin::host::{self, Level};
use membrane_plugin::{Action, Filter, Message, Plugin};

pub struct Counter {
    seen: AtomicU64,
    every: u64,
}

impl Plugin for Counter {
    fn init(config: &str) -> Result<(Self, Vec<Filter>), String> {
        let config: membrane_plugin::serde_json::Value =
            membrane_plugin::serde_json::from_str(config).map_err(|e| e.to_string())?;
        let every = config.get("every").map_or(Some(0), |every| every.as_u64());
        let every = every.ok_or("counter: `every` must be a whole number")?;
        // Everything: an empty filter wants every message.
        Ok((
            Counter {
                seen: AtomicU64::new(0),
                every,
            },
            vec![Filter::default()],
        ))
    }

    fn intercept(&self, _message: &Message) -> Action {
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if self.every != 0 && seen.is_multiple_of(self.every) {
            host::log(Level::Debug, &format!("{seen} messages"));
        }
        Action::Continue
    }
}

membrane_plugin::export!(Counter);

#[cfg(test)]
mod tests {
    use membrane_plugin::serde_json::json;
    use membrane_plugin::testing;

    use super::*;

    #[test]
    fn counts_and_logs_every_nth_message() {
        testing::reset();
        let (counter, filters) = Counter::init(r#"{"every": 2}"#).unwrap();
        assert_eq!(filters, [Filter::default()]);
        for _ in 0..5 {
            let ping = testing::request("ping", json!({}));
            assert_eq!(counter.intercept(&ping), Action::Continue);
        }
        let logged: Vec<String> = testing::logs().into_iter().map(|(_, line)| line).collect();
        assert_eq!(logged, ["2 messages", "4 messages"]);
        assert!(Counter::init(r#"{"every": "often"}"#).is_err());
    }
}
