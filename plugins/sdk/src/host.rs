//! What membrane offers a plugin: its log, and the session's key-value store (capability
//! `session-kv`, which the operator grants). The session's principal is read off the message
//! ([`crate::Message::principal`]). On wasm32 these call membrane; natively they work in
//! memory, per thread, for unit tests (see [`crate::testing`]).

/// A log line's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Who opened the session, when membrane authenticates its HTTP clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// A JWT's `sub`, or the name given to a static token.
    pub subject: String,
    pub issuer: Option<String>,
    pub scopes: Vec<String>,
    /// The claims the operator passes on, as a JSON object.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Writes a line to membrane's log, tagged with the plugin's name.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::membrane::interceptor::host as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        wit::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    native::log(level, message);
}

/// State kept with the current message's session, private to the plugin, shared by all its
/// instances, and dropped when the session ends. Bounded by membrane: writes beyond the bound
/// fail.
pub mod session_kv {
    #[cfg(target_arch = "wasm32")]
    use crate::bindings::membrane::interceptor::session_kv as wit;

    /// The value under `key`, if any.
    pub fn get(key: &str) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        return wit::get(key);
        #[cfg(not(target_arch = "wasm32"))]
        super::native::with_kv(|kv| kv.get(key).cloned())
    }

    /// Stores `value` under `key`.
    pub fn set(key: &str, value: &str) -> Result<(), String> {
        #[cfg(target_arch = "wasm32")]
        return wit::set(key, value);
        #[cfg(not(target_arch = "wasm32"))]
        super::native::with_kv(|kv| {
            kv.insert(key.to_owned(), value.to_owned());
            Ok(())
        })
    }

    /// Removes `key` (a missing key is not an error).
    pub fn delete(key: &str) {
        #[cfg(target_arch = "wasm32")]
        wit::delete(key);
        #[cfg(not(target_arch = "wasm32"))]
        super::native::with_kv(|kv| {
            kv.remove(key);
        })
    }

    /// Adds `delta` to the integer under `key` (missing counts as 0), atomically across the
    /// plugin's instances, and returns the new value.
    pub fn increment(key: &str, delta: i64) -> Result<i64, String> {
        #[cfg(target_arch = "wasm32")]
        return wit::increment(key, delta);
        #[cfg(not(target_arch = "wasm32"))]
        super::native::with_kv(|kv| {
            let now = match kv.get(key) {
                Some(value) => value
                    .parse::<i64>()
                    .map_err(|_| format!("the value under `{key}` is not an integer"))?,
                None => 0,
            };
            let next = now
                .checked_add(delta)
                .ok_or_else(|| format!("the value under `{key}` would overflow"))?;
            kv.insert(key.to_owned(), next.to_string());
            Ok(next)
        })
    }
}

/// The host's services in memory, for native tests.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::{Level, Principal};

    #[derive(Default)]
    struct Host {
        kv: HashMap<String, String>,
        logs: Vec<(Level, String)>,
        principal: Option<Principal>,
    }

    thread_local! {
        static HOST: RefCell<Host> = RefCell::default();
    }

    pub fn reset() {
        HOST.with(|host| *host.borrow_mut() = Host::default());
    }

    pub fn log(level: Level, message: &str) {
        HOST.with(|host| host.borrow_mut().logs.push((level, message.to_owned())));
    }

    pub fn logs() -> Vec<(Level, String)> {
        HOST.with(|host| host.borrow().logs.clone())
    }

    pub fn principal() -> Option<Principal> {
        HOST.with(|host| host.borrow().principal.clone())
    }

    pub fn set_principal(principal: Option<Principal>) {
        HOST.with(|host| host.borrow_mut().principal = principal);
    }

    pub fn with_kv<T>(f: impl FnOnce(&mut HashMap<String, String>) -> T) -> T {
        HOST.with(|host| f(&mut host.borrow_mut().kv))
    }
}
