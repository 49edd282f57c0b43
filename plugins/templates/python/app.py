"""{{name}}: a membrane plugin in Python (componentize-py). The decisions live in policy.py,
which `python3 -m unittest` tests natively; this file wires them to membrane's contract.

Build: componentize-py --wit-path wit --world interceptor componentize app --output {{name_}}.wasm
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import types

from policy import Policy

POLICY = None


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> list[types.Filter]:
        global POLICY
        try:
            POLICY = Policy(config)
        except ValueError as e:
            raise Err(f"invalid {{name}} config: {e}")
        return [
            types.Filter(
                methods=["tools/call"],
                directions=[types.Direction.CLIENT_TO_SERVER],
                kinds=[types.MessageKind.REQUEST],
            )
        ]

    def intercept(self, message: types.Message) -> types.Action:
        reason = POLICY.check_call(message.json())
        return types.Action_Continue() if reason is None else types.Action_Block(reason)
