"""The shipped cards and ``checkpoints/metrics.json`` tell one story: both are written by the
evaluation commands, so a number in one equals its twin in the other, and every card says
how it was trained."""

from __future__ import annotations

import json

import pytest
import torch

from contract.roles import DANN_CHECKPOINTS, FACE_CHECKPOINTS
from models.checkpoints import list_cards
from training.common import REPO
from training.dann import SERVED_METHOD
from training.diversity import mean_pairwise_msssim
from training.evaluate import dann_table_names

CHECKPOINTS = REPO / "checkpoints"
METRICS = json.loads((CHECKPOINTS / "metrics.json").read_text())
CARDS = list_cards(CHECKPOINTS)


def _twins() -> list[tuple[str, str, str]]:
    """(metrics.json key, card name, card metrics key)."""
    pairs = [("eval_classifier_mnistm_val_acc", "digit-classifier", "mnistm_val_acc")]
    for variant, name in FACE_CHECKPOINTS.items():
        pairs += [(f"faces_{variant}_hog", name, "hog_one_face_rate"), (f"faces_{variant}_msssim", name, "msssim")]
        pairs.append(("faces_real_msssim", name, "real_val_msssim"))
    for target, served in DANN_CHECKPOINTS.items():
        pairs += [(f"dann_{target}_test", served, "target_test_acc"), (f"dann_{target}_val", served, "target_val_acc")]
        pairs += [(f"dann_{target}_{row}", name, "target_test_acc") for row, name in dann_table_names(target).items() if name != served]
    pairs.append(("digits_real_msssim", "ddpm-digits", "real_msssim"))
    return pairs


@pytest.mark.parametrize(("key", "card", "field"), _twins(), ids=lambda v: str(v))
def test_a_metric_equals_its_twin_in_the_card(key: str, card: str, field: str) -> None:
    assert card in CARDS, f"{card}.json is not shipped"
    assert key in METRICS, f"metrics.json has no {key}"
    assert CARDS[card]["metrics"][field] == METRICS[key]


@pytest.mark.parametrize("name", sorted(CARDS), ids=str)
def test_every_card_says_how_it_was_trained(name: str) -> None:
    training = CARDS[name]["training"]
    for field in ("command", "hardware", "wall_time_s", "steps", "finished"):
        assert field in training, f"{name}.json: training has no {field!r}"


@pytest.mark.parametrize("name", sorted(n for n, c in CARDS.items() if c.get("metrics")), ids=str)
def test_every_measured_card_names_the_command_that_measured_it(name: str) -> None:
    records = CARDS[name].get("evaluation", {})
    assert records, f"{name}.json has metrics but no evaluation record: rerun python -m training.evaluate"
    for what, record in records.items():
        assert record["command"].startswith("python -m training.evaluate "), (name, what)
        assert record["code_revision"], (name, what)


def test_no_metric_of_a_measurement_that_never_ran() -> None:
    # FID needs Inception weights these machines cannot download: it is not measured, so not listed.
    assert not [key for key in METRICS if key.startswith("fid")]
    assert all(value is not None for value in METRICS.values())


def test_face_diversity_takes_four_scales_at_64_pixels() -> None:
    faces = torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert mean_pairwise_msssim(faces[:1].repeat(4, 1, 1, 1), scales=4) == pytest.approx(1.0, abs=1e-4)
    assert mean_pairwise_msssim(faces, scales=4) < 0.2


def test_dann_rows_ran_one_step_plan_to_its_end() -> None:
    """Budget-matched rows: every shipped DANN checkpoint completed the step plan of the 3-seed table."""
    table = json.loads((REPO / "docs" / "report" / "dann_table.json").read_text())
    for target in DANN_CHECKPOINTS:
        for row, name in dann_table_names(target).items():
            training = CARDS[name]["training"]
            assert training["completed"] and training["steps"] == training["steps_planned"] == table["steps"], name
            assert training["method"] == row and training["seed"] == table["shipped_seed"], name
            assert len(table["rows"][target][row]["seeds"]) >= 3, f"{target} {row}: fewer than 3 seeds"
    assert table["served_method"] == SERVED_METHOD, "the table's served row is the one the service serves"


def test_every_digit_figure_names_the_command_that_measured_it() -> None:
    """A sampler's figures without the command that made them cannot be rerun or audited: none is shipped."""
    rows = {k: v for k, v in CARDS["ddpm-digits"]["metrics"].items() if k.startswith("eval_classifier_acc_")}
    assert rows and all(v["command"].startswith("python -m training.evaluate digits") for v in rows.values())
    assert all(f"digits_{k.removeprefix('eval_classifier_acc_')}_acc" in METRICS for k in rows)
