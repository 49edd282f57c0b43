//! `approval`: a membrane interceptor that holds chosen `tools/call` requests for a human's
//! approval. A call whose tool name matches `tools` (and, when `arguments` is set, whose named
//! arguments all match their regexes) gets `pause(timeout_ms)`; membrane's admin API then
//! releases or refuses it. Everything else continues. What happens when nobody settles the call
//! before the timeout is not decided by the plugin (the WIT `pause` carries only a timeout): the
//! operator sets `on_timeout = "deny" | "approve"` in the plugin's `[[plugins]]` entry on the
//! host side. The decisions live in [`policy`]; this file wires them to membrane through the
//! SDK (`membrane-plugin`).
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

use membrane_plugin::host::{self, Level};
use membrane_plugin::{Action, Filter, Message, Plugin};

use crate::policy::Policy;

/// The gate: its policy, as `init` read it.
pub struct Approval(Policy);

impl Plugin for Approval {
    fn init(config: &str) -> Result<(Self, Vec<Filter>), String> {
        let policy = Policy::from_json(config)?;
        Ok((Approval(policy), vec![Filter::requests(["tools/call"])]))
    }

    fn intercept(&self, message: &Message) -> Action {
        // Anything outside the filter declared by `init` is passed on if it is delivered.
        let held = self.0.check(
            message.is_client_request(),
            message.method().as_deref(),
            &message.json(),
        );
        match held {
            Some(millis) => {
                let line = format!(
                    "holding frame {} for approval (at most {millis} ms)",
                    message.frame_id()
                );
                host::log(Level::Info, &line);
                Action::Pause(millis)
            }
            None => Action::Continue,
        }
    }
}

membrane_plugin::export!(Approval);
