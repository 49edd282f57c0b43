//! `legacy-0-1-1`: a test plugin written with raw bindings against the frozen 0.1.1 contract
//! (`wit/released/0.1.1`), as plugins were before 0.2. membrane's tests load it beside 0.2
//! plugins to prove the older line keeps working: it counts a session's `tools/call` requests
//! in `session-kv` (new in 0.1.1) and blocks those whose text names the tool in its
//! configuration (`{"block": "NAME"}`), saying which call of the session it was.

#[cfg(target_arch = "wasm32")]
mod plugin {
    use std::sync::OnceLock;

    wit_bindgen::generate!({ path: "../../wit/released/0.1.1", world: "stateful-interceptor" });

    use membrane::interceptor::session_kv;
    use membrane::interceptor::types::{Direction, MessageKind};

    static BLOCKED: OnceLock<String> = OnceLock::new();

    struct Legacy;

    impl Guest for Legacy {
        fn init(config: String) -> Result<Vec<Filter>, String> {
            // The config is `{"block": "NAME"}`: read by hand, this plugin has no JSON parser.
            let name = config
                .split('"')
                .skip_while(|part| *part != "block")
                .nth(2)
                .ok_or("legacy-0-1-1: config must be {\"block\": \"NAME\"}")?;
            BLOCKED.set(format!("\"name\":\"{name}\"")).ok();
            Ok(vec![Filter {
                methods: vec!["tools/call".into()],
                directions: vec![Direction::ClientToServer],
                kinds: vec![MessageKind::Request],
            }])
        }

        fn intercept(message: Message) -> Action {
            let call = session_kv::increment("calls", 1).unwrap_or(-1);
            match BLOCKED.get() {
                Some(blocked) if message.json.replace(' ', "").contains(blocked.as_str()) => {
                    Action::Block(format!(
                        "blocked by a 0.1.1 plugin (call {call} of the session)"
                    ))
                }
                _ => Action::Continue,
            }
        }
    }

    export!(Legacy);
}
