// The tool-pinning policy, as plain functions over JSON values and a key-value store, so that
// `node --test` runs them without Wasm. A tool is pinned the first time a session sees it
// listed: the SHA-256 of its name, description and input schema (as canonical JSON: keys in
// order, so a server that merely reorders keys does not trip it). A tool listed later with
// another definition is marked changed, and calls to it are refused from then on: a server
// cannot swap what a tool claims to do after the client (and the model behind it) accepted it.

/** The configuration: `{ "unlisted": "allow" | "block" }` (calls to tools never listed). */
export function parseConfig(text) {
  const config = JSON.parse(text || "{}");
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw "the configuration must be a table";
  }
  for (const key of Object.keys(config)) {
    if (key !== "unlisted") throw `unknown field \`${key}\`, expected \`unlisted\``;
  }
  const unlisted = config.unlisted ?? "allow";
  if (unlisted !== "allow" && unlisted !== "block") {
    throw `unlisted = "${unlisted}": expected "allow" or "block"`;
  }
  return { unlisted };
}

/** JSON text of `value` with object keys sorted at every level. */
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

/** What a tool's definition is pinned by. */
export function fingerprint(tool) {
  const { name, description = null, inputSchema = null } = tool;
  return sha256Hex(canonical({ name, description, inputSchema }));
}

/**
 * Pins the tools of a `tools/list` result not seen before in this session and marks those
 * whose definition differs from their pin. Returns the names newly marked changed.
 */
export function review(result, store) {
  const changed = [];
  for (const tool of result?.tools ?? []) {
    if (typeof tool?.name !== "string") continue;
    const seen = fingerprint(tool);
    const pinned = store.get(`pin:${tool.name}`);
    if (pinned === undefined) {
      store.set(`pin:${tool.name}`, seen);
    } else if (pinned !== seen && store.get(`changed:${tool.name}`) === undefined) {
      store.set(`changed:${tool.name}`, seen);
      changed.push(tool.name);
    }
  }
  return changed;
}

/** Why a call to `name` is refused, or `null` when it may go on. */
export function refusal(name, store, config) {
  if (typeof name !== "string") return "tools/call request has no tool name";
  if (store.get(`changed:${name}`) !== undefined) {
    return `tool '${name}' changed its definition since this session first listed it: list the tools again in a new session to accept the change`;
  }
  if (config.unlisted === "block" && store.get(`pin:${name}`) === undefined) {
    return `tool '${name}' was never listed in this session`;
  }
  return null;
}

/** UTF-8 bytes of a string. */
function utf8(text) {
  const bytes = [];
  for (const char of text) {
    const c = char.codePointAt(0);
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return bytes;
}

const K = [
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/** SHA-256 (FIPS 180-4) of a string's UTF-8 bytes, as hex. */
export function sha256Hex(text) {
  const bytes = utf8(text);
  const bits = bytes.length * 8;
  bytes.push(0x80);
  while (bytes.length % 64 !== 56) bytes.push(0);
  // The length in bits, big-endian over 8 bytes (messages here stay far below 2^32 bits).
  bytes.push(0, 0, 0, 0, (bits >>> 24) & 255, (bits >>> 16) & 255, (bits >>> 8) & 255, bits & 255);
  const h = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
  const w = new Array(64);
  const rotr = (x, n) => (x >>> n) | (x << (32 - n));
  for (let block = 0; block < bytes.length; block += 64) {
    for (let i = 0; i < 16; i++) {
      const at = block + i * 4;
      w[i] = ((bytes[at] << 24) | (bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3]) >>> 0;
    }
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[i] + w[i]) >>> 0;
      const S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) >>> 0;
      [hh, g, f, e, d, c, b, a] = [g, f, e, (d + t1) >>> 0, c, b, a, (t1 + t2) >>> 0];
    }
    [a, b, c, d, e, f, g, hh].forEach((v, i) => {
      h[i] = (h[i] + v) >>> 0;
    });
  }
  return h.map((v) => v.toString(16).padStart(8, "0")).join("");
}
