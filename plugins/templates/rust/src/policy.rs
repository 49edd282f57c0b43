//! The policy: which `tools/call` requests to refuse. Configuration (`[plugins.config]`):
//! `deny = ["tool", ...]`, the tools to refuse by exact name.

use membrane_plugin::ToolCall;
use serde_json::Value;

pub struct Policy {
    deny: Vec<String>,
}

impl Policy {
    /// The policy the configuration (JSON text) describes, or why it is not valid.
    pub fn from_json(config: &str) -> Result<Self, String> {
        let config: Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        let Some(table) = config.as_object() else {
            return Err("the configuration must be a table".into());
        };
        if let Some(unknown) = table.keys().find(|key| *key != "deny") {
            return Err(format!("unknown field `{unknown}`, expected `deny`"));
        }
        let deny = match table.get("deny") {
            None => Vec::new(),
            Some(Value::Array(names)) => names
                .iter()
                .map(|name| name.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or("`deny` must list tool names")?,
            Some(_) => return Err("`deny` must list tool names".into()),
        };
        Ok(Self { deny })
    }

    /// Why a tool call is refused, or `None` to let it through. The SDK read the call from the
    /// parsed message, so `"name": "x"` and `"name":"x"` are one call; `call.arguments` holds
    /// its arguments, for rules about them (`call.mentions("rm -rf")` looks in every string).
    pub fn check_call(&self, call: &ToolCall) -> Option<String> {
        let tool = &call.name;
        self.deny
            .iter()
            .any(|denied| denied == tool)
            .then(|| format!("tool '{tool}' is not allowed here"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_denied_tools_only() {
        let policy = Policy::from_json(r#"{"deny": ["delete_file"]}"#).unwrap();
        let call = |name: &str| ToolCall {
            name: name.into(),
            arguments: Default::default(),
        };
        assert!(policy.check_call(&call("delete_file")).is_some());
        assert_eq!(policy.check_call(&call("echo")), None);
        assert!(Policy::from_json(r#"{"denied": []}"#).is_err());
    }
}
