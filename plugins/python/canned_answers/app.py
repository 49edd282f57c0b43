"""canned-answers: a membrane interceptor written in Python. It answers `tools/call` requests
for the tools named in its configuration with a fixed result, in the server's place: a mock
server for tests and demos, or a way to retire a tool without touching the server.

Configuration (the plugin's `config` table; unknown keys are refused):

    [plugins.config.tools.weather]          # the tool name
    text = "Sunny, 21 °C"                   # answered as one text content item
    [plugins.config.tools.lookup]
    result = { content = [], isError = true }   # or a whole CallToolResult

Built with componentize-py against the `interceptor` world; see plugins/python/README.md.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

# This instance's answers by tool name: JSON text of each result, set once by `init`.
ANSWERS: dict[str, str] = {}


def parse_answers(config: dict) -> dict[str, str]:
    """The configured answers, each a CallToolResult as JSON text; ValueError when invalid."""
    unknown = set(config) - {"tools"}
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    answers = {}
    for tool, answer in config.get("tools", {}).items():
        if not isinstance(answer, dict) or len(answer) != 1 or not answer.keys() <= {"text", "result"}:
            raise ValueError(f"tool '{tool}': give exactly one of `text` or `result`")
        if "text" in answer:
            result = {"content": [{"type": "text", "text": str(answer["text"])}], "isError": False}
        else:
            result = answer["result"]
        answers[tool] = json.dumps(result)
    if not answers:
        raise ValueError("no tools to answer for")
    return answers


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> list[types.Filter]:
        try:
            ANSWERS.update(parse_answers(json.loads(config)))
        except (ValueError, AttributeError) as e:
            raise Err(f"invalid canned-answers config: {e}")
        return [
            types.Filter(
                methods=["tools/call"],
                directions=[types.Direction.CLIENT_TO_SERVER],
                kinds=[types.MessageKind.REQUEST],
            )
        ]

    def intercept(self, message: types.Message) -> types.Action:
        # Only the tool's name is copied out of membrane, however large the call.
        tool = message.tool_name()
        answer = ANSWERS.get(tool)
        if answer is None:
            return types.Action_Continue()
        host.log(host.Level.DEBUG, f"answered {tool} in frame {message.frame_id()}")
        return types.Action_Mock(answer)
