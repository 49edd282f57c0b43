//! `tool-guard`: a membrane interceptor that blocks `tools/call` requests by tool name and by
//! argument content, and hides refused tools from `tools/list` results. The decisions live in
//! [`policy`]; this file only wires them to the `interceptor` world, and only on wasm32, so
//! that the policy's tests run natively.
//!
//! Configuration (every field optional; unknown fields are refused):
//!
//! ```toml
//! deny = ["delete_*", "shell"]   # tool-name globs (`*`, `?`) that are blocked; an entry may
//!                                # give its own reason: { tools = ["drop_*"], reason = "..." }
//! allow = ["echo", "get_*"]      # if non-empty, only these may be called; deny still wins
//! deny_arguments = [{ tool = "*", pattern = "rm\\s+-rf", reason = "no rm -rf" }]  # regex on
//!                                # every string in arguments; `reason` optional
//! hide_denied = true             # drop blocked tools from `tools/list` results (default)
//! # Tools only some principals may call (membrane's `[auth]`; nobody without it):
//! only = [{ tools = ["deploy_*"], claim = "groups", any_of = ["release"], reason = "..." },
//!         { tools = ["admin_*"], subjects = ["alice"] }]
//! ```

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod plugin {
    use std::sync::OnceLock;

    use crate::policy::{Caller, Policy};

    wit_bindgen::generate!({ path: "../../wit", world: "interceptor" });

    use membrane::interceptor::host::{Level, log};
    use membrane::interceptor::identity;
    use membrane::interceptor::types::{Direction, MessageKind};

    /// The session's principal, asked of membrane only when the policy depends on it.
    fn caller(policy: &Policy) -> Option<Caller> {
        if !policy.asks_who() {
            return None;
        }
        identity::session_principal().map(|principal| Caller {
            subject: principal.subject,
            claims: serde_json::from_str(&principal.claims).unwrap_or_default(),
        })
    }

    /// This instance's policy, set once by `init`.
    static POLICY: OnceLock<Policy> = OnceLock::new();

    struct ToolGuard;

    impl Guest for ToolGuard {
        fn init(config: String) -> Result<Vec<Filter>, String> {
            let policy = Policy::from_json(&config)?;
            let mut filters = vec![Filter {
                methods: vec!["tools/call".to_owned()],
                directions: vec![Direction::ClientToServer],
                kinds: vec![MessageKind::Request],
            }];
            if policy.filters_lists() {
                filters.push(Filter {
                    methods: vec!["tools/list".to_owned()],
                    directions: vec![Direction::ServerToClient],
                    kinds: vec![MessageKind::Response],
                });
            }
            POLICY
                .set(policy)
                .map_err(|_| "tool-guard: init called twice".to_owned())?;
            Ok(filters)
        }

        fn intercept(message: Message) -> Action {
            // Fail closed: a guard that was never configured lets nothing through.
            let Some(policy) = POLICY.get() else {
                return Action::Block("tool-guard is not initialised".to_owned());
            };
            match (message.kind, message.direction, message.method.as_deref()) {
                (MessageKind::Request, Direction::ClientToServer, Some("tools/call")) => {
                    match policy.check_call(&message.json, caller(policy).as_ref()) {
                        Some(reason) => {
                            log(
                                Level::Debug,
                                &format!("blocked frame {}: {reason}", message.frame_id),
                            );
                            Action::Block(reason)
                        }
                        None => Action::Continue,
                    }
                }
                (MessageKind::Response, Direction::ServerToClient, Some("tools/list"))
                    if policy.filters_lists() =>
                {
                    policy
                        .filter_list(&message.json, caller(policy).as_ref())
                        .map_or(Action::Continue, Action::Modify)
                }
                // Outside the filters declared by `init`: not delivered, passed on if it is.
                _ => Action::Continue,
            }
        }
    }

    export!(ToolGuard);
}
