//! `approval`: a membrane interceptor that holds chosen `tools/call` requests for a human's
//! approval. A call whose tool name matches `tools` (and, when `arguments` is set, whose named
//! arguments all match their regexes) gets `pause(timeout_ms)`; membrane's admin API then
//! releases or refuses it. Everything else continues. What happens when nobody settles the call
//! before the timeout is not decided by the plugin (the WIT `pause` carries only a timeout): the
//! operator sets `on_timeout = "deny" | "approve"` in the plugin's `[[plugins]]` entry on the
//! host side. The decisions live in [`policy`]; this file only wires them to the `interceptor`
//! world, and only on wasm32, so that the policy's tests run natively.
//!
//! Configuration (unknown fields are refused):
//!
//! ```toml
//! [[plugins]]
//! path = "approval.wasm"
//! on_timeout = "deny"            # or "approve": what a held call becomes when nobody settles it
//! [plugins.config]
//! tools = ["delete_*", "send_email"]  # required, non-empty: tool-name globs (`*`, `?`)
//! arguments = { path = "^/etc/" }     # optional: every named argument must exist and match
//!                                     # (strings as they are, other values as compact JSON)
//! timeout_ms = 600000            # longest hold (default 300000, > 0); not `[[plugins]] timeout_ms`
//! ```

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod plugin {
    use std::sync::OnceLock;

    use crate::policy::Policy;

    wit_bindgen::generate!({ path: "../../wit", world: "interceptor" });

    use membrane::interceptor::host::{Level, log};
    use membrane::interceptor::types::{Direction, MessageKind};

    /// This instance's policy, set once by `init`.
    static POLICY: OnceLock<Policy> = OnceLock::new();

    struct Approval;

    impl Guest for Approval {
        fn init(config: String) -> Result<Vec<Filter>, String> {
            let policy = Policy::from_json(&config)?;
            POLICY
                .set(policy)
                .map_err(|_| "approval: init called twice".to_owned())?;
            Ok(vec![Filter {
                methods: vec!["tools/call".to_owned()],
                directions: vec![Direction::ClientToServer],
                kinds: vec![MessageKind::Request],
            }])
        }

        fn intercept(message: Message) -> Action {
            // Fail closed: a gate that was never configured lets nothing through.
            let Some(policy) = POLICY.get() else {
                return Action::Block("approval is not initialised".to_owned());
            };
            // Anything outside the filter declared by `init` is passed on if it is delivered.
            let client_request = matches!(
                (message.kind, message.direction),
                (MessageKind::Request, Direction::ClientToServer)
            );
            match policy.check(client_request, message.method.as_deref(), &message.json) {
                Some(millis) => {
                    log(
                        Level::Info,
                        &format!(
                            "holding frame {} for approval (at most {millis} ms)",
                            message.frame_id
                        ),
                    );
                    Action::Pause(millis)
                }
                None => Action::Continue,
            }
        }
    }

    export!(Approval);
}
