//! `rate-limit`: a membrane interceptor that gives each session a budget of calls: in all, per
//! tool, and per time window. Counts live in the session's key-value store (capability
//! `session-kv`), so every instance of the plugin sees the same numbers and they end with the
//! session. A window needs the real time (capability `clock`). The rules live in [`limits`];
//! this file wires them to the `interceptor` world, and only on wasm32, so that their tests
//! run natively.
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

#[cfg(target_arch = "wasm32")]
mod plugin {
    use std::sync::OnceLock;
    use std::time::{SystemTime, UNIX_EPOCH};

    use crate::limits::{Counter, Limits};

    wit_bindgen::generate!({ path: "../../wit", world: "stateful-interceptor" });

    use membrane::interceptor::host::{Level, log};
    use membrane::interceptor::session_kv;
    use membrane::interceptor::types::{Direction, MessageKind};

    /// This instance's limits, set once by `init`.
    static LIMITS: OnceLock<Limits> = OnceLock::new();

    /// The session's counters, in the host's session store.
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

    struct RateLimit;

    impl Guest for RateLimit {
        fn init(config: String) -> Result<Vec<Filter>, String> {
            let limits = Limits::from_json(&config)?;
            if limits.needs_clock() && now_secs() == 0 {
                return Err(
                    "rate-limit: `window_secs` needs the real time: grant the plugin the 'clock' capability"
                        .to_owned(),
                );
            }
            let filter = Filter {
                methods: limits.methods().to_vec(),
                directions: vec![Direction::ClientToServer],
                kinds: vec![MessageKind::Request],
            };
            LIMITS
                .set(limits)
                .map_err(|_| "rate-limit: init called twice".to_owned())?;
            Ok(vec![filter])
        }

        fn intercept(message: Message) -> Action {
            let Some(limits) = LIMITS.get() else {
                return Action::Block("rate-limit is not initialised".to_owned());
            };
            match limits.check(&message.json, now_secs(), &mut SessionCounter) {
                Ok(None) => Action::Continue,
                Ok(Some(reason)) => {
                    log(
                        Level::Info,
                        &format!("session {}: {reason}", message.session_id),
                    );
                    Action::Block(reason)
                }
                // Fail closed: a count that cannot be kept is a budget that cannot be enforced.
                Err(e) => Action::Block(format!("rate-limit cannot count this call: {e}")),
            }
        }
    }

    export!(RateLimit);
}
