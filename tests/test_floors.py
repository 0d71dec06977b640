"""The import floors: data flows one way, and no genrec import hides inside a function.

::

    _io, _arrays < data < text, semantic_ids < training < models < testing, evaluation < config
        < runs < llm, serving < cli

A unit may import its own floor's modules only when they are the same unit (``llm`` never
imports ``serving``, nor the reverse). Imports under ``if TYPE_CHECKING:`` are annotations,
not dependencies, and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "genrec"

FLOORS: dict[str, int] = {
    "__init__": 0, "_io": 0, "_arrays": 0,
    "data": 1,
    "text": 2, "semantic_ids": 2,
    "training": 3,
    "models": 4,
    "testing": 5, "evaluation": 5,
    "config": 6,
    "runs": 7,
    "llm": 8, "serving": 8,
    "cli": 9,
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_pkg: bool) -> list[tuple[ast.AST, str]]:
    """``(node, imported genrec module)`` for every import outside ``if TYPE_CHECKING``."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node, a.name) for a in node.names if a.name.startswith("genrec")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("genrec"):
                out.append((node, name))
    return out


def _sources() -> list[tuple[Path, ast.AST, str]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8")), _module(p))
            for p in sorted(SRC.rglob("*.py"))]


def test_every_unit_has_a_floor() -> None:
    units = {_unit(m) for _, _, m in _sources()}
    assert units <= set(FLOORS), f"units without a floor: {sorted(units - set(FLOORS))}"


def test_imports_go_down_only() -> None:
    bad = []
    for path, tree, module in _sources():
        here = _unit(module)
        for node, name in _imports(tree, module, path.name == "__init__.py"):
            there = _unit(name)
            if there == here or there in ("__init__", "_io"):
                continue
            if FLOORS[there] >= FLOORS[here]:
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}: {here} imports {name}")
    assert not bad, "imports that go up or sideways:\n" + "\n".join(bad)


def test_no_genrec_import_inside_a_function() -> None:
    bad = []
    for path, tree, module in _sources():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node, name in _imports(fn, module, path.name == "__init__.py"):
                    bad.append(f"{path.relative_to(SRC)}:{node.lineno}: {fn.name} imports {name}")
    assert not bad, "function-local genrec imports:\n" + "\n".join(bad)
