"""Restart policy for the launcher's children: a process that dies is started again, later each time.

Why not a supervisor program: ``honcho`` (a Procfile runner, like foreman) stops
every process when one exits and never restarts any; ``supervisord`` restarts,
but brings a config file, a daemon and a control socket for what is one loop
here. Docker compose has ``restart:`` policies for the container path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


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
