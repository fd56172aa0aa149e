"""What this CPU can do, read at run time: the project's machines differ, and bf16 is fast only where the
CPU has bf16 instructions (elsewhere it is emulated and much slower than fp32)."""

from __future__ import annotations

import platform
from pathlib import Path

# x86 flags of native bf16 arithmetic (AVX512-BF16 dot products, AMX tiles), as Linux lists them.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo() -> tuple[str, set[str]] | None:
    """(model name, flags) of the first CPU in /proc/cpuinfo; None where there is no such file."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return None
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def _openvino_lists_bf16() -> bool:
    """OpenVINO's own answer, for systems without /proc/cpuinfo: its CPU plugin lists "BF16" only where native."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # not installed, or no CPU plugin: no bf16 we could use either
        return False


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 instructions."""
    info = _cpuinfo()
    if info is None:
        return _openvino_lists_bf16()
    return bool(info[1] & BF16_FLAGS)


def cpu_description() -> dict[str, object]:
    """The CPU a measurement ran on, for the model card: its name and its bf16 flags."""
    info = _cpuinfo()
    model, flags = info if info is not None else (platform.processor(), set())
    return {"model": model or platform.machine(), "bf16_flags": sorted(flags & BF16_FLAGS), "bf16": cpu_has_bf16()}
