import unittest

from policy import Policy


class PolicyTest(unittest.TestCase):
    def test_refuses_the_denied_tools_only(self):
        policy = Policy('{"deny": ["delete_file"]}')
        denied = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name": "delete_file"}}'
        allowed = '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}}'
        self.assertIsNotNone(policy.check_call(denied))
        self.assertIsNone(policy.check_call(allowed))
        with self.assertRaises(ValueError):
            Policy('{"denied": []}')


if __name__ == "__main__":
    unittest.main()
