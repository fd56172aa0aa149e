"""``python -m bench [--sections service,...] [--json docs/bench.json]``: run benchmark sections.

Each section's result is merged under its name into the JSON file, so running
one section keeps the others' last numbers. To add a section, write a module
with ``run(args) -> dict`` (and, for its own flags, ``add_args(parser)``, which
adds an argument group) and register it in ``SECTIONS``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType

from contract.settings import REPO

from .common import load_average, machine
from .markdown import render

# Section name -> module. Every module is imported before the flags are parsed
# (for its ``add_args``), whichever sections run.
SECTIONS: dict[str, str] = {
    "samplers": "bench.samplers",
    "runtime": "bench.runtime",
    "service": "bench.service",
    "memory": "bench.memory",
    "load": "bench.load",
    "quota": "bench.quota",
}


def parse_args(argv: list[str] | None, modules: dict[str, ModuleType]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--json", type=Path, default=REPO / "docs" / "bench.json", help="results file; each section is merged in"
    )
    # Flags more than one section reads.
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=Path(os.environ.get("CHECKPOINT_DIR") or REPO / "checkpoints"),
        help="model cards and weights (default: $CHECKPOINT_DIR, else the shipped checkpoints/)",
    )
    parser.add_argument(
        "--data-source",
        type=Path,
        default=Path(os.environ.get("DATA_SOURCE") or REPO.parent / "shared" / "data"),
        help="the raw datasets (default: $DATA_SOURCE, else ../shared/data)",
    )
    parser.add_argument("--device", default="cpu", help="device of the workers and of the in-process runs")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ["TORCH_THREADS"]) if os.environ.get("TORCH_THREADS") else None,
        help="torch threads (default: $TORCH_THREADS, else as `make run` sizes the workers for this machine)",
    )
    for module in modules.values():
        add_args = getattr(module, "add_args", None)
        if add_args is not None:
            add_args(parser)
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}: choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    modules = {name: importlib.import_module(path) for name, path in SECTIONS.items()}
    args = parse_args(argv, modules)
    results = json.loads(args.json.read_text()) if args.json.is_file() else {}
    for name in args.sections:
        print(f"== {name} ==", flush=True)
        started, load = time.perf_counter(), load_average()
        section = modules[name].run(args)
        section.setdefault("machine", {**machine(), "load_average_at_start": load})
        section["wall_s"] = round(time.perf_counter() - started, 1)
        results[name] = section
        # Written after every section, so a later failure keeps what was measured.
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        args.json.with_suffix(".md").write_text(render(results))
        print(f"== {name}: {section['wall_s']} s, written to {args.json} ==", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
