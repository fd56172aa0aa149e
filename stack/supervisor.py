"""Restarting the launcher's children: a process that dies is started again, later each time.

Why not a supervisor program: ``honcho`` (a Procfile runner, like foreman) stops
every process when one exits and never restarts any; ``supervisord`` restarts,
but brings a config file, a daemon and a control socket for what is one loop
here. Docker compose has ``restart:`` policies for the container path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class Process(Protocol):
    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...


@dataclass
class Backoff:
    """Per child: the next restart waits twice as long as the last, up to ``max_s``;
    a child that stayed up ``stable_s`` starts again from ``first_s``."""

    first_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0
    _delay: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)

    def started(self, name: str, now: float | None = None) -> None:
        self._started[name] = time.monotonic() if now is None else now
        self._due.pop(name, None)

    def pending(self, name: str) -> bool:
        """Whether a death of ``name`` is recorded and its restart not yet done."""
        return name in self._due

    def died(self, name: str, now: float | None = None) -> float:
        """Record a death; returns the seconds until the restart is due."""
        now = time.monotonic() if now is None else now
        lived = now - self._started.get(name, now)
        delay = self.first_s if lived >= self.stable_s else min(self.max_s, self._delay.get(name, self.first_s / 2) * 2)
        self._delay[name] = delay
        self._due[name] = now + delay
        return delay

    def due(self, name: str, now: float | None = None) -> bool:
        """Whether a dead child's restart time has come."""
        now = time.monotonic() if now is None else now
        return name in self._due and now >= self._due[name]


def _nothing(*_: object) -> None:
    return None


@dataclass
class Child:
    """One supervised process: how to find it now, how to start it again, and what its death calls for."""

    name: str
    current: Callable[[], Process | None]
    restart: Callable[[], object]
    on_death: Callable[[Process], None] = _nothing  # at once, e.g. reap what it left behind
    before_restart: Callable[[], None] = _nothing  # when the restart is due, e.g. give back its jobs


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Supervisor:
    """Polls its children; one that exited is restarted after ``backoff``'s delay, and a failed start waits longer."""

    children: list[Child]
    backoff: Backoff = field(default_factory=Backoff)
    say: Callable[[str], None] = _say

    def __post_init__(self) -> None:
        for child in self.children:
            self.backoff.started(child.name)

    def tick(self, now: float | None = None) -> list[str]:
        """One look at every child; returns the names of those restarted."""
        restarted = []
        for child in self.children:
            process = child.current()
            if process is None or process.poll() is None:
                continue
            if not self.backoff.pending(child.name):
                delay = self.backoff.died(child.name, now)
                self.say(f"the {child.name} exited with code {process.returncode}; restarting it in {delay:.0f} s")
                child.on_death(process)
            elif self.backoff.due(child.name, now) and self._restart(child, now):
                restarted.append(child.name)
        return restarted

    def _restart(self, child: Child, now: float | None) -> bool:
        child.before_restart()
        try:
            child.restart()
        except (RuntimeError, TimeoutError, OSError) as err:
            self.say(f"could not restart the {child.name}: {err}")
            self.backoff.started(child.name, now)  # a failed start counts as a short life: the next wait is longer
            self.backoff.died(child.name, now)
            return False
        self.backoff.started(child.name, now)
        process = child.current()
        self.say(f"restarted the {child.name} (pid {process.pid if process else '?'})")
        return True
