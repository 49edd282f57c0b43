// An MCP client on the official TypeScript SDK (@modelcontextprotocol/sdk, installed by
// setup.sh). Usage: node ts_client.mjs PEERS_DIR -- CMD ARGS...   (or -- http://HOST:PORT/mcp)
// It connects over stdio to CMD (membrane, in the tests), or over Streamable HTTP to a URL,
// lists the tools, calls `echo` and `delete_file`, and prints one JSON object with what it saw.
// Over HTTP, MCP_BEARER in the environment is sent as a bearer token on every request; https
// roots come from NODE_EXTRA_CA_CERTS, as for any Node program.
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [peers, separator, command, ...args] = process.argv.slice(2);
if (separator !== "--" || !command) {
  console.error("usage: node ts_client.mjs PEERS_DIR -- CMD ARGS...");
  process.exit(2);
}
const sdk = (path) =>
  import(pathToFileURL(join(peers, "npm/node_modules/@modelcontextprotocol/sdk/dist/esm", path)).href);
const { Client } = await sdk("client/index.js");
const { StdioClientTransport } = await sdk("client/stdio.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");

const client = new Client({ name: "membrane-tests-ts", version: "0" });
const transport = /^https?:\/\//.test(command)
  ? new StreamableHTTPClientTransport(new URL(command), {
      requestInit: process.env.MCP_BEARER
        ? { headers: { Authorization: `Bearer ${process.env.MCP_BEARER}` } }
        : undefined,
    })
  : new StdioClientTransport({ command, args, stderr: "inherit" });
await client.connect(transport);

const outcome = async (name, args) => {
  try {
    const result = await client.callTool({ name, arguments: args });
    return { text: result.content?.[0]?.text ?? null, is_error: result.isError ?? false };
  } catch (error) {
    return { code: error.code ?? null, message: error.message };
  }
};

const seen = {
  server_name: client.getServerVersion()?.name,
  tools: (await client.listTools()).tools.map((tool) => tool.name),
  echo: await outcome("echo", { message: "hello from typescript" }),
  blocked: await outcome("delete_file", { path: "/tmp/x" }),
};
if (transport.terminateSession) await transport.terminateSession();
await client.close();
console.log(JSON.stringify(seen));
