"""The tests are laid out like the source (issue 17 item 7): a test file sits in the folder of the package it
tests, helpers live in tests/support/ and are imported by path, and `make test`'s ordering names files
that exist."""

from __future__ import annotations

import ast

from tests.conftest import LONGEST_FILES
from tests.support.paths import ROOT, TESTS

SOURCE = ROOT / "src" / "tuneforge"
NOT_TESTS = {"support", "fixtures", "artifacts"}  # folders of tests/ that hold no tests of their own


def _python_files():
    return [p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts]


def test_each_test_folder_is_named_for_a_source_package_and_is_a_package():
    wrong = []
    for folder in sorted({p.parent for p in TESTS.rglob("test_*.py")} - {TESTS}):
        top = folder.relative_to(TESTS).parts[0]
        if top in NOT_TESTS or not (SOURCE / top).is_dir():
            wrong.append(f"{folder.relative_to(ROOT)}: no src/tuneforge/{top}/ to mirror")
        if not (folder / "__init__.py").is_file():
            wrong.append(f"{folder.relative_to(ROOT)}: no __init__.py (pytest would import it by bare name)")
    assert not wrong, "move each test file into the folder of the package it tests:\n" + "\n".join(wrong)


def test_helpers_live_in_tests_support():
    loose = [
        str(p.relative_to(ROOT))
        for p in _python_files()
        if p.parent.relative_to(TESTS).parts[:1] != ("support",)
        and not p.name.startswith("test_")
        and p.name not in ("conftest.py", "__init__.py")
    ]
    assert not loose, f"helpers outside tests/support/ (move them there, import by path): {loose}"


def test_no_test_module_is_imported_by_a_bare_name():
    """`from platformhelp import x` works only while its folder happens to be on sys.path: import
    `tests.support.platformhelp`, `tests.conftest`, `tests.web.test_console` instead."""
    bare = {p.stem for p in _python_files()} - {"__init__"}
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            found += [f"{where}: {n}" for n in names if n.split(".")[0] in bare]
    assert not found, "import these as tests.<folder>.<module>:\n" + "\n".join(found)


def test_the_longest_files_make_test_starts_first_exist():
    missing = [name for name in LONGEST_FILES if not (TESTS / name).is_file()]
    assert not missing, f"conftest.LONGEST_FILES names files that are not in tests/: {missing}"
