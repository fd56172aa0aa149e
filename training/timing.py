"""How fast a training loop runs: steps/s and images/s for the log, and an optional step profile."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device, so a clock read afterwards covers the work queued so far."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Throughput:
    """Steps/s and images/s since the last report and over the whole loop.

    Read it only where the loop already waits for the device (the loss read-back),
    so measuring adds no stall of its own.
    """

    def __init__(self, images_per_step: int, start_step: int) -> None:
        self.images_per_step = images_per_step
        self.start_step = start_step
        self.start = self.mark = time.monotonic()
        self.mark_step = start_step

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time that is not training (sample grids, resume states) stays out of the rates."""
        begin = time.monotonic()
        yield
        spent = time.monotonic() - begin
        self.start += spent
        self.mark += spent

    def _rates(self, steps: int, seconds: float) -> dict:
        per_s = steps / seconds if seconds > 0 else 0.0
        return {"steps_per_s": round(per_s, 3), "images_per_s": round(per_s * self.images_per_step, 1)}

    def interval(self, step: int) -> dict:
        """Rates since the previous call (or the start), then a new interval begins."""
        now = time.monotonic()
        rates = self._rates(step - self.mark_step, now - self.mark)
        self.mark, self.mark_step = now, step
        return rates

    def summary(self, step: int) -> dict:
        seconds = time.monotonic() - self.start
        return {"steps": step - self.start_step, "seconds": round(seconds, 1), **self._rates(step - self.start_step, seconds)}


class StepProfiler:
    """Where a step's time goes, over the first ``seconds`` of the loop (``--profile-seconds``).

    Each phase waits for the device at both ends, so its time is the device's and
    not the launch queue's; only the profiled window pays for that lost overlap.
    A torch.profiler table (top operators) of a few steps in the window is written
    beside the timings, to tell kernel-bound from launch-bound.
    """

    def __init__(self, seconds: float, device: torch.device, path: Path, torch_steps: tuple[int, int] = (5, 10)) -> None:
        self.seconds, self.device, self.path = seconds, device, path
        self.active = seconds > 0
        self.start = time.monotonic()
        self.steps = 0
        self.totals: dict[str, float] = defaultdict(float)
        self.torch_steps = torch_steps
        self.torch_prof: torch.profiler.profile | None = None
        self.torch_table = ""

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.active:
            yield
            return
        synchronize(self.device)
        begin = time.perf_counter()
        yield
        synchronize(self.device)
        self.totals[name] += time.perf_counter() - begin

    def step_done(self) -> str | None:
        """Count a profiled step; returns the report once the window closes."""
        if not self.active:
            return None
        self.steps += 1
        self._torch_profiler()
        if time.monotonic() - self.start < self.seconds:
            return None
        return self._finish()

    def _finish(self) -> str:
        self.active = False
        if self.torch_prof is not None:  # the window closed before the torch.profiler steps were done
            self.torch_steps = (self.torch_steps[0], self.steps)
            self._torch_profiler()
        return self._report()

    def close(self) -> str | None:
        """The report of a loop that ended inside the window (None if it was already given)."""
        return self._finish() if self.active and self.steps else None

    def _torch_profiler(self) -> None:
        first, last = self.torch_steps
        try:  # the operator table is a bonus: a profiler that fails must not cost the training run
            if self.steps == first and self.torch_prof is None:
                activities = [torch.profiler.ProfilerActivity.CPU]
                if self.device.type == "cuda":
                    activities.append(torch.profiler.ProfilerActivity.CUDA)
                self.torch_prof = torch.profiler.profile(activities=activities)
                self.torch_prof.__enter__()
            elif self.steps == last and self.torch_prof is not None:
                self.torch_prof.__exit__(None, None, None)
                self._keep_table()
        except Exception as err:  # noqa: BLE001 (see the comment at the try)
            self.torch_prof, self.torch_table = None, f"torch.profiler failed: {err!r}"

    def _keep_table(self) -> None:
        assert self.torch_prof is not None
        sort = "self_device_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        first, last = self.torch_steps
        self.torch_table = f"torch.profiler, steps {first}..{last} of the window, sorted by {sort}:\n"
        self.torch_table += self.torch_prof.key_averages().table(sort_by=sort, row_limit=20)
        self.torch_prof = None

    def _report(self) -> str:
        measured = sum(self.totals.values())
        lines = [f"step profile over the first {self.steps} steps ({measured:.1f}s measured, device synchronised per phase):"]
        for name, seconds in self.totals.items():
            lines.append(f"  {name:<10} {1000 * seconds / self.steps:8.2f} ms/step  {100 * seconds / max(measured, 1e-9):5.1f}%")
        lines.append(f"  {'total':<10} {1000 * measured / self.steps:8.2f} ms/step  -> {self.steps / max(measured, 1e-9):.2f} steps/s unoverlapped")
        report = "\n".join(lines)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(report + "\n\n" + self.torch_table + "\n")
        return report
