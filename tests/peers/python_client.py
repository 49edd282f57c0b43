#!/usr/bin/env python3
"""MCP client peer for membrane's end-to-end tests, built on the Python `mcp` SDK 2.3.0.

Usage:
    python_client.py [OPTIONS] SCENARIO -- CMD ARGS...
    python_client.py [OPTIONS] SCENARIO -- http://HOST:PORT/mcp

Spawns CMD over stdio (normally `membrane forward ... -- SERVER`), connects with
`mcp.Client(StdioServerParameters(...))` (or, given a URL, over Streamable HTTP with
`mcp.Client(URL)`), runs SCENARIO and prints exactly ONE JSON
object on stdout. The child's stderr is passed through to this process's stderr.

Every output object carries:
    ok                 true when the scenario ran to the end (tool errors included),
                       false on a fatal error (connect failure, timeout, crash)
    scenario, mode, protocol_version, server_name, server_version
    fatal              only when ok is false: {"type", "message", "code"?}
Exit status: 0 when ok, 1 when not, 2 on bad usage.

Scenarios:
    list-and-call   tools (names, in listed order), echo (text of echo{"message":
                    --message, default "hello from python"}), blocked (outcome of
                    delete_file{"path": "/tmp/x"})
    list            tools: [{"name", "args": [property names], "required": [...]}]
    call            call: outcome of --tool NAME with --args JSON (default {})
    echo-many       --count N concurrent echo calls; count, matched, mismatches, elapsed_ms
    ping            ping: outcome of a ping
    request         response: raw result of --method M with --params JSON (any method; on a
                    2026-07-28 connection the SDK's per-request _meta is added), or
                    error: {"code", "message", "data"}

A call outcome is one of:
    {"kind": "result", "is_error": bool, "text": joined text content, "message": text
     if is_error else null, "code": null, "structured": structuredContent or null}
    {"kind": "jsonrpc_error", "is_error": true, "code": int, "message": str, "data": ...,
     "text": null}                       (a JSON-RPC error response; also the SDK's own
                                          -32000 connection closed / -32001 timeout)
    {"kind": "exception", "is_error": true, "type": str, "message": str, "code": null}

Options:
    --mode auto|legacy|2026-07-28   protocol negotiation (default: auto, the SDK default:
                                    server/discover first, initialize on fallback)
    --timeout SECONDS               overall deadline (default 30), also per-request timeout
    --bearer TOKEN                  over HTTP: send Authorization: Bearer TOKEN on every request
                                    (https roots: the SSL_CERT_FILE environment variable)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any

import anyio
from mcp import Client, MCPError, StdioServerParameters

ECHO_MESSAGE = "hello from python"


def outcome_from_result(result: Any) -> dict[str, Any]:
    texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
    text = "".join(texts)
    is_error = bool(result.is_error)
    return {
        "kind": "result",
        "is_error": is_error,
        "text": text,
        "message": text if is_error else None,
        "code": None,
        "structured": result.structured_content,
    }


def outcome_from_exception(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MCPError):
        return {
            "kind": "jsonrpc_error",
            "is_error": True,
            "code": exc.code,
            "message": exc.message,
            "data": exc.data,
            "text": None,
        }
    return {
        "kind": "exception",
        "is_error": True,
        "type": type(exc).__name__,
        "message": str(exc),
        "code": None,
        "text": None,
    }


async def call(client: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        return outcome_from_result(await client.call_tool(name, arguments))
    except Exception as exc:  # noqa: BLE001 - the outcome is the report
        return outcome_from_exception(exc)


async def list_tools(client: Client) -> list[Any]:
    tools: list[Any] = []
    cursor = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


async def scenario_list_and_call(client: Client, opts: argparse.Namespace, out: dict[str, Any]) -> None:
    out["tools"] = [tool.name for tool in await list_tools(client)]
    echo = await call(client, "echo", {"message": opts.message})
    out["echo"] = echo["text"] if echo["kind"] == "result" and not echo["is_error"] else None
    out["echo_outcome"] = echo
    out["blocked"] = await call(client, "delete_file", {"path": "/tmp/x"})


async def scenario_list(client: Client, opts: argparse.Namespace, out: dict[str, Any]) -> None:
    out["tools"] = [
        {
            "name": tool.name,
            "args": list((tool.input_schema or {}).get("properties", {}).keys()),
            "required": list((tool.input_schema or {}).get("required", [])),
        }
        for tool in await list_tools(client)
    ]


async def scenario_call(client: Client, opts: argparse.Namespace, out: dict[str, Any]) -> None:
    out["call"] = await call(client, opts.tool, json.loads(opts.args))


async def scenario_echo_many(client: Client, opts: argparse.Namespace, out: dict[str, Any]) -> None:
    results: dict[int, dict[str, Any]] = {}

    async def one(i: int) -> None:
        results[i] = await call(client, "echo", {"message": f"message {i}"})

    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(opts.count):
            tg.start_soon(one, i)
    mismatches = []
    for i in range(opts.count):
        got = results[i]
        # server-everything answers "Echo: <message>", rmcp-peer answers "<message>".
        if got["kind"] != "result" or got["is_error"] or not got["text"].endswith(f"message {i}"):
            mismatches.append({"index": i, "outcome": got})
    out["count"] = opts.count
    out["matched"] = opts.count - len(mismatches)
    out["mismatches"] = mismatches[:10]
    out["elapsed_ms"] = round((time.monotonic() - start) * 1000, 3)


async def scenario_ping(client: Client, opts: argparse.Namespace, out: dict[str, Any]) -> None:
    try:
        await client.send_ping()
        out["ping"] = {"kind": "result", "is_error": False, "code": None, "message": None}
    except Exception as exc:  # noqa: BLE001
        out["ping"] = outcome_from_exception(exc)


async def scenario_request(client: Client, opts: argparse.Namespace, out: dict[str, Any]) -> None:
    data: dict[str, Any] = {"method": opts.method}
    if opts.params is not None:
        data["params"] = json.loads(opts.params)
    call_opts: dict[str, Any] = {"timeout": opts.timeout}
    # No public raw-request API in 2.3.0 (ClientSession.send_request wants a typed request), so
    # go through the session's private stamp (2026-07-28 per-request _meta) and dispatcher.
    session = client.session
    session._stamp(data, call_opts)  # pyright: ignore[reportPrivateUsage]
    try:
        out["response"] = await session._dispatcher.send_raw_request(  # pyright: ignore[reportPrivateUsage]
            data["method"], data.get("params"), call_opts
        )
    except MCPError as exc:
        out["error"] = {"code": exc.code, "message": exc.message, "data": exc.data}


SCENARIOS = {
    "list-and-call": scenario_list_and_call,
    "list": scenario_list,
    "call": scenario_call,
    "echo-many": scenario_echo_many,
    "ping": scenario_ping,
    "request": scenario_request,
}


def fatal(exc: BaseException) -> dict[str, Any]:
    # anyio task groups wrap failures in exception groups: report the first leaf.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, MCPError):
        info["code"] = exc.code
    return info


async def run(opts: argparse.Namespace, command: list[str], out: dict[str, Any]) -> None:
    if len(command) == 1 and command[0].startswith(("http://", "https://")):
        if opts.bearer:
            await run_with_bearer(opts, command[0], out)
            return
        target: Any = command[0]
    else:
        target = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    await run_client(Client(target, mode=opts.mode, read_timeout_seconds=opts.timeout), opts, out)


async def run_with_bearer(opts: argparse.Namespace, url: str, out: dict[str, Any]) -> None:
    """Over HTTP with a token on every request (the SDK's client takes an HTTP client of ours)."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {opts.bearer}"}
    timeout = httpx2.Timeout(opts.timeout, read=opts.timeout)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http:
        transport = streamable_http_client(url, http_client=http)
        await run_client(Client(transport, mode=opts.mode, read_timeout_seconds=opts.timeout), opts, out)


async def run_client(client: Client, opts: argparse.Namespace, out: dict[str, Any]) -> None:
    async with client:
        out["protocol_version"] = client.protocol_version
        info = client.server_info
        out["server_name"] = info.name if info else None
        out["server_version"] = info.version if info else None
        await SCENARIOS[opts.scenario](client, opts, out)


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    command = argv[split + 1 :]
    parser = argparse.ArgumentParser(prog="python_client.py")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--mode", default="auto")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--bearer")
    parser.add_argument("--tool")
    parser.add_argument("--args", default="{}")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--message", default=ECHO_MESSAGE)
    parser.add_argument("--method")
    parser.add_argument("--params")
    opts = parser.parse_args(argv[:split])
    if not command:
        parser.error("missing CMD after --")
    if opts.scenario == "call" and not opts.tool:
        parser.error("scenario call needs --tool NAME")
    if opts.scenario == "request" and not opts.method:
        parser.error("scenario request needs --method M")
    for name in ("args", "params"):
        try:
            json.loads(getattr(opts, name) or "null")
        except ValueError as exc:
            parser.error(f"--{name} is not JSON: {exc}")

    out: dict[str, Any] = {
        "ok": False,
        "scenario": opts.scenario,
        "mode": opts.mode,
        "protocol_version": None,
        "server_name": None,
        "server_version": None,
    }
    status = 1
    try:

        async def bounded() -> None:
            with anyio.fail_after(opts.timeout):
                await run(opts, command, out)

        anyio.run(bounded)
        out["ok"] = True
        status = 0
    except TimeoutError as exc:
        out["fatal"] = {"type": "timeout", "message": f"scenario did not finish within {opts.timeout}s ({exc})"}
    except BaseException as exc:  # noqa: BLE001 - report, never crash without JSON
        if isinstance(exc, KeyboardInterrupt):
            raise
        traceback.print_exc(file=sys.stderr)
        out["fatal"] = fatal(exc)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
