"""tuneforge's tests, laid out like the source: tests/data/ tests src/tuneforge/data/, and so on; files at
this level test the top-level modules (names.py, spec.py) or the whole tree (layering, the Makefile, the
real default model end to end).

A package, as pytest recommends for its default import mode: the repository root goes on sys.path and each
file is imported by its full name (tests.data.test_store), so two folders may hold files of the same name
and shared helpers are imported by path (``from tests.support.platformhelp import make_client``).
Fixtures every test may use stay in tests/conftest.py; the data files the tests read stay in
tests/fixtures/; the console's screenshots go to tests/artifacts/ (git-ignored).
"""
