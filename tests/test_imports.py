"""Import hygiene (issue 19): imports live at module level, the module-level graph of ``harness`` imports
has no cycle, and the layers import in one direction only (the model never pulls in the sweep or
training; evaluation never pulls in training).

An import inside a function is allowed only for the optional or GPU-only packages in ``LAZY_ALLOWED``
(they may be missing on the machine) or when its line carries a ``# lazy: <reason>`` comment (a real
cycle, ``# lazy: <module> imports this module``, or a heavy import kept off a light CLI's path).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "harness"

# Top-level names that may be imported inside a function without a `# lazy:` comment: the optional extras
# that may be missing (`eval`: lmms_eval with its loguru; `cuda`: mamba_ssm) and the debugger. Only what
# harness/ really imports lazily: a new optional import is added here on purpose.
LAZY_ALLOWED = {"mamba_ssm", "lmms_eval", "loguru", "pdb"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    """{module name: (path, parsed tree)} for every harness/**/*.py (a package is its ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        out[_module_name(path)] = (path, ast.parse(path.read_text(), filename=str(path)))
    return out


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _module_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements executed at import time: module body, also inside top-level if/try/with blocks
    (not inside functions or classes' methods; class bodies do run at import time, so they count)."""
    found: list[ast.stmt] = []

    def visit(stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                found.append(stmt)
            elif isinstance(stmt, ast.If):
                if _is_type_checking(stmt.test):
                    continue  # never executed
                visit(stmt.body)
                visit(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                visit(stmt.body)
                for handler in stmt.handlers:
                    visit(handler.body)
                visit(stmt.orelse)
                visit(stmt.finalbody)
            elif isinstance(stmt, ast.With | ast.ClassDef):
                visit(stmt.body)

    visit(tree.body)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph() -> dict[str, set[str]]:
    """{harness module: the harness modules it imports at module level}."""
    sources = _sources()
    graph: dict[str, set[str]] = {name: set() for name in sources}
    for module, (path, tree) in sources.items():
        for node in _module_level_imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(module, path, node)
                # `from harness.x import y` where y is a submodule: an edge to harness.x.y (Python imports
                # the submodule; harness.x is then already initialised, being its parent), else to harness.x.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in sources else base
                           for alias in node.names]
            for target in targets:
                if target != "harness" and not target.startswith("harness."):
                    continue
                # Importing a.b.c runs a and a.b first: the deepest one that exists is the edge.
                while target and target not in sources:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        color[node] = GREY
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if color.get(nxt, BLACK) == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if color.get(nxt) == WHITE and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        color[node] = BLACK
        return None

    for node in sorted(graph):
        if color[node] == WHITE and (cycle := dfs(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_module_level_import_graph_has_no_cycle():
    graph = import_graph()
    assert "harness.config" in graph and graph["harness.sweep"], "the graph builder found nothing"
    cycle = find_cycle(graph)
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def _function_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements inside any function body (nested functions and methods included)."""
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    found.append(node)
    return list({id(n): n for n in found}.values())  # a nested function's imports are walked twice


def test_imports_inside_functions_are_only_the_allowed_lazy_ones():
    offenders = []
    for module, (path, tree) in _sources().items():
        lines = path.read_text().splitlines()
        for node in _function_imports(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = [_resolve(module, path, node)]
            tops = {name.split(".")[0] for name in names}
            if tops <= LAZY_ALLOWED:
                continue
            statement = lines[node.lineno - 1: node.end_lineno]
            if any("# lazy:" in line for line in statement):
                continue
            offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not offenders, ("imports inside functions (hoist them, or mark a real cycle with `# lazy: <module> "
                           "imports this module`):\n" + "\n".join(offenders))


_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("harness", "transformers.models")))))
"""


def _loaded_by(module: str) -> set[str]:
    """The harness modules importing ``module`` loads, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _PROBE, module], cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _under(loaded: set[str], package: str) -> set[str]:
    return {m for m in loaded if m == package or m.startswith(package + ".")}


def test_layers_import_in_one_direction():
    model = _loaded_by("harness.model")
    assert not _under(model, "harness.sweep"), f"harness.model imports the sweep: {sorted(model)}"
    assert "harness.train" not in model, f"harness.model imports training: {sorted(model)}"
    evaluate = _loaded_by("harness.evaluate")
    assert "harness.train" not in evaluate, f"harness.evaluate imports training: {sorted(evaluate)}"
    assert not _under(evaluate, "harness.sweep"), f"harness.evaluate imports the sweep: {sorted(evaluate)}"


def test_probe_jobs_load_no_llm_code():
    """A probe worker (one process per run) never loads transformers' model classes: their import (with
    torchvision and dynamo) cost every run of the default study ~3 s of its ~10."""
    loaded = _loaded_by("harness.probe.run") | _loaded_by("harness.sweep.job")
    assert not _under(loaded, "transformers.models"), sorted(_under(loaded, "transformers.models"))[:5]
    assert "harness.model_io" not in loaded and "harness.train" not in loaded
