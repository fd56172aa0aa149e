"""``python -m bench``: sections by name, each merged into the JSON file under its name."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench.common import percentiles


@pytest.fixture
def fake_section(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("fake_bench_section")

    def add_args(parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument_group("fake").add_argument("--fake-size", type=int, default=3)

    module.add_args = add_args  # type: ignore[attr-defined]
    module.run = lambda args: {"size": args.fake_size, "device": args.device}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_bench_section", module)
    monkeypatch.setattr(bench_main, "SECTIONS", {**bench_main.SECTIONS, "fake": "fake_bench_section"})
    return module


def test_a_section_is_merged_under_its_name_and_the_others_kept(fake_section: types.ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"service": {"kept": True}, "fake": {"size": 0}}))
    assert bench_main.main(["--sections", "fake", "--fake-size", "7", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["service"] == {"kept": True}
    assert written["fake"]["size"] == 7 and written["fake"]["device"] == "cpu"
    assert {"machine", "wall_s"} <= set(written["fake"]) and "cpus" in written["fake"]["machine"]


def test_unknown_sections_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_main.main(["--sections", "service,nope"])
    assert "unknown sections ['nope']" in capsys.readouterr().err


def test_the_service_section_is_registered() -> None:
    assert bench_main.SECTIONS["service"] == "bench.service"


def test_percentiles_are_observed_values() -> None:
    assert percentiles([3.0, 1.0, 2.0]) == (2.0, 3.0)
    assert percentiles([float(i) for i in range(1, 101)]) == (50.5, 95.0)
