"""The package's shape at file level: no import cycle among its modules (Python, and the console's ES
modules), counting the imports hidden inside functions; no module over 400 lines without a reason.

A cycle hidden by an import inside a function still ties two files together: neither can be read,
tested or moved without the other. The graph is built from the source (AST for Python, the import
statements for JavaScript), never by importing it, so a cycle that happens to import fine still fails.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tuneforge

ROOT = Path(tuneforge.__file__).resolve().parent
JS = ROOT / "web" / "js"
MAX_LINES = 400
LONG_MARKER = "Long because:"

# (importer, imported) of an import inside a function that closes a cycle, allowed (none now).
ALLOWED_EDGES: set[tuple[str, str]] = set()
# Modules over MAX_LINES allowed without a reason in their docstring (path under src/tuneforge → why not).
ALLOWED_LONG: dict[str, str] = {}


# -- the module graph ----------------------------------------------------------------------------------


def python_modules(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module of the package at ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module itself, or the nearest package holding it (``pkg.mod.attr`` → ``pkg.mod``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:``: an import for type checkers only (the platform
    context names the supervisors that hold it) never runs, so it ties no file to another at run time."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def python_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules ``name`` imports anywhere in its file (top level, functions, classes)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import mod` imports the module pkg.mod; `from mod import attr` imports mod
            targets = [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in (_known(t, modules) for t in targets) if t is not None)
    found.discard(name)
    return found


def python_graph(root: Path) -> dict[str, set[str]]:
    modules = python_modules(root)
    return {name: python_imports(name, path, modules) for name, path in modules.items()}


_JS_COMMENT = re.compile(r"/\*.*?\*/|^\s*//.*?$", re.S | re.M)
_JS_IMPORT = re.compile(
    r"""(?:\bimport|\bexport)\s[^'";]*?\bfrom\s*['"](\.[^'"]+)['"]"""  # import … from './x.js'
    r"""|\bimport\s*['"](\.[^'"]+)['"]"""  # import './x.js'
    r"""|\bimport\s*\(\s*['"](\.[^'"]+)['"]\s*\)"""  # import('./x.js'), a dynamic import
)


def js_graph(root: Path) -> dict[str, set[str]]:
    """Relative path → relative paths it imports, of the ES modules under ``root``."""
    graph = {}
    for path in sorted(root.rglob("*.js")):
        text = _JS_COMMENT.sub("", path.read_text(encoding="utf-8"))
        targets = set()
        for match in _JS_IMPORT.finditer(text):
            target = (path.parent / next(g for g in match.groups() if g)).resolve()
            if target.is_relative_to(root):
                targets.add(target.relative_to(root).as_posix())
        graph[path.relative_to(root).as_posix()] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return "cycle: " + "; ".join(edges)


# -- the rules -----------------------------------------------------------------------------------------


def test_no_import_cycle_among_python_modules():
    graph = python_graph(ROOT)
    stale = sorted(edge for edge in ALLOWED_EDGES if edge[1] not in graph.get(edge[0], set()))
    assert not stale, f"these imports are gone: remove them from ALLOWED_EDGES: {stale}"
    for importer, imported in ALLOWED_EDGES:
        graph[importer] = graph[importer] - {imported}
    found = cycles(graph)
    assert not found, (
        "file-level import cycles (an import inside a function counts too); move what both sides need "
        "into a module below them:\n" + "\n".join(describe(c, graph) for c in found)
    )


def test_no_import_cycle_among_console_modules():
    graph = js_graph(JS)
    assert "app.js" in graph and "pages/home.js" in graph["app.js"], "the JS import scan found nothing"
    found = cycles(graph)
    assert not found, "console ES module cycles:\n" + "\n".join(describe(c, graph) for c in found)


def _reason(path: Path) -> bool:
    """Whether the module's docstring (a JS module's leading comment) gives why it is long."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return LONG_MARKER in (ast.get_docstring(ast.parse(text)) or "")
    header = re.match(r"(?:\s*//[^\n]*\n|\s*/\*.*?\*/)*", text, re.S).group(0)
    return LONG_MARKER in header


def test_no_module_over_400_lines_without_a_reason():
    files = sorted([*ROOT.rglob("*.py"), *JS.rglob("*.js")])
    long = {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in files}
    long = {rel: n for rel, n in long.items() if n > MAX_LINES and not _reason(ROOT / rel)}
    stale = sorted(set(ALLOWED_LONG) - set(long))
    assert not stale, f"short now (or they say why they are long): remove them from ALLOWED_LONG: {stale}"
    over = {rel: n for rel, n in long.items() if rel not in ALLOWED_LONG}
    assert not over, (
        f"modules over {MAX_LINES} lines: {over}. Split them by concern, or say why in the module's "
        f"docstring with a line starting {LONG_MARKER!r}."
    )


# -- the scan itself finds what it must ----------------------------------------------------------------


def test_scan_finds_a_cycle_hidden_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import x\n    return x\n")
    (package / "c.py").write_text("import pkg.a\nfrom pkg import sub\n")
    graph = python_graph(package)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg.a", "pkg.sub"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_scan_finds_a_console_cycle_through_a_dynamic_import(tmp_path):
    (tmp_path / "pages").mkdir()
    app = "// import nothing from 'here'\nconst r = () => import('./pages/p.js');\n"
    (tmp_path / "app.js").write_text(app)
    (tmp_path / "pages" / "p.js").write_text("import { go } from '../app.js';\nimport '../dom.js';\n")
    (tmp_path / "dom.js").write_text("export const h = 1;\n")
    graph = js_graph(tmp_path)
    assert graph == {"app.js": {"pages/p.js"}, "pages/p.js": {"app.js", "dom.js"}, "dom.js": set()}
    assert cycles(graph) == [["app.js", "pages/p.js"]]
