import { test } from "node:test";
import assert from "node:assert/strict";
import { checkCall, parsePolicy } from "./policy.js";

test("refuses the denied tools only", () => {
  const policy = parsePolicy('{"deny": ["delete_file"]}');
  assert.ok(checkCall(policy, '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name": "delete_file"}}'));
  assert.equal(checkCall(policy, '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}'), null);
  assert.throws(() => parsePolicy('{"denied": []}'));
});
