"""``python -m training <model> [flags]``: one entry point for every training run.

    python -m training dcgan --variant B
    python -m training ddpm
    python -m training dann --target svhn --mode dann
    python -m training classifier
    python -m training distill          # a few-step student of the served digit sampler

Every run: a progress bar with its losses, sample grids or validation accuracy in
its run folder, ``--resume``, a fixed and printed ``--seed``, CPU or CUDA chosen
automatically, bf16 autocast on CUDA, and multi-GPU DDP when started under
``torchrun`` or ``accelerate launch``.
"""

from __future__ import annotations

import argparse

from . import classifier, dann, dcgan, ddpm, distill
from .common import command_line

TRAINERS = {"dcgan": dcgan, "ddpm": ddpm, "dann": dann, "classifier": classifier, "distill": distill}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="model", required=True)
    for name, module in TRAINERS.items():
        module.add_args(sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0]))
    args = parser.parse_args(argv)
    args.command = command_line(None if argv is None else ["training", *argv])  # as run, also when called in-process
    TRAINERS[args.model].train(args)


if __name__ == "__main__":
    main()
