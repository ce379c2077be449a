"""Helpers shared by the tests, imported by path (``from tests.support.servehelp import start_server``).
Not collected: no file here is named test_*."""
