"""The shape of the product code: no function or method longer than MAX_LINES."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "bench", "contract", "models", "stack", "training", "workers")
MAX_LINES = 60  # from the ``def`` line to the last line of the body; decorators not counted


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function of ``tree``, nested ones and methods included, with its qualified name."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def test_no_function_is_longer_than_60_lines() -> None:
    too_long = []
    for folder in PRODUCT:
        for path in sorted((REPO / folder).rglob("*.py")):
            for name, node in _functions(ast.parse(path.read_text(), filename=str(path))):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {name} {length}")
    assert not too_long, f"functions longer than {MAX_LINES} lines (file:line name length):\n" + "\n".join(too_long)
