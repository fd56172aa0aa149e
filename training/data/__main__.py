"""CLI: ``python -m training.data --source ../shared/data --out data/hw2_data``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from training.data.build import PARTS, DataSourceError, build_all


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown}; choose from {','.join(PARTS)}")
    return parts


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.data",
        description="Build the DLCV 2022 HW2 data layout (hw2_data/) from the raw public datasets.",
    )
    parser.add_argument(
        "--source", type=Path, default=Path("../shared/data"), help="raw datasets (default: %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=Path("data/hw2_data"), help="output root (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="MNIST-M seed (default: %(default)s)")
    parser.add_argument("--limit", type=_non_negative, default=None, help="first N images per split (for tests)")
    parser.add_argument("--only", type=_parts, default=None, help=f"comma list of parts, of {','.join(PARTS)}")
    parser.add_argument("--workers", type=_non_negative, default=2, help="processes (default: %(default)s)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the sources")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        counts = build_all(
            args.source, args.out, seed=args.seed, limit=args.limit, parts=args.only,
            workers=args.workers, verify=not args.no_verify,
        )
    except (DataSourceError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the output is incomplete", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - start

    print(f"\nbuilt {args.out} (seed {args.seed}) in {elapsed:.1f} s")
    print(f"{'part':<8}{'train':>8}{'val':>8}")
    for part, split_counts in counts.items():
        print(f"{part:<8}{split_counts['train']:>8,}{split_counts['val']:>8,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
