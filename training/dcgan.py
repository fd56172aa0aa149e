"""Train a DCGAN (variant A or B) on 64x64 faces, as in the PyTorch DCGAN example.

    python -m training dcgan --variant B --epochs 25
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from contract.roles import FACE_CHECKPOINTS
from models.checkpoints import save_model
from models.dcgan import DCGANConfig, Discriminator, Generator, weights_init

from .common import add_common_args, save_grid
from .data.datasets import load_faces
from .trainer import Task, Trainer


def add_args(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=25, batch_size=128, lr=2e-4)
    parser.add_argument("--variant", choices=["A", "B"], default="B", help="A: no BatchNorm, ReLU in D; B: standard DCGAN")
    parser.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (DCGAN paper: 0.5)")
    parser.add_argument("--nz", type=int, default=100, help="latent size")
    parser.add_argument("--snapshot-every", type=int, default=0, help="also keep the generator every N epochs in <out>/snapshots/ (0: never), for `python -m training.evaluate faces-snapshots`")
    parser.add_argument("--save-every-minutes", type=float, default=5.0, help="wall time between resume states (and at each run's end)")


class DCGANTask(Task):
    """The alternating D/G steps of the DCGAN paper; only the generator ships."""

    def __init__(self, args: argparse.Namespace, trainer: Trainer) -> None:
        acc = self.acc = trainer.acc
        self.faces = load_faces(args.data, "train", limit=args.limit).to(acc.device)  # uint8 (N, 3, 64, 64), kept in memory
        self.n_items, self.args = len(self.faces), args
        self.cfg = cfg = DCGANConfig(variant=args.variant, nz=args.nz)
        net_g, net_d = Generator(cfg), Discriminator(cfg)
        net_g.apply(weights_init)
        net_d.apply(weights_init)
        opt_g = torch.optim.Adam(net_g.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
        opt_d = torch.optim.Adam(net_d.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
        self.net_g, self.net_d, self.opt_g, self.opt_d = acc.prepare(net_g, net_d, opt_g, opt_d)
        self.fixed_noise = torch.randn(32, cfg.nz, 1, 1, generator=torch.Generator().manual_seed(1234)).to(acc.device)

    def checkpointed(self) -> dict:
        return {"generator": self.net_g, "discriminator": self.net_d, "opt_g": self.opt_g, "opt_d": self.opt_d}

    def step(self, batch: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        acc, net_g, net_d = self.acc, self.net_g, self.net_d
        real = self.faces[batch].float() / 127.5 - 1
        noise = torch.randn(real.shape[0], self.cfg.nz, 1, 1, device=acc.device)
        # (1) D: maximise log D(x) + log(1 - D(G(z)))
        with acc.autocast():
            fake = net_g(noise)
            d_real = net_d(real).float()
            d_fake = net_d(fake.detach()).float()
        loss_d = F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))
        self.opt_d.zero_grad(set_to_none=True)
        acc.backward(loss_d)
        self.opt_d.step()
        # (2) G: maximise log D(G(z)) (the non-saturating loss)
        with acc.autocast():
            d_gen = net_d(fake).float()
        loss_g = F.binary_cross_entropy(d_gen, torch.ones_like(d_gen))
        self.opt_g.zero_grad(set_to_none=True)
        acc.backward(loss_g)
        self.opt_g.step()
        return {"loss_d": loss_d, "loss_g": loss_g, "D_x": d_real.mean()}

    def shipped(self) -> torch.nn.Module:
        return self.acc.unwrap_model(self.net_g)

    def after_epoch(self, trainer: Trainer) -> None:
        every = self.args.snapshot_every
        if every and trainer.epoch % every == 0 and self.acc.is_main_process:
            training = {"epochs_completed": trainer.epoch, "steps": trainer.step, "wall_time_s": round(trainer.budget.total, 1)}
            save_model(self.shipped(), trainer.out / "snapshots", f"epoch_{trainer.epoch:04d}", {"training": training})

    def before_save(self, trainer: Trainer) -> None:
        g = self.shipped().eval()
        with torch.no_grad():
            save_grid((g(self.fixed_noise).float() + 1) / 2, trainer.out / "samples" / f"epoch_{trainer.epoch:03d}.png", nrow=8)
        g.train()

    def card(self, card: dict, trainer: Trainer) -> dict:
        card["training"].update(beta1=self.args.beta1, optimizer="Adam", loss="BCE (non-saturating G loss)")
        card["data"] = {"dataset": "CelebA aligned faces, 64x64", "root": str(self.args.data), "split": "face/train", "images": len(self.faces)}
        return card


def train(args: argparse.Namespace) -> dict:
    trainer = Trainer(args, args.name or FACE_CHECKPOINTS[args.variant])
    return trainer.fit(DCGANTask(args, trainer))
