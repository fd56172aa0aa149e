"""The launcher's restart policy: later each time a child dies young, from the start again once it was stable."""

from __future__ import annotations

from api.supervision import Backoff


def test_restarts_back_off_and_reset_after_a_stable_run() -> None:
    b = Backoff(first_s=1, max_s=8, stable_s=60)
    b.started("worker", now=0)
    assert not b.pending("worker")
    assert b.died("worker", now=5) == 1  # first death: the first delay
    assert b.pending("worker") and not b.due("worker", now=5.5) and b.due("worker", now=6)
    delays = []
    t = 6.0
    for _ in range(5):  # dies right after every restart
        b.started("worker", now=t)
        delays.append(b.died("worker", now=t + 1))
        t += 1 + delays[-1]
    assert delays == [2, 4, 8, 8, 8]
    b.started("worker", now=t)
    assert b.died("worker", now=t + 61) == 1  # it had been up for a minute: start over
    assert not b.pending("api") and not b.due("api")
