"""The distilled digit sampler: its training (the path it learns on, exact resume, its card) and how it is served."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contract.digits import DISTILLED, DISTILLED_STEPS, FRAME_TIMESTEPS
from contract.roles import DIGIT_CHECKPOINT, DIGIT_STUDENT_CHECKPOINT
from models.checkpoints import load_state, read_card, save_model, write_card
from models.loading import load_pipeline
from models.scheduler import NoiseSchedule, SamplingConfig
from models.unet import ConditionalUNet, UNetConfig
from training.__main__ import main as train_main
from training.evaluate_digits import student_verdict

GUIDED = {"sampler": "unipc", "steps": 2, "guidance_scale": 3.0, "guidance_interval": None}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random diffusion checkpoint whose card recommends a guided sampler."""
    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    card = {"schedule": NoiseSchedule().config.to_dict(), "sampling": {"default": GUIDED},
            "training": {"command": "test", "hardware": "cpu", "wall_time_s": 0, "steps": 0, "finished": "today"}}
    save_model(ConditionalUNet(UNetConfig(base_channels=8)), folder, DIGIT_CHECKPOINT, card, dtype=torch.float32)
    return folder


def _distill(teacher: Path, run: Path, ckpt: Path, *flags: str) -> dict:
    train_main(["distill", "--teacher", str(teacher / DIGIT_CHECKPOINT), "--pairs", "12", "--batch-size", "4",
                "--epochs", "2", "--sample-every", "0", "--out", str(run), "--checkpoint-dir", str(ckpt), "--cpu",
                "--teacher-engine", "torch", *flags])
    return read_card(ckpt, DIGIT_STUDENT_CHECKPOINT)


def test_the_student_learns_the_guided_noise_where_the_served_solver_asks_for_it(teacher: Path, tmp_path: Path) -> None:
    """Its training states sit at exactly the timesteps at which ``sampler=distilled`` evaluates the student, and
    its targets are the teacher's guided noise there: a student that returned them would have no loss."""
    card = _distill(teacher, tmp_path / "run", tmp_path / "ckpt", "--max-steps", "1")
    trained = card["training"]["timesteps"]
    pipe, _ = load_pipeline(teacher, DIGIT_CHECKPOINT)
    pipe.attach_student(ConditionalUNet(UNetConfig(base_channels=8)))
    seen: list[int] = []
    assert pipe.student is not None
    pipe.student.register_forward_hook(lambda _m, inputs, _out: seen.append(int(inputs[1][0])))
    pipe([1], sampler=DISTILLED, generator=torch.Generator().manual_seed(0))
    assert seen == trained and len(trained) == DISTILLED_STEPS

    from training.distill import DistillTask

    task = DistillTask.__new__(DistillTask)
    task.teacher, task.timesteps, task.sampling = pipe, torch.tensor(trained), SamplingConfig.from_dict(GUIDED)
    x = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    labels, t = torch.tensor([3, 7]), torch.tensor(trained[:2])
    target = task.targets(x, t, labels)
    for row in range(2):
        guided = pipe.predict_noise(x[row : row + 1], t[row], labels[row : row + 1], GUIDED["guidance_scale"])
        assert torch.allclose(target[row : row + 1], guided, atol=1e-6)
    plain = pipe.predict_noise(x[:1], t[0], labels[:1], None)
    assert not torch.allclose(target[:1], plain, atol=1e-3), "the target is the guided noise, not one plain pass"


@pytest.mark.slow
def test_distillation_resumes_exactly_and_cards_its_teacher(teacher: Path, tmp_path: Path) -> None:
    straight = _distill(teacher, tmp_path / "straight", tmp_path / "a", "--max-steps", "4")
    assert _distill(teacher, tmp_path / "cut", tmp_path / "b", "--max-steps", "4",
                    "--max-minutes", "0.00001")["training"]["steps"] == 1
    resumed = _distill(teacher, tmp_path / "cut", tmp_path / "b", "--max-steps", "4", "--resume")
    a, b = load_state(tmp_path / "a", DIGIT_STUDENT_CHECKPOINT), load_state(tmp_path / "b", DIGIT_STUDENT_CHECKPOINT)
    assert all(torch.equal(a[k], b[k]) for k in a), "a run resumed after step 1 differs from one run of 4 steps"
    training = resumed["training"]
    assert training["steps"] == straight["training"]["steps"] == 4
    assert training["teacher"] == DIGIT_CHECKPOINT and training["teacher_sampling"]["guidance_scale"] == 3.0
    assert training["teacher_samples"] == 12 and training["code_revision"]
    assert resumed["sampling"]["default"]["nfe"] == DISTILLED_STEPS
    # The cut run's pairs were made once and reused: another teacher's run into that folder is refused.
    assert len(list((tmp_path / "cut" / "pairs").glob("chunk_*.pt"))) == 1
    other = tmp_path / "other"
    save_model(ConditionalUNet(UNetConfig(base_channels=8)), other, DIGIT_CHECKPOINT, read_card(teacher, DIGIT_CHECKPOINT),
               dtype=torch.float32)
    with pytest.raises(SystemExit, match="another teacher"):
        _distill(other, tmp_path / "cut", tmp_path / "c", "--max-steps", "1")


