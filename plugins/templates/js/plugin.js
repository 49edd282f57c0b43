// {{name}}: a membrane plugin in JavaScript (componentize-js). The decisions live in
// policy.js, which `node --test` tests natively; this file wires them to membrane's contract.
//
// Build: componentize-js plugin.js --wit wit --world-name interceptor \
//            --disable http fetch-event -o {{name_}}.wasm

import { checkCall, parsePolicy } from "./policy.js";

let policy = { deny: new Set() };

export function init(config) {
  policy = parsePolicy(config); // a thrown string refuses the configuration
  return [{ methods: ["tools/call"], directions: ["client-to-server"], kinds: ["request"] }];
}

export function intercept(message) {
  const reason = checkCall(policy, message.json());
  return reason === null ? { tag: "continue" } : { tag: "block", val: reason };
}
