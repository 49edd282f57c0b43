//! `legacy-0-1-1`: a test plugin written with raw bindings against the frozen 0.1.1 contract
//! (`wit/released/0.1.1`), as plugins were before 0.2. membrane's tests load it beside 0.2
//! plugins to prove the older line keeps working: it counts a session's `tools/call` requests
//! in `session-kv` (new in 0.1.1) and blocks those whose text names the tool in its
//! configuration (`{"block": "NAME"}`), saying which call of the session it was. Configured
//! with `{}`, it only lets calls through, reading nothing: `benches/chain.rs` sets it beside
//! the 0.2 `counter` to measure what each contract line costs a call.

#[cfg(target_arch = "wasm32")]
mod plugin {
    use std::sync::OnceLock;

    wit_bindgen::generate!({ path: "../../wit/released/0.1.1", world: "stateful-interceptor" });

    use membrane::interceptor::session_kv;
    use membrane::interceptor::types::{Direction, MessageKind};

    /// `"name":"NAME"` as the blocked tool's call spells it; none to let everything through.
    static BLOCKED: OnceLock<Option<String>> = OnceLock::new();

    struct Legacy;

    impl Guest for Legacy {
        fn init(config: String) -> Result<Vec<Filter>, String> {
            // The config is `{"block": "NAME"}` or `{}`: read by hand, this plugin has no JSON
            // parser.
            let name = config.split('"').skip_while(|part| *part != "block").nth(2);
            if name.is_none() && config.contains("block") {
                return Err("legacy-0-1-1: config must be {\"block\": \"NAME\"} or {}".into());
            }
            BLOCKED
                .set(name.map(|name| format!("\"name\":\"{name}\"")))
                .ok();
            Ok(vec![Filter {
                methods: vec!["tools/call".into()],
                directions: vec![Direction::ClientToServer],
                kinds: vec![MessageKind::Request],
            }])
        }

        fn intercept(message: Message) -> Action {
            let Some(Some(blocked)) = BLOCKED.get() else {
                return Action::Continue;
            };
            let call = session_kv::increment("calls", 1).unwrap_or(-1);
            if message.json.replace(' ', "").contains(blocked.as_str()) {
                Action::Block(format!(
                    "blocked by a 0.1.1 plugin (call {call} of the session)"
                ))
            } else {
                Action::Continue
            }
        }
    }

    export!(Legacy);
}
