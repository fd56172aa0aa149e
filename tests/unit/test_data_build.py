"""The hw2_data builder on small slices of the real raw datasets."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from training.data.build import (
    BSDS_GLOB,
    MNIST_FILES,
    PARTS,
    SVHN_FILE,
    SVHN_TRAIN_COUNT,
    USPS_FILE,
    DataSourceError,
    build_all,
    compose_mnistm,
    mnistm_crops,
)

DOMAINS = ("mnistm", "usps", "svhn")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def limit(small_hw2_data: Path) -> int:
    return json.loads((small_hw2_data / "manifest.json").read_text())["parts"]["usps"]["limit"]


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _hashes(root: Path) -> dict[str, str]:
    # Hidden files are the readers' decoded-split caches (training.data.datasets), not the builder's output.
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _mirror(source: Path, dst: Path) -> Path:
    """A tree of symlinks to ``source`` whose mnist/ and usps/ entries are per-file, so one can be replaced."""
    dst.mkdir()
    for entry in source.iterdir():
        if entry.name in ("mnist", "usps"):
            (dst / entry.name).mkdir()
            for f in entry.iterdir():
                (dst / entry.name / f.name).symlink_to(f)
        else:
            (dst / entry.name).symlink_to(entry)
    return dst


def _truncate(tree: Path, rel: str) -> None:
    target = tree / rel
    data = target.read_bytes()
    target.unlink()
    target.write_bytes(data[: len(data) // 2])


def test_layout_and_csv(small_hw2_data: Path, limit: int) -> None:
    root = small_hw2_data
    for split in ("train", "val"):
        assert len(list((root / "face" / split).glob("*.png"))) == limit
    for domain in DOMAINS:
        folder = root / "digits" / domain
        listed = []
        for split in ("train", "val"):
            header, rows = _rows(folder / f"{split}.csv")
            assert header == ["image_name", "label"]
            assert len(rows) == limit
            assert all(name.startswith(f"{split}_") and 0 <= int(label) <= 9 for name, label in rows)
            listed += [name for name, _ in rows]
        assert len(set(listed)) == len(listed)
        assert sorted(p.name for p in (folder / "data").iterdir()) == sorted(listed)
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(manifest["parts"]) == set(PARTS)
    assert manifest["parts"]["usps"]["counts"] == {"train": limit, "val": limit}


def test_face_names_follow_source_index(small_hw2_data: Path) -> None:
    assert sorted(p.name for p in (small_hw2_data / "face" / "val").iterdir())[0] == "09000.png"
    assert sorted(p.name for p in (small_hw2_data / "face" / "train").iterdir())[0] == "00000.png"


def test_labels_equal_source_labels(small_hw2_data: Path, data_source: Path, limit: int) -> None:
    def idx_labels(rel: str) -> np.ndarray:
        return np.frombuffer(gzip.open(data_source / rel).read(), np.uint8, offset=8)

    with h5py.File(data_source / USPS_FILE) as fh:
        usps = {"train": fh["train"]["target"][:], "val": fh["test"]["target"][:]}
    svhn_y = np.load(data_source / SVHN_FILE)["y"]
    expected = {
        ("mnistm", "train"): idx_labels(MNIST_FILES["train_labels"]),
        ("mnistm", "val"): idx_labels(MNIST_FILES["test_labels"]),
        ("usps", "train"): usps["train"],
        ("usps", "val"): usps["val"],
        ("svhn", "train"): svhn_y[:SVHN_TRAIN_COUNT],
        ("svhn", "val"): svhn_y[SVHN_TRAIN_COUNT:],
    }
    for (domain, split), labels in expected.items():
        _, rows = _rows(small_hw2_data / "digits" / domain / f"{split}.csv")
        assert [int(label) for _, label in rows] == labels[:limit].tolist(), (domain, split)


def test_image_sizes_and_modes(small_hw2_data: Path) -> None:
    for path in (small_hw2_data / "face").rglob("*.png"):
        with Image.open(path) as img:
            assert (img.size, img.mode) == ((64, 64), "RGB")
    for path in (small_hw2_data / "digits").rglob("*.png"):
        with Image.open(path) as img:
            assert (img.size, img.mode) == ((28, 28), "RGB")


def test_usps_is_white_on_black(small_hw2_data: Path) -> None:
    images = np.stack([np.asarray(Image.open(p)) for p in (small_hw2_data / "digits" / "usps" / "data").iterdir()])
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    assert border.mean() < 64 < images.max()


def test_mnistm_follows_the_recipe(small_hw2_data: Path, data_source: Path) -> None:
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((data_source / "bsds500" / "train").glob("*.jpg"))]
    digits = np.frombuffer(gzip.open(data_source / MNIST_FILES["train_images"]).read(), np.uint8, offset=16)
    digits = digits.reshape(-1, 28, 28)
    # The builder draws the whole split (60,000) from default_rng([seed, split index]) before slicing.
    crops = mnistm_crops(photos, len(digits), np.random.default_rng([0, 0]))
    photo, top, left = crops[3]
    expected = np.abs(photos[photo][top : top + 28, left : left + 28].astype(int) - digits[3][..., None])
    built = np.asarray(Image.open(small_hw2_data / "digits" / "mnistm" / "data" / "train_00003.png"))
    np.testing.assert_array_equal(built, expected)


def test_compose_mnistm_is_abs_difference() -> None:
    photo = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(30, 40, 3)
    crops = np.array([[0, 1, 2], [0, 2, 12]])
    digits = np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)])
    out = compose_mnistm(digits, [photo], crops)
    assert out.dtype == np.uint8 and out.shape == (2, 28, 28, 3)
    np.testing.assert_array_equal(out[0], photo[1:29, 2:30])
    np.testing.assert_array_equal(out[1], 255 - photo[2:30, 12:40])


def test_same_seed_is_byte_identical_other_seed_changes_mnistm(
    small_hw2_data: Path, data_source: Path, tmp_path: Path, limit: int
) -> None:
    again = tmp_path / "again"
    # Two workers here, one in the fixture: the output must not depend on scheduling either.
    build_all(data_source, again, seed=0, limit=limit, workers=2, progress=False)
    assert _hashes(again) == _hashes(small_hw2_data)

    other = tmp_path / "other"
    build_all(data_source, other, seed=1, limit=limit, parts=["mnistm"], workers=1, progress=False, verify=False)
    mnistm = Path("digits") / "mnistm"
    assert (other / mnistm / "train.csv").read_bytes() == (small_hw2_data / mnistm / "train.csv").read_bytes()
    changed = [
        not np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(small_hw2_data / mnistm / "data" / p.name)))
        for p in (other / mnistm / "data").iterdir()
    ]
    assert all(changed)


def test_missing_source_file_is_named(data_source: Path, tmp_path: Path) -> None:
    tree = _mirror(data_source, tmp_path / "src")
    (tree / USPS_FILE).unlink()
    with pytest.raises(DataSourceError, match="missing source file: usps/usps.h5"):
        build_all(tree, tmp_path / "out", parts=["usps"], progress=False)


def test_truncated_source_file_is_named(data_source: Path, tmp_path: Path) -> None:
    tree = _mirror(data_source, tmp_path / "src")
    _truncate(tree, MNIST_FILES["train_labels"])
    with pytest.raises(DataSourceError, match="corrupt source file mnist/train-labels-idx1-ubyte.gz"):
        build_all(tree, tmp_path / "out", parts=["mnistm"], limit=2, progress=False)
    # Without the checksum the reader itself must still name the file.
    with pytest.raises(DataSourceError, match="cannot read source file mnist/train-labels-idx1-ubyte.gz"):
        build_all(tree, tmp_path / "out", parts=["mnistm"], limit=2, progress=False, verify=False)


def test_corrupt_and_missing_photo_folders_are_named(data_source: Path, tmp_path: Path) -> None:
    tree = tmp_path / "src"
    (tree / "bsds500" / "train").mkdir(parents=True)
    for photo in (data_source / "bsds500" / "train").iterdir():
        (tree / "bsds500" / "train" / photo.name).symlink_to(photo)
    for entry in ("mnist",):
        (tree / entry).symlink_to(data_source / entry)
    first = sorted((tree / "bsds500" / "train").iterdir())[0]
    _truncate(tree, str(first.relative_to(tree)))
    with pytest.raises(DataSourceError, match="corrupt source folder bsds500/train"):
        build_all(tree, tmp_path / "out", parts=["mnistm"], limit=2, progress=False)
    first.unlink()
    with pytest.raises(DataSourceError, match="bsds500/train holds 199 files"):
        build_all(tree, tmp_path / "out", parts=["mnistm"], limit=2, progress=False)
    with pytest.raises(DataSourceError, match="missing source folder: celeba"):
        build_all(tree, tmp_path / "out", parts=["faces"], limit=2, progress=False)


def test_refuses_to_clear_a_foreign_tree(data_source: Path, tmp_path: Path) -> None:
    course = tmp_path / "hw2_data"
    (course / "digits" / "svhn" / "data").mkdir(parents=True)
    (course / "digits" / "svhn" / "train.csv").write_text("image_name,label\n")
    with pytest.raises(FileExistsError, match="manifest.json"):
        build_all(data_source, course, parts=["svhn"], limit=1, progress=False, verify=False)
    assert (course / "digits" / "svhn" / "train.csv").exists()


def test_cli_builds_and_reports_errors(data_source: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "training.data", *args], cwd=REPO, capture_output=True, text=True, timeout=120
        )

    ok = cli("--source", str(data_source), "--out", str(tmp_path / "out"), "--only", "usps,svhn", "--limit", "3")
    assert ok.returncode == 0, ok.stderr
    assert "usps" in ok.stdout and "svhn" in ok.stdout and "faces" not in ok.stdout

    tree = _mirror(data_source, tmp_path / "src")
    (tree / USPS_FILE).unlink()
    bad = cli("--source", str(tree), "--out", str(tmp_path / "bad"), "--only", "usps")
    assert bad.returncode == 2
    assert "usps/usps.h5" in bad.stderr and "Traceback" not in bad.stderr

    assert cli("--only", "cats").returncode == 2  # argparse's own usage error


def test_sources_are_listed_for_every_part() -> None:
    from training.data.build import PART_SOURCES, SOURCES

    assert set(PART_SOURCES) == set(PARTS)
    assert all(rel in SOURCES for rels in PART_SOURCES.values() for rel in rels)
    assert BSDS_GLOB in PART_SOURCES["mnistm"]


def test_limit_is_a_prefix_of_a_larger_build(small_hw2_data: Path, data_source: Path, tmp_path: Path) -> None:
    smaller = tmp_path / "smaller"
    build_all(data_source, smaller, limit=3, parts=["mnistm"], workers=1, progress=False, verify=False)
    for p in (smaller / "digits" / "mnistm" / "data").iterdir():
        assert p.read_bytes() == (small_hw2_data / "digits" / "mnistm" / "data" / p.name).read_bytes()


def test_rebuild_replaces_a_part(data_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build_all(data_source, out, limit=4, parts=["svhn"], workers=1, progress=False, verify=False)
    build_all(data_source, out, limit=2, parts=["svhn"], workers=1, progress=False, verify=False)
    assert len(list((out / "digits" / "svhn" / "data").iterdir())) == 4  # 2 train + 2 val, none left over
    shutil.rmtree(out)
