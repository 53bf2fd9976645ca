"""The package's shape: one TFLite boundary, no import cycles, small modules.

Each check reads the source with ``ast`` (docstrings and comments do not count) and fails
naming the offending file and line. The ``*_detects_*`` tests feed each check a small
synthetic tree, so a check that could never fail would fail them.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tfquant"
BOUNDARY = PACKAGE / "tflite"
MAX_MODULE_LINES = 600

# Attributes of TF / LiteRT objects that are private API (see tfquant/tflite/*.py for why each
# is used). ``_interpreter`` is LiteRT's wrapped C++ interpreter; an object's own
# ``self._interpreter`` attribute is not it.
PRIVATE_ATTRIBUTES = frozenset({
    "_interpreter",
    "_get_ops_details",
    "_mlir_quantize",
    "_experimental_calibrate_only",
    "_experimental_disable_per_channel",
    "_modify_model_io_type",
    "_deduplicate_readonly_buffers",
    "QuantizeModel",
    # tfmot's QuantizeWrapper and tf-keras's functional graph keep these private
    # (tfquant/tflite/tfmot_internals.py, keras_internals.py wrap them).
    "_weight_vars",
    "_quantize_activations",
    "_output_quantizers",
    "_output_quantizer_vars",
    "_pre_activation_vars",
    "_post_activation_vars",
    "_keras_history",
    "_inbound_nodes",
})
# TFLiteConverter's constructors: the converter runs in tfquant/tflite/converter.py only.
CONVERTER_FACTORIES = frozenset({"from_keras_model", "from_saved_model", "from_concrete_functions"})
# Modules whose import is private API, or reads / writes the flatbuffer directly.
PRIVATE_MODULES = (
    "tensorflow_model_optimization.python",
    "tf_keras.src",
    "keras.src",
    "tensorflow.python",
    "tensorflow.lite.python",
    # The flatbuffer schema and its helpers: .tflite files are read and written by
    # tfquant/tflite/flatbuffer.py only.
    "ai_edge_litert.schema_py_generated",
    "ai_edge_litert.tools",
)


def _sources(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _is_private_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in PRIVATE_MODULES)


def boundary_violations(path: Path, *, root: Path) -> list[str]:
    """``file:line what`` for each private-API use or ``Interpreter(`` call in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    docstrings = {
        id(n.body[0].value) for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }

    def at(node: ast.AST, what: str) -> None:
        found.append(f"{path.relative_to(root)}:{node.lineno} {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            if not (node.attr == "_interpreter" and isinstance(node.value, ast.Name) and node.value.id == "self"):
                at(node, f"private attribute .{node.attr}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _is_private_module(alias.name):
                    at(node, f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if _is_private_module(node.module) or _is_private_module(f"{node.module}.{alias.name}"):
                    at(node, f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == "Interpreter":
                at(node, "Interpreter(...)")
            elif called in CONVERTER_FACTORIES:
                at(node, f"TFLiteConverter.{called}(...)")
            elif (
                called in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in PRIVATE_ATTRIBUTES
            ):
                at(node, f"private attribute {called}(..., {node.args[1].value!r})")
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str)
            and "Interpreter(" in node.value and id(node) not in docstrings
        ):
            at(node, "Interpreter( in a code string")
    return found


def test_private_apis_and_interpreters_only_in_the_boundary() -> None:
    offenders = [
        v for p in _sources(PACKAGE, ROOT / "experiments")
        if BOUNDARY not in p.parents
        for v in boundary_violations(p, root=ROOT)
    ]
    assert not offenders, (
        "private TF / LiteRT / tfmot / tf-keras API, TFLiteConverter or Interpreter( outside "
        "tfquant/tflite/ (put it behind a function there):\n  " + "\n  ".join(offenders)
    )


def test_boundary_check_detects_each_kind_of_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""Docstrings may mention interpreter._interpreter and Interpreter(."""\n'
        "from ai_edge_litert.interpreter import Interpreter\n"
        "from tensorflow_model_optimization.python.core import x\n"
        "import tf_keras.src.layers; from ai_edge_litert import schema_py_generated\n"
        "def f(i, c):\n"
        "    Interpreter(model_content=b'')\n"
        "    i._interpreter.NumNodes()\n"
        "    getattr(i, '_keras_history', None)\n"
        "    i._get_ops_details()\n"
        "    c._experimental_calibrate_only = True\n"
        "    return 'python -c \"Interpreter(model_path=p)\"', tf.lite.TFLiteConverter.from_keras_model(m)\n"
        "class Runner:\n"
        "    def g(self):\n"
        "        return self._interpreter\n"
    )
    found = boundary_violations(bad, root=tmp_path)
    lines = sorted({int(v.split(":")[1].split()[0]) for v in found})
    assert lines == [3, 4, 6, 7, 8, 9, 10, 11], found
    assert all(v.startswith("bad.py:") for v in found)
    assert len(found) == 10  # lines 4 and 11 hold two each


# --- import cycles -----------------------------------------------------------------------


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports (module-level and inside functions).

    ``from P import m`` where ``P.m`` is a module is an edge to ``P.m`` only, not to ``P``'s
    ``__init__``; ``from P import name`` (a name defined in ``P``) is an edge to ``P``.
    """
    modules = {_module_name(p, root): p for p in _sources(root)}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [
                    f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                    for a in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges[module].add(target)
    return edges


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                cycles.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(edges) + 100))
    try:
        for v in sorted(edges):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return cycles


def test_no_import_cycle_between_tfquant_modules() -> None:
    cycles = import_cycles(import_graph(PACKAGE))
    assert not cycles, "import cycles between tfquant modules:\n  " + "\n  ".join(
        " <-> ".join(c) for c in cycles
    )


def test_cycle_check_detects_a_function_level_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.sub import a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("import pkg.sub.a\n")
    edges = import_graph(pkg)
    assert edges["pkg"] == {"pkg.sub.a"}  # `from P import m`: edge to P.m, not to P
    assert import_cycles(edges) == [["pkg.sub.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert import_cycles(import_graph(pkg)) == []


# --- module size -------------------------------------------------------------------------


def long_modules(root: Path, limit: int = MAX_MODULE_LINES) -> list[str]:
    """``path (N lines)`` of each module under ``root`` longer than ``limit`` lines."""
    out = []
    for p in _sources(root):
        n = len(p.read_text().splitlines())
        if n > limit:
            out.append(f"{p.relative_to(root.parent)} ({n} lines)")
    return out


def test_no_library_module_over_600_lines() -> None:
    too_long = long_modules(PACKAGE)
    assert not too_long, (
        f"modules over {MAX_MODULE_LINES} lines (split them by what they do):\n  "
        + "\n  ".join(too_long)
    )


@pytest.mark.parametrize("lines,expected", [(600, []), (601, ["pkg/m.py (601 lines)"])])
def test_size_check_counts_lines(tmp_path: Path, lines: int, expected: list[str]) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "m.py").write_text("x = 1\n" * lines)
    assert long_modules(pkg) == expected
