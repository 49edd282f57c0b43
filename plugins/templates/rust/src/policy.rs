//! The policy: which `tools/call` requests to refuse. Configuration (`[plugins.config]`):
//! `deny = ["tool", ...]`, the tools to refuse by exact name.

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

    /// Why a `tools/call` request (its JSON text) is refused, or `None` to let it through.
    /// The call is parsed, never searched as text: `"name": "x"` and `"name":"x"` are one call.
    pub fn check_call(&self, json: &str) -> Option<String> {
        let Ok(call) = serde_json::from_str::<Value>(json) else {
            return Some("a tools/call that is not JSON".into());
        };
        let Some(tool) = call["params"]["name"].as_str() else {
            return Some("a tools/call without a tool name".into());
        };
        // `call["params"]["arguments"]` holds the arguments, for rules about them.
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
        let call = |json: &str| policy.check_call(json);
        assert!(call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name": "delete_file"}}"#).is_some());
        assert_eq!(call(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}"#), None);
        assert!(Policy::from_json(r#"{"denied": []}"#).is_err());
    }
}
