"""The hw2_data readers, on the builder's output and on a course-style tree."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.data.datasets import (
    DOMAINS,
    DigitFolder,
    FaceFolder,
    digit_index,
    load_digits,
    load_faces,
    to_float,
)


def _csv_labels(root: Path, domain: str, split: str) -> list[int]:
    with (root / "digits" / domain / f"{split}.csv").open(newline="") as fh:
        return [int(row["label"]) for row in csv.DictReader(fh)]


def test_face_folder(small_hw2_data: Path) -> None:
    faces = FaceFolder(small_hw2_data, "val")
    assert len(faces) == len(list((small_hw2_data / "face" / "val").glob("*.png")))
    image = faces[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert -1.0 <= image.min() < image.max() <= 1.0


@pytest.mark.parametrize("domain", DOMAINS)
def test_digit_folder(small_hw2_data: Path, domain: str) -> None:
    digits = DigitFolder(small_hw2_data, domain, "train")
    labels = _csv_labels(small_hw2_data, domain, "train")
    assert len(digits) == len(labels)
    image, label = digits[1]
    assert image.shape == (3, 28, 28) and image.dtype == torch.float32
    assert -1.0 <= image.min() < image.max() <= 1.0
    assert isinstance(label, int) and label == labels[1]


@pytest.mark.parametrize("domain", DOMAINS)
def test_load_digits_matches_folder(small_hw2_data: Path, domain: str) -> None:
    images, labels = load_digits(small_hw2_data, domain, "val")
    assert images.dtype == torch.uint8 and images.shape == (len(labels), 3, 28, 28)
    assert labels.dtype == torch.int64 and labels.tolist() == _csv_labels(small_hw2_data, domain, "val")
    image, label = DigitFolder(small_hw2_data, domain, "val")[2]
    torch.testing.assert_close(to_float(images[2]), image)
    assert int(labels[2]) == label

    few, few_labels = load_digits(small_hw2_data, domain, "val", limit=3)
    assert few.shape == (3, 3, 28, 28) and torch.equal(few, images[:3]) and torch.equal(few_labels, labels[:3])


def test_load_faces(small_hw2_data: Path) -> None:
    faces = load_faces(small_hw2_data, "train", limit=5)
    assert faces.dtype == torch.uint8 and faces.shape == (5, 3, 64, 64)
    torch.testing.assert_close(to_float(faces[4]), FaceFolder(small_hw2_data, "train")[4])


def test_transform_gets_the_pil_image(small_hw2_data: Path) -> None:
    sizes = DigitFolder(small_hw2_data, "usps", "val", transform=lambda img: (img.mode, img.size))
    assert sizes[0] == (("RGB", (28, 28)), _csv_labels(small_hw2_data, "usps", "val")[0])


def test_course_style_tree(tmp_path: Path) -> None:
    """The course shipped gray USPS and plain numeric names; readers must take them as they are."""
    root = tmp_path / "hw2_data"
    (root / "face" / "train").mkdir(parents=True)
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(root / "face" / "train" / "00000.png")
    usps = root / "digits" / "usps"
    (usps / "data").mkdir(parents=True)
    gray = np.zeros((16, 16), np.uint8)
    gray[4:12, 7:9] = 255
    Image.fromarray(gray).save(usps / "data" / "00000.png")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(usps / "data" / "00001.png")
    (usps / "val.csv").write_text("image_name,label\n00001.png,0\n00000.png,1\n")

    images, labels = load_digits(root, "usps", "val")
    assert images.shape == (2, 3, 28, 28) and labels.tolist() == [0, 1]
    assert images[1].max() == 255 and torch.equal(images[1][0], images[1][2])
    assert load_faces(root, "train").shape == (1, 3, 64, 64)
    assert FaceFolder(root)[0].shape == (3, 64, 64)
    assert len(load_faces(root, "train", limit=0)) == 0


def test_clear_errors(small_hw2_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="domain"):
        digit_index(small_hw2_data, "mnist", "train")
    with pytest.raises(ValueError, match="split"):
        FaceFolder(small_hw2_data, "test")
    with pytest.raises(FileNotFoundError, match="python -m training.data"):
        DigitFolder(tmp_path, "svhn", "train")


def test_decoded_split_is_cached_and_dropped_when_its_csv_changes(small_hw2_data: Path, tmp_path: Path) -> None:
    import os
    import shutil

    root = tmp_path / "hw2_data"
    shutil.copytree(small_hw2_data / "digits" / "usps", root / "digits" / "usps", ignore=shutil.ignore_patterns(".*"))
    decoded, labels = load_digits(root, "usps", "train")
    cache = root / "digits" / "usps" / ".train.pixels.npy"
    assert cache.is_file(), "a whole split is kept decoded beside its csv"
    again, again_labels = load_digits(root, "usps", "train")
    assert torch.equal(again, decoded) and torch.equal(again_labels, labels)
    assert torch.equal(load_digits(root, "usps", "train", limit=2)[0], decoded[:2])

    # A rebuilt split (new csv) must not be served from the old pixels.
    table = root / "digits" / "usps" / "train.csv"
    rows = table.read_text().splitlines()
    table.write_text("\n".join([rows[0], *reversed(rows[1:])]) + "\n")
    os.utime(table, (cache.stat().st_mtime + 5, cache.stat().st_mtime + 5))
    flipped, flipped_labels = load_digits(root, "usps", "train")
    assert torch.equal(flipped, decoded.flip(0)) and torch.equal(flipped_labels, labels.flip(0))
