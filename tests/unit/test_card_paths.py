"""Shipped model cards and generated docs name no machine's folders and no unexpanded shell variables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from training.common import REPO, command_line

MACHINE_PATH = re.compile(r"(^|[\s='\"])/(?:work|tmp|root|home|Users|mnt|opt)/")
SHELL_VARIABLE = re.compile(r"\$\{?[A-Z_][A-Z0-9_]*")


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize("path", sorted((REPO / "checkpoints").glob("*.json")), ids=lambda p: p.name)
def test_cards_hold_no_machine_paths_or_shell_variables(path: Path) -> None:
    for text in _strings(json.loads(path.read_text())):
        assert not MACHINE_PATH.search(text), f"{path.name}: {text!r}"
        assert not SHELL_VARIABLE.search(text), f"{path.name}: {text!r}"


@pytest.mark.parametrize("path", [REPO / "docs" / "bench.json", REPO / "docs" / "bench.md", REPO / "docs" / "report" / "README.md"], ids=lambda p: p.name)
def test_generated_docs_hold_no_machine_paths(path: Path) -> None:
    assert not MACHINE_PATH.search(path.read_text()), path.name


def test_the_recorded_command_is_relative_to_the_checkout(tmp_path: Path) -> None:
    argv = ["training", "ddpm", "--out", str(REPO / "runs" / "x"), "--data", str(tmp_path), "--lr", "1e-4"]
    assert command_line(argv) == f"python -m training ddpm --out runs/x --data {tmp_path} --lr 1e-4"
