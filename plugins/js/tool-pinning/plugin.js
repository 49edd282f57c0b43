// `tool-pinning`, a membrane plugin in JavaScript (componentize-js, world
// `stateful-interceptor`, grants `log` and `session-kv`): rug-pull protection. It pins each
// tool the first time a session lists it and refuses calls to a tool whose definition changed
// since (see pinning.js). Pins live in the session (`session-kv`), so they end with it.
//
// Configuration: unlisted = "allow" (default) or "block": calls to tools this session never
// listed.

import { log } from "membrane:interceptor/host@0.2.0";
import { get, set } from "membrane:interceptor/session-kv@0.2.0";
import { parseConfig, refusal, review } from "./pinning.js";

let config = { unlisted: "allow" };

// The session's state, as pinning.js wants it: a failed write (the session's state is full)
// is logged and leaves that tool unpinned.
const store = {
  get: (key) => get(key) ?? undefined,
  set: (key, value) => {
    try {
      set(key, value);
    } catch (e) {
      log("warn", `cannot keep ${key}: ${e?.payload ?? e}`);
    }
  },
};

export function init(text) {
  config = parseConfig(text);
  return [
    { methods: ["tools/list"], directions: ["server-to-client"], kinds: ["response"] },
    { methods: ["tools/call"], directions: ["client-to-server"], kinds: ["request"] },
  ];
}

export function intercept(message) {
  // Only the part of the message a decision needs is copied out of membrane.
  if (message.kind() === "response") {
    const result = JSON.parse(message.get("/result") ?? "null");
    for (const name of review(result, store)) {
      log("warn", `tool '${name}' changed its definition since this session first listed it: its calls are refused`);
    }
    return { tag: "continue" };
  }
  const why = refusal(message.toolName(), store, config);
  return why === null ? { tag: "continue" } : { tag: "block", val: why };
}
