"""The memory section's measuring parts: /proc counters over a process tree, and the uploads it sends."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from bench import __main__ as bench_main
from bench.memory import AnonPeak, memory, uploads


def test_memory_covers_a_process_and_its_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        measured = memory(os.getpid())
        assert measured["processes"] >= 2
        assert measured["peak_mb"] >= measured["rss_mb"] >= measured["anon_mb"] > 0
        with AnonPeak({"me": os.getpid()}, every_s=0.001) as anon:
            block = bytearray(64 * 2**20)  # 64 MiB, touched
            block[::4096] = b"x" * len(block[::4096])
        assert anon.peak["me"] >= 64 * 2**20
    finally:
        child.kill()
        child.wait()


def test_uploads_are_large_pngs_of_real_digits_with_their_whole_decode(data_source: Path) -> None:
    large, small, source, worst = uploads(3, 512, data_source)
    assert source == "USPS test digits" and len(large) == len(small) == 3
    assert Image.open(io.BytesIO(large[0])).size == (512, 512)
    assert Image.open(io.BytesIO(small[0])).size == (28, 28)
    assert worst <= 1  # the API's decode is the whole-image decode, within a level


def test_the_memory_section_is_registered() -> None:
    assert bench_main.SECTIONS["memory"] == "bench.memory"
