"""Shapes, ranges and maths of the networks, the noise schedule and the pipelines."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from models.checkpoints import CheckpointError, load_model, load_state, save_model
from models.dann import DANN, grad_reverse, reversal_coefficient
from models.dcgan import DCGANConfig, Discriminator, Generator, weights_init
from models.digit_classifier import DigitClassifier
from models.loading import load_pipeline
from models.pipelines import (
    DannClassifier,
    DigitPipeline,
    FacePipeline,
    digits_from_uint8,
    normalize_digits,
)
from models.scheduler import NoiseSchedule, NoiseScheduleConfig
from models.unet import NULL_LABEL, ConditionalUNet, UNetConfig

TINY_UNET = UNetConfig(base_channels=8, num_heads=2)


@pytest.mark.parametrize("variant", ["A", "B"])
def test_dcgan_shapes_and_range(variant: str) -> None:
    cfg = DCGANConfig(variant=variant)
    g, d = Generator(cfg), Discriminator(cfg)
    g.apply(weights_init)
    fake = g(torch.randn(4, cfg.nz, 1, 1))
    assert fake.shape == (4, 3, 64, 64)
    assert fake.min() >= -1 and fake.max() <= 1
    p = d(fake)
    assert p.shape == (4,) and ((p >= 0) & (p <= 1)).all()


def test_weights_init_follows_dcgan() -> None:
    g = Generator(DCGANConfig(variant="B"))
    g.apply(weights_init)
    conv, bn = g.model[0], g.model[1]
    assert abs(conv.weight.std().item() - 0.02) < 0.002
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and bn.bias.abs().max() == 0


def test_unet_shape_labels_and_null_label() -> None:
    torch.manual_seed(0)
    unet = ConditionalUNet(TINY_UNET).eval()
    x, t = torch.randn(3, 3, 28, 28), torch.tensor([0, 200, 399])
    out3 = unet(x, t, torch.tensor([3, 3, 3]))
    out5 = unet(x, t, torch.tensor([5, 5, 5]))
    null = unet(x, t, torch.full((3,), NULL_LABEL))
    assert out3.shape == (3, 3, 28, 28)
    assert not torch.allclose(out3, out5), "the label must change the prediction"
    assert torch.allclose(null, unet(x, t, None)), "the null label is 'no label'"


def test_dann_heads_and_gradient_reversal() -> None:
    model = DANN().train()
    cls, dom = model(torch.randn(8, 3, 28, 28), alpha=0.5)
    assert cls.shape == (8, 10) and dom.shape == (8, 2)

    x = torch.randn(5, requires_grad=True)
    grad_reverse(x, 0.3).sum().backward()
    assert torch.allclose(x.grad, torch.full((5,), -0.3))
    y = torch.randn(5, requires_grad=True)
    assert torch.equal(grad_reverse(y, 0.3), y)


def test_reversal_schedule_runs_from_zero_to_one() -> None:
    assert reversal_coefficient(0.0) == 0.0
    assert 0.99 < reversal_coefficient(1.0) < 1.0
    values = [reversal_coefficient(p / 10) for p in range(11)]
    assert values == sorted(values)


def test_schedule_alpha_bar_and_forward_noising() -> None:
    sched = NoiseSchedule()
    abar = sched.alphas_cumprod
    assert abar.shape == (400,)
    assert (abar[1:] < abar[:-1]).all(), "alpha_bar must fall monotonically"
    assert abs(float(1 - abar[0]) - 1e-4) < 1e-7
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(20000, 3, generator=g) * 2 - 1  # a far-from-Gaussian signal
    xt = sched.add_noise(x0, torch.randn(x0.shape, generator=g), torch.full((20000,), 399))
    assert abs(xt.mean().item()) < 0.03 and abs(xt.std().item() - 1) < 0.03, "x_T must be close to N(0, I)"


def test_training_loss_is_smooth_l1_and_backpropagates() -> None:
    unet = ConditionalUNet(TINY_UNET)
    loss = NoiseSchedule().training_loss(unet, torch.rand(4, 3, 28, 28) * 2 - 1, torch.arange(4))
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert unet.label_embedding.weight.grad is not None


@pytest.mark.parametrize("t", [399, 250, 37, 1])
def test_ddim_eta1_full_schedule_equals_ddpm_step(t: int) -> None:
    """DDIM with eta=1 on all T steps is DDPM: same posterior mean and variance."""
    common = dict(num_train_timesteps=400, beta_start=1e-4, beta_end=0.02, clip_sample=False)
    ddpm, ddim = DDPMScheduler(**common), DDIMScheduler(**common)
    ddpm.set_timesteps(400)
    ddim.set_timesteps(400)
    g = torch.Generator().manual_seed(t)
    x, eps = torch.randn(2, 3, 28, 28, generator=g), torch.randn(2, 3, 28, 28, generator=g)
    noise_gen = torch.Generator().manual_seed(123)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(123))
    a = ddpm.step(eps, t, x, generator=noise_gen).prev_sample
    b = ddim.step(eps, t, x, eta=1.0, variance_noise=noise).prev_sample
    assert torch.allclose(a, b, atol=1e-3)  # float32 rounding near t=0


def test_samplers_and_frames() -> None:
    torch.manual_seed(0)
    pipe = DigitPipeline(ConditionalUNet(TINY_UNET), NoiseSchedule())
    calls: list[tuple[int, int]] = []
    out = pipe(
        [0, 7],
        sampler="ddim",
        steps=10,
        generator=torch.Generator().manual_seed(1),
        frame_timesteps=(400, 320, 240, 160, 80, 0),
        callback=lambda i, n: calls.append((i, n)),
    )
    assert out.images.shape == (2, 3, 28, 28) and 0 <= out.images.min() and out.images.max() <= 1
    assert sorted(out.frames) == [0, 80, 160, 240, 320, 400]
    assert torch.equal(out.frames[0], out.images[0]), "the t=0 frame is the output"
    assert calls[-1] == (10, 10) and len(calls) == 10
    again = pipe([0, 7], sampler="ddim", steps=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.images, out.images), "same seed, same digits"
    guided = pipe([0, 7], sampler="ddim", steps=10, guidance_scale=3.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(guided.images, out.images)


def test_ddpm_sampler_visits_every_step() -> None:
    sched = NoiseSchedule().make_sampler("ddpm")
    assert len(sched.timesteps) == 400 and int(sched.timesteps[0]) == 399
    with pytest.raises(ValueError, match="steps"):
        NoiseSchedule().make_sampler("ddim", steps=0)


def test_face_pipeline_is_seeded() -> None:
    pipe = FacePipeline(Generator(DCGANConfig(variant="B")))
    a = pipe(3, generator=torch.Generator().manual_seed(5)).images
    b = pipe(3, generator=torch.Generator().manual_seed(5)).images
    c = pipe(3, generator=torch.Generator().manual_seed(6)).images
    assert a.shape == (3, 3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)


def test_dann_classifier_and_preprocessing() -> None:
    import numpy as np

    digits = np.zeros((2, 28, 28, 3), np.uint8)
    digits[0] = 200
    digits[1, ..., 2] = 30
    x = digits_from_uint8(digits)
    assert x.shape == (2, 3, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full((3, 28, 28), 200 / 255))
    assert torch.allclose(x[1, 2], torch.full((28, 28), 30 / 255)) and x[1, :2].abs().max() == 0  # channels first
    with pytest.raises(ValueError, match="uint8"):
        digits_from_uint8(digits.astype(np.float32))
    result = DannClassifier(DANN(), normalize="per_image")(x)
    assert result.probabilities.shape == (2, 10)
    assert torch.allclose(result.probabilities.sum(1), torch.ones(2))
    z = normalize_digits(torch.rand(4, 3, 28, 28), "per_image")
    assert torch.allclose(z.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5)


@pytest.mark.parametrize("shard_bytes", [15 * 2**20, 100_000])
def test_checkpoint_round_trip_single_and_sharded(tmp_path, shard_bytes: int) -> None:
    unet = ConditionalUNet(TINY_UNET)
    save_model(unet, tmp_path, "ddpm-digits", {"schedule": NoiseScheduleConfig().to_dict()}, max_shard_bytes=shard_bytes)
    sharded = (tmp_path / "ddpm-digits.safetensors.index.json").exists()
    assert sharded == (shard_bytes == 100_000)
    loaded, card = load_model(tmp_path, "ddpm-digits")
    assert card["kind"] == "conditional-unet" and card["weights"]["dtype"] == "float16"
    for key, value in unet.state_dict().items():
        assert torch.allclose(loaded.state_dict()[key], value.half().float()), key
    pipe, _ = load_pipeline(tmp_path, "ddpm-digits")
    assert isinstance(pipe, DigitPipeline)


def test_checkpoint_errors_name_what_is_missing(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="dann-usps.json"):
        load_model(tmp_path, "dann-usps")
    save_model(DigitClassifier(), tmp_path, "clf", {})
    (tmp_path / "clf.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_state(tmp_path, "clf")


def test_save_keeps_only_inference_weights(tmp_path) -> None:
    model = DANN()
    save_model(model, tmp_path, "dann", {"preprocess": {"normalize": "half"}})
    state = load_state(tmp_path, "dann")
    assert set(state) == set(model.state_dict())
    assert all(not isinstance(m, nn.Module) for m in state.values())


def test_fused_attention_equals_multihead_attention() -> None:
    from models.unet import SelfAttention

    block = SelfAttention(16, num_heads=4).eval()
    x = torch.randn(2, 64, 16)
    expected = block.m_attention(x, x, x, need_weights=False)[0]
    assert torch.allclose(block.attend(x), expected, atol=1e-5)
