"""Train a DCGAN (variant A or B) on 64x64 faces, as in the PyTorch DCGAN example.

    python -m training dcgan --variant B --epochs 25
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.checkpoints import save_model
from models.dcgan import DCGANConfig, Discriminator, Generator, weights_init

from .common import (
    Budget,
    JsonLog,
    add_common_args,
    load_state,
    make_accelerator,
    save_grid,
    save_state,
    seed_everything,
    shuffled_batches,
    training_card,
)
from .data.datasets import load_faces


def add_args(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=25, batch_size=128, lr=2e-4)
    parser.add_argument("--variant", choices=["A", "B"], default="B", help="A: no BatchNorm, ReLU in D; B: standard DCGAN")
    parser.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (DCGAN paper: 0.5)")
    parser.add_argument("--nz", type=int, default=100, help="latent size")
    parser.add_argument("--snapshot-every", type=int, default=0, help="also keep the generator every N epochs in <out>/snapshots/ (0: never), for `python -m training.evaluate faces-snapshots`")
    parser.add_argument("--save-every-minutes", type=float, default=5.0, help="wall time between resume states (and at each run's end)")


def train(args: argparse.Namespace) -> dict:
    name = args.name or f"dcgan-{args.variant}"
    out = Path(args.out or f"runs/{name}")
    seed_everything(args.seed)
    acc = make_accelerator(args)
    print(f"[{name}] seed {args.seed}, device {acc.device}, precision {acc.mixed_precision}")

    faces = load_faces(args.data, "train", limit=args.limit)  # uint8 (N, 3, 64, 64), kept in memory
    faces = faces.to(acc.device)
    cfg = DCGANConfig(variant=args.variant, nz=args.nz)
    net_g, net_d = Generator(cfg), Discriminator(cfg)
    net_g.apply(weights_init)
    net_d.apply(weights_init)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    net_g, net_d, opt_g, opt_d = acc.prepare(net_g, net_d, opt_g, opt_d)

    state_path = out / "state.pt"
    epoch, step = 0, 0
    gen = torch.Generator().manual_seed(args.seed)
    fixed_noise = torch.randn(32, cfg.nz, 1, 1, generator=torch.Generator().manual_seed(1234)).to(acc.device)
    budget = Budget(args)
    if args.resume and (state := load_state(state_path)) is not None:
        budget.earlier = state.get("wall_time_s", 0.0)
        acc.unwrap_model(net_g).load_state_dict(state["generator"])
        acc.unwrap_model(net_d).load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        epoch, step = state["epoch"], state["step"]
        gen.set_state(state["rng"])
        print(f"[{name}] resumed at epoch {epoch}, step {step}")

    log = JsonLog(out / "log.jsonl", acc.is_main_process)
    stopped = False
    saved_at = budget.elapsed
    while epoch < args.epochs and not stopped:
        batches = list(shuffled_batches(len(faces), args.batch_size, gen, rank=acc.process_index, world=acc.num_processes))
        bar = tqdm(batches, desc=f"{name} epoch {epoch + 1}/{args.epochs}", disable=not acc.is_local_main_process)
        for idx in bar:
            real = faces[idx].float() / 127.5 - 1
            n = real.shape[0]
            noise = torch.randn(n, cfg.nz, 1, 1, device=acc.device)
            # (1) D: maximise log D(x) + log(1 - D(G(z)))
            with acc.autocast():
                fake = net_g(noise)
                d_real = net_d(real).float()
                d_fake = net_d(fake.detach()).float()
            loss_d = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(
                d_fake, torch.zeros_like(d_fake)
            )
            opt_d.zero_grad(set_to_none=True)
            acc.backward(loss_d)
            opt_d.step()
            # (2) G: maximise log D(G(z)) (the non-saturating loss)
            with acc.autocast():
                d_gen = net_d(fake).float()
            loss_g = F.binary_cross_entropy(d_gen, torch.ones_like(d_gen))
            opt_g.zero_grad(set_to_none=True)
            acc.backward(loss_g)
            opt_g.step()
            step += 1
            if step % 10 == 0:  # reading losses back waits for the GPU: not on every step
                ld, lg, dx = torch.stack([loss_d.detach(), loss_g.detach(), d_real.detach().mean()]).tolist()
                bar.set_postfix(loss_d=f"{ld:.3f}", loss_g=f"{lg:.3f}", D_x=f"{dx:.2f}")
                if step % 50 == 0:
                    log.write(step=step, epoch=epoch, loss_d=ld, loss_g=lg)
            if budget.exhausted(step):
                stopped = True
                break
        if not stopped:
            epoch += 1
        if not acc.is_main_process:
            continue
        g = acc.unwrap_model(net_g)
        if args.snapshot_every and not stopped and epoch % args.snapshot_every == 0:
            save_model(g, out / "snapshots", f"epoch_{epoch:04d}", {"training": {"epochs_completed": epoch, "steps": step, "wall_time_s": round(budget.total, 1)}})
        if stopped or epoch >= args.epochs or budget.elapsed - saved_at >= args.save_every_minutes * 60:
            saved_at = budget.elapsed
            g.eval()
            with torch.no_grad():
                save_grid((g(fixed_noise).float() + 1) / 2, out / "samples" / f"epoch_{epoch:03d}.png", nrow=8)
            g.train()
            save_state(
                state_path,
                {
                    "generator": g.state_dict(),
                    "discriminator": acc.unwrap_model(net_d).state_dict(),
                    "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "rng": gen.get_state(),
                    "wall_time_s": budget.total,
                },
            )

    card = training_card(
        args, acc, budget, epochs_completed=epoch, steps=step, epochs_planned=args.epochs, beta1=args.beta1,
        optimizer="Adam", loss="BCE (non-saturating G loss)", stopped_early=stopped,
    )
    card["data"] = {"dataset": "CelebA aligned faces, 64x64", "root": str(args.data), "split": "face/train", "images": len(faces)}
    if acc.is_main_process:
        # Only the generator ships: the discriminator is a training-time object.
        path = save_model(acc.unwrap_model(net_g), args.checkpoint_dir, name, card)
        print(f"[{name}] {step} steps, {epoch} epochs in {budget.elapsed:.0f}s -> {path}")
    return card
