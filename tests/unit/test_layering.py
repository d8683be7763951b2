"""The one-way layers of docs/architecture.md, read from the source with ``ast``.

1. no import cycle between quantuna's modules (imports inside functions count too);
2. onnxruntime is imported only under ``quantuna/ort/``; optuna neither there nor in
   ``quantuna/objective/``; the views are imported only by the CLI;
3. private names of optuna and optuna_dashboard appear only in ``quantuna/_compat/``;
4. no module over 400 lines, no function over 60 lines of code.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "quantuna"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    return skipped


def _imports(name: str) -> list[str]:
    """Every module ``name`` imports (absolute names), TYPE_CHECKING blocks left out."""
    tree = TREES[name]
    skipped = _type_checking_nodes(tree)
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    out: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append(sub if sub in MODULES else base)
    return out


def _internal_graph() -> dict[str, set[str]]:
    return {name: {i for i in _imports(name) if i in MODULES and i != name} for name in MODULES}


def test_no_import_cycle() -> None:
    graph = _internal_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def _importers_of(prefix: str) -> set[str]:
    return {
        name for name in MODULES
        if any(i == prefix or i.startswith(prefix + ".") for i in _imports(name))
    }


def test_onnxruntime_only_under_ort() -> None:
    outside = {n for n in _importers_of("onnxruntime") if not n.startswith("quantuna.ort")}
    assert outside == set(), f"onnxruntime imported outside quantuna.ort: {sorted(outside)}"


def test_optuna_stays_out_of_ort_and_objective() -> None:
    users = _importers_of("optuna") | _importers_of("optuna_dashboard")
    bad = {n for n in users if n.startswith(("quantuna.ort", "quantuna.objective"))}
    assert bad == set(), f"optuna imported by {sorted(bad)}"


def test_views_are_imported_only_by_the_cli() -> None:
    users = {n for n in _importers_of("quantuna.views") if not n.startswith("quantuna.views")}
    assert {n for n in users if not n.startswith("quantuna.cli")} == set(), sorted(users)


def _dependency_private_names() -> set[str]:
    """``_name`` attributes and module-level names defined by optuna and optuna_dashboard."""
    names: set[str] = set()
    for package in ("optuna", "optuna_dashboard"):
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None
        for path in Path(spec.origin).parent.rglob("*.py"):
            text = path.read_text(encoding="utf-8", errors="replace")
            names |= set(re.findall(r"self\.(_[a-z]\w*)\s*[:=]", text))
            names |= set(re.findall(r"^def (_[a-z]\w*)", text, flags=re.M))
            names.add(path.stem) if path.stem.startswith("_") and path.stem != "__init__" else None
    return names


def _own_private_names() -> set[str]:
    names: set[str] = set()
    for tree in TREES.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in ("self", "cls") and node.attr.startswith("_"):
                names.add(node.attr)
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith("_"):
                names.add(node.name)
    return names


def test_private_dependency_names_only_in_compat() -> None:
    private = _dependency_private_names() - _own_private_names()
    found: list[str] = []
    for name, tree in TREES.items():
        if name == "quantuna._compat" or name.startswith("quantuna._compat."):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
                "optuna", "optuna_dashboard"
            ):
                parts = node.module.split(".") + [a.name for a in node.names]
                if any(p.startswith("_") for p in parts):
                    found.append(f"{name}: from {node.module} import ...")
            if isinstance(node, ast.Attribute) and node.attr in private and not node.attr.startswith("__"):
                found.append(f"{name}:{node.lineno}: .{node.attr}")
    assert found == [], "private optuna/optuna-dashboard names outside _compat: " + "; ".join(found)


def _code_lines(node: ast.AST, lines: list[str]) -> int:
    body = node.body  # type: ignore[attr-defined]
    start = body[0].lineno
    if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        start = body[0].end_lineno + 1 if len(body) > 1 else body[0].end_lineno
    span = lines[start - 1: node.end_lineno]  # type: ignore[attr-defined]
    return sum(1 for line in span if line.strip() and not line.strip().startswith("#"))


def test_module_and_function_sizes() -> None:
    too_long: list[str] = []
    for name, path in MODULES.items():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_MODULE_LINES:
            too_long.append(f"module {name}: {len(lines)} lines")
        for node in ast.walk(TREES[name]):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, lines)
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"function {name}.{node.name}: {n} lines of code")
    assert too_long == [], "; ".join(too_long)


def test_the_checker_sees_a_cycle_and_a_stray_import(tmp_path: Path) -> None:
    """The rules above can fail: a synthetic cycle and an onnxruntime import are caught."""
    saved = dict(TREES), dict(MODULES)
    try:
        MODULES["quantuna.fake_a"] = tmp_path / "a.py"
        MODULES["quantuna.fake_b"] = tmp_path / "b.py"
        TREES["quantuna.fake_a"] = ast.parse("from quantuna import fake_b\nimport onnxruntime\n")
        TREES["quantuna.fake_b"] = ast.parse("def f():\n    import quantuna.fake_a\n")
        with pytest.raises(pytest.fail.Exception, match="import cycle"):
            test_no_import_cycle()
        with pytest.raises(AssertionError, match="fake_a"):
            test_onnxruntime_only_under_ort()
    finally:
        TREES.clear()
        TREES.update(saved[0])
        MODULES.clear()
        MODULES.update(saved[1])
