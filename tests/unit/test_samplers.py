"""The digit samplers: every one of them draws, is seeded, keeps the report's frames, and counts its cost."""

from __future__ import annotations

import pytest
import torch

from contract.digits import DISTILLED
from models.pipelines import DigitPipeline, count_nfe, guided_steps
from models.scheduler import DEFAULT_STEPS, SAMPLERS, NoiseSchedule, SamplingConfig
from models.unet import ConditionalUNet, UNetConfig

FRAMES = (400, 320, 240, 160, 80, 0)


@pytest.fixture(scope="module")
def pipe() -> DigitPipeline:
    torch.manual_seed(0)
    return DigitPipeline(ConditionalUNet(UNetConfig(base_channels=8, num_heads=2)), NoiseSchedule())


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s not in ("ddpm", DISTILLED)])  # the student: test_distill
def test_each_few_step_sampler_draws_seeded_digits_with_frames(pipe: DigitPipeline, sampler: str) -> None:
    calls: list[tuple[int, int]] = []
    kwargs = dict(sampler=sampler, steps=5, guidance_scale=3.0, frame_timesteps=FRAMES)
    out = pipe([0, 7, 7], generator=torch.Generator().manual_seed(1), callback=lambda i, n: calls.append((i, n)), **kwargs)
    assert out.images.shape == (3, 3, 28, 28) and 0 <= out.images.min() and out.images.max() <= 1
    assert torch.isfinite(out.images).all()
    assert calls == [(i, 5) for i in range(1, 6)]
    # Five trailing steps visit exactly the report's timesteps.
    assert sorted(out.frames) == sorted(FRAMES)
    assert torch.equal(out.frames[0], out.images[0]), "the t=0 frame is the output"
    assert not torch.equal(out.frames[400], out.frames[320])
    again = pipe([0, 7, 7], generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(again.images, out.images), "same seed, same digits"
    other = pipe([0, 7, 7], generator=torch.Generator().manual_seed(2), **kwargs)
    assert not torch.equal(other.images, out.images)
    assert out.nfe == 10  # five guided steps


def test_ddpm_runs_every_step_and_its_frames_are_exact(pipe: DigitPipeline) -> None:
    small = DigitPipeline(pipe.unet, NoiseSchedule(pipe.schedule.config.__class__(num_train_timesteps=20)))
    out = small([3], sampler="ddpm", generator=torch.Generator().manual_seed(0), frame_timesteps=(20, 10, 0))
    assert out.nfe == 20 and sorted(out.frames) == [0, 10, 20]


def test_guidance_interval_guides_only_inside_it_and_saves_evaluations(pipe: DigitPipeline) -> None:
    timesteps = [int(t) for t in pipe.schedule.make_sampler("unipc", 5).timesteps]  # paper t = 400, 320, ..., 80
    assert guided_steps(timesteps, 3.0, (55, 370)) == [False, True, True, True, True]
    assert guided_steps(timesteps, 3.0, None) == [True] * 5
    assert guided_steps(timesteps, 1.0, None) == [False] * 5, "scale 1 is no guidance at all"
    assert count_nfe("unipc", 5, 3.0, (55, 370), pipe.schedule) == 9
    gen = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    full = pipe([5], sampler="unipc", steps=5, guidance_scale=3.0, generator=gen())
    limited = pipe([5], sampler="unipc", steps=5, guidance_scale=3.0, guidance_interval=(55, 370), generator=gen())
    everywhere = pipe([5], sampler="unipc", steps=5, guidance_scale=3.0, guidance_interval=(0, 400), generator=gen())
    assert limited.nfe == 9 and full.nfe == 10
    assert not torch.equal(limited.images, full.images)
    assert torch.equal(everywhere.images, full.images)


def test_sampling_config_from_cards_and_requests() -> None:
    old_card = {"sampling": {"guidance_scale": 2.0, "few_step_sampler": "ddim", "few_step_steps": 25}}
    assert SamplingConfig.card_default(old_card) == SamplingConfig("ddim", 25, 2.0)
    card = {"sampling": {"default": {"sampler": "unipc", "steps": 5, "guidance_scale": 5.0, "guidance_interval": [55, 370]}}}
    default = SamplingConfig.card_default(card)
    assert default == SamplingConfig("unipc", 5, 5.0, (55, 370))
    assert SamplingConfig.from_dict(default.to_dict()) == default
    assert default.override() == default
    assert default.override(sampler="ddim") == SamplingConfig("ddim", DEFAULT_STEPS["ddim"], 5.0, (55, 370))
    assert default.override(sampler="ddpm", steps=None).steps is None
    assert default.override(steps=8, guidance_scale=1.0) == SamplingConfig("unipc", 8, 1.0, (55, 370))
    with pytest.raises(ValueError, match="empty"):
        SamplingConfig("unipc", 5, 2.0, (300, 100))
    with pytest.raises(ValueError, match="unknown sampler"):
        SamplingConfig("euler", 5)  # type: ignore[arg-type]


def test_every_offered_sampler_is_built() -> None:
    for name in SAMPLERS:
        assert len(NoiseSchedule().make_sampler(name, None if name == "ddpm" else 4).timesteps) in (4, 400)


def test_frames_reach_on_frame_while_sampling_in_reverse_time_order(pipe: DigitPipeline) -> None:
    events: list[tuple[str, int]] = []
    live: dict[int, torch.Tensor] = {}

    def on_frame(t: int, image: torch.Tensor) -> None:
        events.append(("frame", t))
        live[t] = image

    out = pipe(
        [2],
        sampler="ddim",
        steps=10,
        generator=torch.Generator().manual_seed(3),
        frame_timesteps=FRAMES,
        callback=lambda i, n: events.append(("step", i)),
        on_frame=on_frame,
    )
    frames = [t for kind, t in events if kind == "frame"]
    assert frames == list(FRAMES), "each frame once, noisiest first"
    assert all(torch.equal(live[t], out.frames[t]) for t in FRAMES), "the live frames are the returned ones"
    first_step = events.index(("step", 1))
    assert events.index(("frame", 400)) < first_step, "the initial noise is sent before any step"
    assert events.index(("frame", 320)) < events.index(("step", 10)), "frames arrive before the run ends"


def test_frame_plan_takes_the_nearest_visited_step() -> None:
    from models.pipelines import frame_plan

    # DDIM-5 (leading spacing) visits paper t = 400 (noise), 321, 241, 161, 81, 0 with these indices.
    plan = frame_plan([320, 240, 160, 80, 0], 400, [400, 320, 300, 0])
    assert plan == {0: [400], 1: [320, 300], 5: [0]}
    dense = frame_plan(list(range(399, -1, -1)), 400, range(400, -1, -20))  # DDPM: every t exists
    assert all(len(wants) == 1 for wants in dense.values()) and len(dense) == 21


def test_the_trajectory_holds_every_visited_step_noise_first(pipe: DigitPipeline) -> None:
    out = pipe([4], sampler="unipc", steps=5, generator=torch.Generator().manual_seed(5), trajectory=True)
    assert [t for t, _ in out.trajectory] == [400, 320, 240, 160, 80, 0]
    assert torch.equal(out.trajectory[-1][1], out.images[0])
    assert not pipe([4], sampler="unipc", steps=5, generator=torch.Generator().manual_seed(5)).trajectory