def _served(teacher: Path, tmp_path: Path, *, default: bool | None) -> tuple:
    """The teacher's folder with a student beside it, named by the card (``default``: its verdict; None: unnamed)."""
    folder = tmp_path / "served"
    folder.mkdir()
    card = read_card(teacher, DIGIT_CHECKPOINT)
    for name in (DIGIT_CHECKPOINT, DIGIT_STUDENT_CHECKPOINT):
        save_model(ConditionalUNet(UNetConfig(base_channels=8)), folder, name, card, dtype=torch.float32)
    if default is not None:
        card["sampling"]["student"] = {"checkpoint": DIGIT_STUDENT_CHECKPOINT, "steps": DISTILLED_STEPS,
                                       "default": default}
        write_card(folder, DIGIT_CHECKPOINT, read_card(folder, DIGIT_CHECKPOINT) | {"sampling": card["sampling"]})
    return load_pipeline(folder, DIGIT_CHECKPOINT)


@pytest.mark.parametrize("default", [True, False, None])
def test_the_student_serves_the_distilled_sampler_and_is_the_default_only_by_its_verdict(
    teacher: Path, tmp_path: Path, default: bool | None
) -> None:
    pipe, card = _served(teacher, tmp_path, default=default)
    assert (pipe.student is not None) is (default is not None)
    served = SamplingConfig.served_default(card, has_student=pipe.student is not None)
    assert served.sampler == (DISTILLED if default else "unipc")
    if pipe.student is None:
        with pytest.raises(ValueError, match="python -m training distill"):
            pipe([3], sampler=DISTILLED)
        return
    calls: list[int] = []
    pipe.student.register_forward_hook(lambda *_: calls.append(1))
    shown: list[int] = []
    out = pipe([3, 4], sampler=DISTILLED, steps=DISTILLED_STEPS, guidance_scale=5.0, frame_timesteps=FRAME_TIMESTEPS,
               generator=torch.Generator().manual_seed(0), on_frame=lambda t, _: shown.append(t))
    assert out.nfe == DISTILLED_STEPS and len(calls) == DISTILLED_STEPS, "one student pass per step, no guidance"
    assert out.images.shape == (2, 3, 28, 28) and shown == sorted(FRAME_TIMESTEPS, reverse=True)
    # 4 steps visit 400, 300, 200, 100, 0: the other frames are drawn where the DDIM path crosses them, so the
    # report's six frames are six different images (the nearest visited step would show 200 twice).
    frames = [out.frames[t] for t in FRAME_TIMESTEPS]
    assert all(not torch.equal(a, b) for i, a in enumerate(frames) for b in frames[i + 1 :])
    assert torch.equal(out.frames[0], out.images[0])


def test_a_distilled_request_takes_its_trained_steps_and_no_guidance() -> None:
    config = SamplingConfig.from_dict(GUIDED).override(sampler=DISTILLED)
    assert (config.steps, config.guidance_scale, config.guidance_interval) == (DISTILLED_STEPS, 1.0, None)


@pytest.mark.parametrize(("student", "default"), [
    ({"accuracy": 0.972, "msssim": 0.139, "fd": 3.3}, True),
    ({"accuracy": 0.970, "msssim": 0.131, "fd": 3.0}, False),  # accuracy 0.6 points below
    ({"accuracy": 0.990, "msssim": 0.142, "fd": 3.0}, False),  # MS-SSIM 0.011 above
    ({"accuracy": 0.990, "msssim": 0.131, "fd": 3.4}, False),  # FD 13% worse
])
def test_the_student_replaces_the_guided_default_only_if_it_matches_it(student: dict, default: bool) -> None:
    guided = {"accuracy": 0.976, "msssim": 0.131, "fd": 3.0}
    assert student_verdict(guided, student)["default"] is default


def test_a_request_that_tunes_guidance_or_steps_starts_from_the_guided_configuration(
    teacher: Path, tmp_path: Path
) -> None:
    from workers.registry import LoadedModel
    from workers.runners import _digit_config

    pipe, card = _served(teacher, tmp_path, default=True)
    model = LoadedModel("digits", DIGIT_CHECKPOINT, pipe, card, "cpu")
    assert _digit_config(model, None, None, None, None).sampler == DISTILLED
    assert _digit_config(model, None, None, 4.0, None) == SamplingConfig("unipc", 2, 4.0)
    assert _digit_config(model, "ddim", None, None, None) == SamplingConfig("ddim", 25, 3.0)
    assert _digit_config(model, DISTILLED, None, None, None) == SamplingConfig(DISTILLED, DISTILLED_STEPS)
    assert model.runtime(DISTILLED) == ("torch", "fp32") and model.describe()["sampling"]["sampler"] == DISTILLED
