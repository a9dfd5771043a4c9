"""Host-side tests of reel_guest.trace: where an exception was raised."""

import importlib.util
import pathlib
import unittest

_path = pathlib.Path(__file__).resolve().parent.parent / "reel_guest" / "trace.py"
_spec = importlib.util.spec_from_file_location("trace_", _path)
trace = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trace)


def handle(event):
    return event["missing"]["code"]


class ThrownAt(unittest.TestCase):
    def test_names_the_file_line_and_function(self):
        try:
            handle({})
        except KeyError as e:
            where = trace.thrown_at(e)
        self.assertRegex(where, r"^.*test_trace\.py:14 in handle$")

    def test_paths_drop_the_mount_componentize_py_gives_them(self):
        # In a component, the project folder is mounted at /0, lib-py at /1.
        code = compile("def handle(event):\n    return event['missing']\n", "/0/app.py", "exec")
        scope = {}
        exec(code, scope)
        try:
            scope["handle"]({})
        except KeyError as e:
            self.assertEqual(trace.thrown_at(e), "app.py:2 in handle")

    def test_an_exception_never_raised_has_no_place(self):
        self.assertIsNone(trace.thrown_at(ValueError("x")))


if __name__ == "__main__":
    unittest.main()
