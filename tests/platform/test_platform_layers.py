"""The control plane's layers (issue 17 item 4): services below the routes speak no HTTP and raise the
project's errors; the shared context is typed. (No import cycle: tests/test_layering.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tuneforge.platform

PLATFORM = Path(tuneforge.platform.__file__).parent
# The HTTP edge: the app, its dependencies and body readers, the OpenAPI document and the routes.
HTTP_EDGE = {"app", "deps", "bodies", "openapi", "hot_reads"}  # hot_reads: the app's ASGI layer


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


def test_the_platform_context_is_typed():
    """Named, typed fields for what the app factory builds around the context; no dict of extras."""
    from dataclasses import fields

    from tests.support.platformhelp import make_client
    from tuneforge.platform.context import Platform
    from tuneforge.platform.metrics import RequestMetrics
    from tuneforge.platform.pulls import Pulls
    from tuneforge.platform.replicas import DeploymentSupervisor
    from tuneforge.platform.supervisor import Supervisor

    types = {f.name: str(f.type) for f in fields(Platform)}
    assert "extras" not in types and not [n for n, t in types.items() if t in ("object", "dict", "Any")]
    assert types["supervisor"] == "Supervisor" and types["deployments"] == "DeploymentSupervisor"
    with make_client(cancel_grace_s=1.5) as client:
        ctx = client.app.state.platform
        assert isinstance(ctx.supervisor, Supervisor) and isinstance(ctx.deployments, DeploymentSupervisor)
        assert isinstance(ctx.pulls, Pulls) and isinstance(ctx.metrics, RequestMetrics)
        assert (ctx.cancel_grace_s, ctx.token_stats) == (1.5, False)
    with pytest.raises(TypeError, match="no field 'cancel_grace'"):
        make_client(cancel_grace=1.0)


def test_routes_are_thin():
    """A route module imports no other route module; the OpenAI fine-tuning routes hold no SQL (their
    service is ``platform/openai_ft.py``, beside jobs and registry)."""
    routes = sorted((PLATFORM / "routes").glob("*.py"))
    names = {f"tuneforge.platform.routes.{p.stem}" for p in routes if p.stem != "__init__"}
    crossing = {_module(p): sorted(imports(p) & names - {_module(p)}) for p in routes}
    assert not {m: i for m, i in crossing.items() if i}, crossing
    assert not [m for m in imports(PLATFORM / "routes" / "openai_ft.py") if m.startswith("sqlalchemy")]


def _answer_models(router) -> dict[str, object]:
    from fastapi.routing import APIRoute

    routes = [r for r in router.routes if isinstance(r, APIRoute)]
    return {f"{sorted(r.methods)[0]} {r.path}": r.response_model for r in routes}


def _undeclared(models: dict[str, object]) -> list[str]:
    from pydantic import BaseModel

    # FastAPI takes `-> dict` for a response model too: a model means a pydantic one
    return [k for k, m in models.items() if not (isinstance(m, type) and issubclass(m, BaseModel))]


def test_openai_fine_tuning_and_job_routes_declare_their_answers():
    """Each /v1/files and /v1/fine_tuning route, and each /api/v1/jobs route answering a job, has a response
    model: the OpenAPI document describes the answer, and an answer with a key the model lacks fails the
    tests rather than surprise a client."""
    from tuneforge.platform.routes import jobs, openai_ft

    models = _answer_models(openai_ft.router)
    assert len(models) == 10 and _undeclared(models) == []
    job_routes = ["", "/{job_id}", "/{job_id}/cancel", "/{job_id}/resume", "/{job_id}/retry"]
    models = _answer_models(jobs.router)
    models = {k: m for k, m in models.items() if k.split(" /api/v1/jobs")[1] in job_routes}
    assert len(models) == 7 and _undeclared(models) == [], models
