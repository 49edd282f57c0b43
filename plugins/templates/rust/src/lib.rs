//! `{{name}}`: a membrane plugin. The decisions live in [`policy`], plain Rust; this file
//! wires them to membrane with its SDK (`membrane-plugin/`), and `cargo test` runs both
//! natively.
//!
//! Build: `cargo build --release --target wasm32-wasip2`
//! Check: `membrane plugin check target/wasm32-wasip2/release/{{name_}}.wasm`

pub mod policy;

use membrane_plugin::{Action, Filter, Message, Plugin};

use crate::policy::Policy;

impl Plugin for Policy {
    fn init(config: &str) -> Result<(Self, Vec<Filter>), String> {
        Ok((
            Policy::from_json(config)?,
            vec![Filter::requests(["tools/call"])],
        ))
    }

    fn intercept(&self, message: &Message) -> Action {
        match message.tool_call() {
            Some(call) => self
                .check_call(&call)
                .map_or(Action::Continue, Action::Block),
            // A tools/call whose tool name is not a string is refused, not waved through.
            None => Action::block("a tools/call without a tool name"),
        }
    }
}

membrane_plugin::export!(Policy);

#[cfg(test)]
mod tests {
    use membrane_plugin::testing;
    use serde_json::json;

    use super::*;

    #[test]
    fn the_plugin_refuses_what_the_policy_denies() {
        let (plugin, _) = Policy::init(r#"{"deny": ["delete_file"]}"#).unwrap();
        let call = testing::tool_call("delete_file", json!({"path": "/tmp/x"}));
        assert!(matches!(plugin.intercept(&call), Action::Block(_)));
        let call = testing::tool_call("echo", json!({"message": "hi"}));
        assert_eq!(plugin.intercept(&call), Action::Continue);
    }
}
