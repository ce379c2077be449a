"""The control plane's layers (issue 17 item 4): services below the routes speak no HTTP and raise the
project's errors; the shared context is typed; no two platform modules import each other, not even from
inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tuneforge.platform

PLATFORM = Path(tuneforge.platform.__file__).parent
# The HTTP edge: the app, its dependencies and body readers, the OpenAPI document and the routes.
HTTP_EDGE = {"app", "deps", "bodies", "openapi"}


def _module(path: Path) -> str:
    parts = path.relative_to(PLATFORM.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function; not those for type checkers only."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from . import jobs` names a module
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _platform_files() -> list[Path]:
    return sorted(p for p in PLATFORM.rglob("*.py") if "migrations" not in p.parts)


def test_services_below_the_routes_speak_no_http():
    """Only the HTTP edge imports FastAPI or Starlette; a service raises a TuneforgeError and the app's
    handlers turn it into the answer (CONVENTIONS: HTTPException only at the edge)."""
    offenders = {}
    for path in _platform_files():
        if path.parent.name == "routes" or path.stem in HTTP_EDGE:
            continue
        web = sorted(m for m in imports(path) if m.split(".")[0] in ("fastapi", "starlette"))
        if web:
            offenders[_module(path)] = web
    assert not offenders, offenders


def test_command_jobs_turned_off_is_a_forbidden_error(tmp_path):
    from types import SimpleNamespace

    from tuneforge.errors import ForbiddenError, TuneforgeError
    from tuneforge.platform import commands

    ctx = SimpleNamespace(settings=SimpleNamespace(allow_command_jobs=False))
    with pytest.raises(ForbiddenError, match="TUNEFORGE_ALLOW_COMMAND_JOBS=false") as caught:
        commands.require_enabled(ctx)
    assert isinstance(caught.value, TuneforgeError)


@pytest.mark.parametrize("pair", [("jobs", "commands"), ("deployments", "registry")])
def test_platform_service_pairs_do_not_import_each_other(pair):
    """jobs ↔ commands and deployments ↔ registry imported each other, hidden by imports inside functions."""
    a, b = pair
    a_imports = imports(PLATFORM / f"{a}.py")
    b_imports = imports(PLATFORM / f"{b}.py")
    assert not (f"tuneforge.platform.{b}" in a_imports and f"tuneforge.platform.{a}" in b_imports)
