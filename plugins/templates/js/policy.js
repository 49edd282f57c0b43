// The policy of {{name}}: which `tools/call` requests to refuse. Configuration
// (`[plugins.config]`): deny = ["tool", ...], the tools to refuse by exact name.

/** The policy the configuration (JSON text) describes; throws why it is not valid. */
export function parsePolicy(text) {
  const config = JSON.parse(text || "{}");
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw "the configuration must be a table";
  }
  for (const key of Object.keys(config)) {
    if (key !== "deny") throw `unknown field \`${key}\`, expected \`deny\``;
  }
  const deny = config.deny ?? [];
  if (!Array.isArray(deny) || !deny.every((name) => typeof name === "string")) {
    throw "`deny` must list tool names";
  }
  return { deny: new Set(deny) };
}

/** Why a `tools/call` request (its JSON text) is refused, or null. The call is parsed, never
 *  searched as text; `params.arguments` holds its arguments, for rules about them. */
export function checkCall(policy, json) {
  let call;
  try {
    call = JSON.parse(json);
  } catch {
    return "a tools/call that is not JSON";
  }
  const tool = call?.params?.name;
  if (typeof tool !== "string") return "a tools/call without a tool name";
  return policy.deny.has(tool) ? `tool '${tool}' is not allowed here` : null;
}
