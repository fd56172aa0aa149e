"""Property-based tests of the whole HTTP API against its own OpenAPI schema (schemathesis).

Schemathesis reads ``/openapi.json`` of the real stack and sends what the
schema allows (and what it forbids), with a fixed seed and a bounded number of
cases per operation, then checks every answer: no server error; status code,
content type and body as documented; schema-valid requests accepted and
schema-violating ones refused. Its own CLI runs it (``schemathesis.toml`` beside
this file holds the settings, ``schemathesis_hooks.py`` the rules the schema
cannot state), so a failure prints a ``curl`` line that reproduces it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .stack import PLUMBING_LIMITS, Stack

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
# Digit images per positive digits case: the run's time budget (see schemathesis_hooks.py).
BUDGET_DIGIT_IMAGES = 10


def _diffusion_timesteps(service: Stack) -> int:
    models = service.client.get("/models").json()
    return next(m["num_train_timesteps"] for w in models["workers"] for m in w["models"] if m["role"] == "digits")


def test_every_answer_keeps_the_openapi_contract(service: Stack, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py"),
        "GENSERVE_MAX_DIGIT_IMAGES": str(PLUMBING_LIMITS["max_digit_images"]),
        "GENSERVE_DIFFUSION_TIMESTEPS": str(_diffusion_timesteps(service)),
        "GENSERVE_ST_DIGIT_IMAGES": str(BUDGET_DIGIT_IMAGES),
        "NO_COLOR": "1",
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{service.base_url}/openapi.json",
        "--report",
        "json",
        "--report-dir",
        str(tmp_path / "report"),
        "--no-color",
    ]
    # Run in tmp_path: schemathesis and hypothesis keep caches in the working directory.
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540, check=False)
    reports = list((tmp_path / "report").glob("*.json"))
    assert reports, f"schemathesis wrote no report:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    report = json.loads(reports[0].read_text())
    cases, failures = report["test_cases"], report["failures"]
    summary = ", ".join(f"{f['code']} {f['title']}: {f['count']}" for f in failures) or "no failures"
    print(f"schemathesis: {cases['generated']} cases, {summary}")
    assert run.returncode == 0 and not failures and not report["errors"], run.stdout[-12000:]
    # Every operation was tested, and enough cases ran to mean something.
    operations = report["operations"]
    assert operations["tested"] == operations["total"] > 0 and cases["generated"] >= 20 * operations["total"]
