//! `{{name}}`: a membrane plugin. The decisions live in [`policy`], plain Rust that
//! `cargo test` runs natively; this file wires them to membrane's contract, on wasm32 only.
//!
//! Build: `cargo build --release --target wasm32-wasip2`
//! Check: `membrane plugin check target/wasm32-wasip2/release/{{name_}}.wasm`

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod plugin {
    use std::sync::OnceLock;

    use crate::policy::Policy;

    wit_bindgen::generate!({ path: "wit", world: "interceptor" });

    use membrane::interceptor::types::{Direction, MessageKind};

    /// This instance's policy, set once by `init`.
    static POLICY: OnceLock<Policy> = OnceLock::new();

    struct Plugin;

    impl Guest for Plugin {
        fn init(config: String) -> Result<Vec<Filter>, String> {
            let _ = POLICY.set(Policy::from_json(&config)?);
            Ok(vec![Filter {
                methods: vec!["tools/call".into()],
                directions: vec![Direction::ClientToServer],
                kinds: vec![MessageKind::Request],
            }])
        }

        fn intercept(message: Message) -> Action {
            match POLICY.get().and_then(|policy| policy.check_call(&message.json)) {
                Some(reason) => Action::Block(reason),
                None => Action::Continue,
            }
        }
    }

    export!(Plugin);
}
