//! `tool-guard`: a membrane interceptor that blocks `tools/call` requests by tool name and by
//! argument content, and hides refused tools from `tools/list` results. The decisions live in
//! [`policy`]; this file wires them to membrane through the SDK (`membrane-plugin`).
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

use membrane_plugin::host::{self, Level};
use membrane_plugin::{Action, Direction, Filter, Message, MessageKind, Plugin};

use crate::policy::{Caller, Policy};

/// The guard: its policy, as `init` read it.
pub struct ToolGuard(Policy);

impl ToolGuard {
    /// The session's principal, asked of membrane only when the policy depends on it.
    fn caller(&self, message: &Message) -> Option<Caller> {
        if !self.0.asks_who() {
            return None;
        }
        message.principal().map(|principal| Caller {
            subject: principal.subject,
            claims: serde_json::Value::Object(principal.claims),
        })
    }
}

impl Plugin for ToolGuard {
    fn init(config: &str) -> Result<(Self, Vec<Filter>), String> {
        let policy = Policy::from_json(config)?;
        let mut filters = vec![Filter::requests(["tools/call"])];
        if policy.filters_lists() {
            filters.push(Filter {
                methods: vec!["tools/list".to_owned()],
                directions: vec![Direction::ServerToClient],
                kinds: vec![MessageKind::Response],
            });
        }
        Ok((ToolGuard(policy), filters))
    }

    fn intercept(&self, message: &Message) -> Action {
        let policy = &self.0;
        // `init`'s filters let through only `tools/call` requests and `tools/list` results, so
        // the kind tells them apart: one question to membrane instead of three.
        match message.kind() {
            MessageKind::Request => {
                // Only the tool's name is copied in; the arguments only when a pattern applies.
                let arguments = || message.pointer("/params/arguments");
                let caller = self.caller(message);
                match policy.check(message.tool_name().as_deref(), arguments, caller.as_ref()) {
                    Some(reason) => {
                        let line = format!("blocked frame {}: {reason}", message.frame_id());
                        host::log(Level::Debug, &line);
                        Action::Block(reason)
                    }
                    None => Action::Continue,
                }
            }
            MessageKind::Response if policy.filters_lists() => policy
                .filter_list(&message.json(), self.caller(message).as_ref())
                .map_or(Action::Continue, Action::Modify),
            // Outside the filters declared by `init`: not delivered, passed on if it is.
            _ => Action::Continue,
        }
    }
}

membrane_plugin::export!(ToolGuard);

#[cfg(test)]
mod tests {
    use membrane_plugin::testing;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_plugin_blocks_denied_calls_and_hides_denied_tools() {
        let (guard, filters) = ToolGuard::init(r#"{"deny": ["delete_*"]}"#).unwrap();
        assert_eq!(
            filters.len(),
            2,
            "tools/call requests and tools/list results"
        );
        let call = testing::tool_call("delete_file", json!({"path": "/tmp/x"}));
        assert!(matches!(guard.intercept(&call), Action::Block(_)));
        let fine = testing::tool_call("echo", json!({"message": "hi"}));
        assert_eq!(guard.intercept(&fine), Action::Continue);
        let list = testing::response(
            "tools/list",
            json!({"tools": [{"name": "echo"}, {"name": "delete_file"}]}),
        );
        let Action::Modify(listed) = guard.intercept(&list) else {
            panic!("the denied tool was not hidden");
        };
        assert!(
            listed.contains("echo") && !listed.contains("delete_file"),
            "{listed}"
        );
    }
}
