"""The policy of {{name}}: which `tools/call` requests to refuse. Configuration
(`[plugins.config]`): `deny = ["tool", ...]`, the tools to refuse by exact name."""

import json


class Policy:
    def __init__(self, config_json: str):
        """Raises ValueError when the configuration is not valid."""
        config = json.loads(config_json or "{}")
        if not isinstance(config, dict):
            raise ValueError("the configuration must be a table")
        unknown = set(config) - {"deny"}
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
        deny = config.get("deny", [])
        if not isinstance(deny, list) or not all(isinstance(name, str) for name in deny):
            raise ValueError("`deny` must list tool names")
        self.deny = set(deny)

    def check_call(self, message_json: str):
        """Why a `tools/call` request is refused, or None. The call is parsed, never searched
        as text; `params.arguments` holds its arguments, for rules about them."""
        try:
            params = json.loads(message_json).get("params") or {}
        except ValueError:
            return "a tools/call that is not JSON"
        tool = params.get("name")
        if not isinstance(tool, str):
            return "a tools/call without a tool name"
        return f"tool '{tool}' is not allowed here" if tool in self.deny else None
