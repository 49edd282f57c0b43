//! `counter`: a membrane interceptor that counts the messages it is given and lets each
//! through. It reads nothing of a message, so a call into it costs what the contract itself
//! costs: `benches/chain.rs` measures that floor with it. Configuration: `{"every": N}` logs
//! the count (at debug) every N messages (0, the default, never logs); `{"work": N}` spins N
//! rounds of busy work per call, a stand-in for a plugin's own work (0 by default; a huge N
//! never returns, as membrane's tests of long calls need); `{"sleep_ms": N}` waits N ms on a
//! WASI timer per call, as a plugin that waits would.

use std::sync::atomic::{AtomicU64, Ordering};

use membrane_plugin::host::{self, Level};
use membrane_plugin::{Action, Filter, Message, Plugin};

pub struct Counter {
    seen: AtomicU64,
    every: u64,
    work: u64,
    sleep_ms: u64,
}

impl Plugin for Counter {
    fn init(config: &str) -> Result<(Self, Vec<Filter>), String> {
        let config: membrane_plugin::serde_json::Value =
            membrane_plugin::serde_json::from_str(config).map_err(|e| e.to_string())?;
        let number = |key: &str| {
            let value = config.get(key).map_or(Some(0), |value| value.as_u64());
            value.ok_or(format!("counter: `{key}` must be a whole number"))
        };
        let counter = Counter {
            seen: AtomicU64::new(0),
            every: number("every")?,
            work: number("work")?,
            sleep_ms: number("sleep_ms")?,
        };
        // Everything: an empty filter wants every message.
        Ok((counter, vec![Filter::default()]))
    }

    fn intercept(&self, _message: &Message) -> Action {
        let mut spun = 0u64;
        for round in 0..self.work {
            spun = std::hint::black_box(spun ^ round);
        }
        if self.sleep_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
        }
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
