"""The load section's plan and tally (the burst itself runs against a real stack: ``python -m bench --sections load``)."""

from __future__ import annotations

from bench import __main__ as bench_main
from bench.load import MIX, Outcome, Plan, summarize
from bench.markdown import render


def test_the_plan_is_seeded_and_keeps_the_mix() -> None:
    plan = Plan.draw(2000, seed=0)
    assert plan == Plan.draw(2000, seed=0) and plan != Plan.draw(2000, seed=1)
    for kind, share in MIX.items():
        assert abs(plan.kinds.count(kind) / 2000 - share) < 0.05
    assert set(plan.faces_n) == set(range(1, 9)) and set(plan.classify_files) == {1, 2, 3, 4}


def _jobs(accepted: int, succeeded: int, failed: int = 0, unfinished: int = 0) -> dict:
    return {"accepted": accepted, "succeeded": succeeded, "failed": failed, "unfinished": unfinished, "errors": []}


def test_only_429_with_retry_after_is_not_an_error() -> None:
    outcomes = [
        Outcome("faces", 200, 0.1, job={"id": "a"}),
        Outcome("classify", 202, 0.2, job={"id": "b"}),
        Outcome("poll", 200, 0.01),
        Outcome("faces", 429, 0.01, retry_after=True),
        Outcome("faces", 429, 0.01, retry_after=False),
        Outcome("classify", 500, 0.3),
        Outcome("poll", "ReadTimeout", 5.0),
    ]
    row = summarize(outcomes, 2.0, _jobs(2, 2))
    assert row["refused_429_with_retry_after"] == 1
    assert row["errors"] == 3  # the bare 429, the 500, the timeout
    assert row["status_counts"]["faces"] == {"200": 1, "429": 2}
    assert row["status_counts"]["poll"] == {"200": 1, "ReadTimeout": 1}
    assert row["rps"] == 3.5 and row["latency"]["classify"]["p95_ms"] == 300.0


def test_accepted_jobs_that_fail_or_never_finish_are_errors() -> None:
    outcomes = [Outcome("faces", 202, 0.1, job={"id": str(i)}) for i in range(3)]
    assert summarize(outcomes, 1.0, _jobs(3, 1, failed=1, unfinished=1))["errors"] == 2


def test_the_section_is_registered_and_rendered() -> None:
    assert bench_main.SECTIONS["load"] == "bench.load"
    row = summarize([Outcome("faces", 200, 0.1, job={"id": "a"})], 1.0, _jobs(1, 1))
    page = render({"load": {"config": {"requests": 1, "wait_s": 10}, "levels": {"32": row}}})
    assert "## Load" in page and "| 32 | 1.0 | faces | 200: 1 |" in page
