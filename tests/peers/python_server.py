#!/usr/bin/env python3
"""MCP server peer for membrane's end-to-end tests, built on the Python `mcp` SDK 2.3.0 and
served over Streamable HTTP at http://127.0.0.1:PORT/mcp.

Usage: python_server.py PORT [--json] [--stateless]

Tools: echo {message} -> message; add {a, b} -> a + b; steps {count, delay_ms} -> logs and
reports progress `count` times, `delay_ms` apart, then answers "done after N steps".
"""

import sys

import anyio

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("python-peer")


@server.tool()
def echo(message: str) -> str:
    """Echo the message back."""
    return message


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def steps(count: int, ctx: Context, delay_ms: int = 0) -> str:
    """Log and report progress `count` times, `delay_ms` apart, then answer."""
    for step in range(1, count + 1):
        await ctx.info(f"step {step}")
        await ctx.report_progress(step, count)
        await anyio.sleep(delay_ms / 1000)
    return f"done after {count} steps"


if __name__ == "__main__":
    port = int(sys.argv[1])
    server.run(
        "streamable-http",
        host="127.0.0.1",
        port=port,
        json_response="--json" in sys.argv,
        stateless_http="--stateless" in sys.argv,
    )
