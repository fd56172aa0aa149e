"""The launcher's restart policy: later each time a child dies young, from the start again once it was stable."""

from __future__ import annotations

from dataclasses import dataclass

from stack.supervisor import Backoff, Child, Supervisor


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


@dataclass
class FakeProcess:
    pid: int
    returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def test_a_dead_child_is_reaped_at_once_and_restarted_when_due() -> None:
    processes = {"worker": FakeProcess(1)}
    events: list[str] = []

    def restart() -> None:
        processes["worker"] = FakeProcess(processes["worker"].pid + 1)

    child = Child(
        "worker",
        current=lambda: processes["worker"],
        restart=restart,
        on_death=lambda p: events.append(f"reap {p.pid}"),
        before_restart=lambda: events.append("give back"),
    )
    supervisor = Supervisor([child], Backoff(first_s=1, max_s=8, stable_s=60), say=events.append)
    supervisor.backoff.started("worker", now=0)
    assert supervisor.tick(now=1) == [] and events == []  # alive
    processes["worker"].returncode = -9
    assert supervisor.tick(now=2) == []
    assert events == ["the worker exited with code -9; restarting it in 1 s", "reap 1"]
    assert supervisor.tick(now=2.5) == []  # not due yet: nothing more happens
    assert supervisor.tick(now=3) == ["worker"]
    assert events[2:] == ["give back", "restarted the worker (pid 2)"]
    assert supervisor.tick(now=4) == []  # the new process is alive


def test_a_failed_restart_waits_longer_before_the_next_try() -> None:
    dead = FakeProcess(7, returncode=1)
    tries: list[float] = []

    def restart() -> None:
        tries.append(len(tries))
        raise RuntimeError("port in use")

    said: list[str] = []
    backoff = Backoff(first_s=1, max_s=8, stable_s=60)
    supervisor = Supervisor([Child("API", lambda: dead, restart)], backoff, say=said.append)
    supervisor.backoff.started("API", now=0)
    supervisor.tick(now=1)  # death noticed: due at 2
    assert supervisor.tick(now=2) == [] and len(tries) == 1
    assert "could not restart the API: port in use" in said
    assert supervisor.tick(now=3) == [] and len(tries) == 1  # the next wait is 2 s, not 1
    assert supervisor.tick(now=4) == [] and len(tries) == 2
