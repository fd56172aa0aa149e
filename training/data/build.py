"""Build the DLCV 2022 HW2 data layout (``hw2_data/``) from the raw public datasets.

Output, under ``out``::

    face/train/NNNNN.png           64x64 RGB CelebA faces
    face/val/NNNNN.png
    digits/<domain>/data/*.png     28x28 RGB digits; domain is mnistm, usps or svhn
    digits/<domain>/train.csv      header ``image_name,label``
    digits/<domain>/val.csv
    manifest.json                  per part: counts, seed, limit, source checksums

Splits (fixed, independent of the seed):

* faces: CelebA files sorted by name, the first 9,000 -> train, the last 1,000 -> val.
  Short side resized to 64 with LANCZOS, then centre-cropped to 64x64.
* mnistm: built from MNIST train (60,000) -> train and MNIST test (10,000) -> val
  with the Ganin & Lempitsky recipe: each digit is combined with a random 28x28
  crop of a random BSDS500 train photo as ``|crop - digit|`` per channel.
* usps: the canonical train (7,291) -> train and test (2,007) -> val,
  16x16 -> 28x28 bilinear, white digit on black like MNIST.
* svhn: the 8,000 images at hand in file order, the first 6,400 -> train, the
  last 1,600 -> val, 32x32 -> 28x28 bilinear with antialiasing.

Naming: a face is named after its index in the sorted CelebA list
(``000001.jpg`` -> ``00000.png``), so train holds ``00000``-``08999`` and val
``09000``-``09999``. A digit is named ``<split>_<index>.png``, index being its
position within its split (``val_00000.png`` of svhn is the 6,401st file image).

Only MNIST-M depends on the seed: each split draws from its own
``numpy.random.default_rng([seed, split])`` stream, drawn for the whole split
before ``limit`` slices it, so a limited build is a prefix of the full one.
PNGs carry no time metadata, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

BUILDER_VERSION = "1.0"
PARTS: tuple[str, ...] = ("faces", "mnistm", "usps", "svhn")
SPLITS: tuple[str, ...] = ("train", "val")

FACE_SIZE = 64
DIGIT_SIZE = 28
CELEBA_COUNT = 10_000
FACE_TRAIN_COUNT = 9_000
SVHN_TRAIN_COUNT = 6_400
_CHUNK = 256  # images per worker task: large enough to amortise pickling
_PNG_LEVEL = 6  # pinned so a Pillow default change cannot alter the bytes


class DataSourceError(Exception):
    """A raw source file is missing, corrupt or unreadable."""


@dataclass(frozen=True)
class _Source:
    """A checksummed input: one file, or a folder pattern hashed sorted and concatenated."""

    rel: str
    sha256: str
    count: int | None = None  # expected number of files, for a pattern
    names: tuple[str, ...] = ()  # expected file names, when they are known


MNIST_FILES = {
    "train_images": "mnist/train-images-idx3-ubyte.gz",
    "train_labels": "mnist/train-labels-idx1-ubyte.gz",
    "test_images": "mnist/t10k-images-idx3-ubyte.gz",
    "test_labels": "mnist/t10k-labels-idx1-ubyte.gz",
}
BSDS_GLOB = "bsds500/train/*.jpg"
CELEBA_GLOB = "celeba/*.jpg"
USPS_FILE = "usps/usps.h5"
SVHN_FILE = "svhn/svhn_test_0000-7999_32x32.npz"

SOURCES: dict[str, _Source] = {
    s.rel: s
    for s in (
        _Source(MNIST_FILES["train_images"], "4254af25c67276f0184701dfebae6184831d02b37abab419d6885b5b6c214be7"),
        _Source(MNIST_FILES["train_labels"], "145913a7c12646cb2616b3d5e46d763cb90a8fd879b4d75a6c6ad03ec7c38008"),
        _Source(MNIST_FILES["test_images"], "7aaa55d64584304d51cfa0899065a3b6ba79129fd014695841953acb9c632261"),
        _Source(MNIST_FILES["test_labels"], "4205e85d0a319ea9a93edb872e98f1ad728c1893ea4acbc2427838143b2836dd"),
        _Source(USPS_FILE, "734f88c541104a956d88be2c95d03b4a463ffd74ccc2ba9c80841fb98e3fcb36"),
        _Source(SVHN_FILE, "4e735ab0ebe055e429f7085779526fcad5530fab7760f9e6943414aaac199bb5"),
        _Source(BSDS_GLOB, "2dcbf563047e65f13ba7babee6e7b846126232571987058d3120b26753895847", count=200),
        _Source(
            CELEBA_GLOB,
            "70c3c330393300032d185946d4463592107b0eb3ccc8d9260edf5a87d04feb63",
            count=CELEBA_COUNT,
            names=tuple(f"{i:06d}.jpg" for i in range(1, CELEBA_COUNT + 1)),
        ),
    )
}

PART_SOURCES: dict[str, tuple[str, ...]] = {
    "faces": (CELEBA_GLOB,),
    "mnistm": (*MNIST_FILES.values(), BSDS_GLOB),
    "usps": (USPS_FILE,),
    "svhn": (SVHN_FILE,),
}

_FIX_HINT = "Re-copy it from the shared data set (see its README.md), or point --source at a complete copy."


# --------------------------------------------------------------------------- sources


def _source_files(source: Path, spec: _Source) -> list[Path]:
    if "*" not in spec.rel:
        path = source / spec.rel
        if not path.is_file():
            raise DataSourceError(f"missing source file: {spec.rel} (looked in {source}). {_FIX_HINT}")
        return [path]
    folder, pattern = spec.rel.rsplit("/", 1)
    if not (source / folder).is_dir():
        raise DataSourceError(f"missing source folder: {folder} (looked in {source}). {_FIX_HINT}")
    files = sorted((source / folder).glob(pattern))
    present = {f.name for f in files}
    missing = [n for n in spec.names if n not in present]
    if missing:
        shown = ", ".join(f"{folder}/{n}" for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataSourceError(f"missing source file(s): {shown} ({len(missing)} missing). {_FIX_HINT}")
    if spec.count is not None and len(files) != spec.count:
        raise DataSourceError(
            f"source folder {folder} holds {len(files)} files matching {pattern}, expected {spec.count}. {_FIX_HINT}"
        )
    return files


def _sha256(files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def check_sources(source: Path, parts: Sequence[str] = PARTS, *, verify: bool = True) -> dict[str, str]:
    """Check that the sources of ``parts`` exist (and, if ``verify``, match their sha256).

    Returns the expected checksums of the sources checked; raises ``DataSourceError``.
    """
    source = Path(source)
    if not source.is_dir():
        raise DataSourceError(f"source folder not found: {source}. Pass --source pointing at the shared data.")
    checked: dict[str, str] = {}
    for part in parts:
        for rel in PART_SOURCES[part]:
            if rel in checked:
                continue
            spec = SOURCES[rel]
            files = _source_files(source, spec)
            if verify:
                actual = _sha256(files)
                if actual != spec.sha256:
                    what = f"source file {rel}" if len(files) == 1 else (
                        f"source folder {rel} (sha256 of its {len(files)} files, sorted and concatenated; "
                        "one of them is damaged)"
                    )
                    raise DataSourceError(
                        f"corrupt {what}: sha256 {actual} != expected {spec.sha256}. "
                        f"{_FIX_HINT} (--no-verify skips this check.)"
                    )
            checked[rel] = spec.sha256
    return checked


def _unreadable(rel: str, exc: BaseException) -> DataSourceError:
    return DataSourceError(f"cannot read source file {rel}: {exc}. {_FIX_HINT}")


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped MNIST idx file (``*-idx?-ubyte.gz``) as a uint8 array."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError("not an unsigned-byte idx file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"idx file truncated: {data.size} bytes of data for shape {dims}")
    return data.reshape(dims)


def _load_mnist(source: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "test"
    out = []
    for kind in ("images", "labels"):
        rel = MNIST_FILES[f"{prefix}_{kind}"]
        try:
            out.append(read_idx(source / rel))
        except (OSError, EOFError, ValueError) as exc:
            raise _unreadable(rel, exc) from exc
    images, labels = out
    if len(images) != len(labels):
        raise DataSourceError(f"MNIST {split}: {len(images)} images but {len(labels)} labels. {_FIX_HINT}")
    return images, labels


def _load_bsds(source: Path) -> list[np.ndarray]:
    photos = []
    for path in _source_files(source, SOURCES[BSDS_GLOB]):
        try:
            with Image.open(path) as img:
                photos.append(np.asarray(img.convert("RGB")))
        except OSError as exc:
            raise _unreadable(f"bsds500/train/{path.name}", exc) from exc
    return photos


def _white_on_black(images: np.ndarray) -> np.ndarray:
    """Invert images in [0, 1] whose background (the border) is bright.

    The usps.h5 at hand is already white on black (ink 1, background 0); this
    guards against a copy stored the other way round.
    """
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    return 1.0 - images if float(border.mean()) > 0.5 else images


def _load_usps(source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import h5py  # only this part needs it

    try:
        with h5py.File(source / USPS_FILE, "r") as fh:
            raw = {s: (fh[g]["data"][:], fh[g]["target"][:]) for s, g in (("train", "train"), ("val", "test"))}
    except (OSError, KeyError, ValueError) as exc:
        raise _unreadable(USPS_FILE, exc) from exc
    return {
        split: (_white_on_black(x.reshape(-1, 16, 16).astype(np.float32)), y.astype(np.int64))
        for split, (x, y) in raw.items()
    }


def _load_svhn(source: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(source / SVHN_FILE) as npz:
            return npz["X"], npz["y"].astype(np.int64)
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise _unreadable(SVHN_FILE, exc) from exc


# --------------------------------------------------------------------------- image ops


def mnistm_crops(photos: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` random 28x28 crop positions as rows ``(photo, top, left)``."""
    heights = np.array([p.shape[0] for p in photos])
    widths = np.array([p.shape[1] for p in photos])
    photo = rng.integers(0, len(photos), size=n)
    top = rng.integers(0, heights[photo] - DIGIT_SIZE + 1)
    left = rng.integers(0, widths[photo] - DIGIT_SIZE + 1)
    return np.stack([photo, top, left], axis=1)


def compose_mnistm(digits: np.ndarray, photos: Sequence[np.ndarray], crops: np.ndarray) -> np.ndarray:
    """``|crop - digit|`` per channel: (n,28,28) uint8 digits -> (n,28,28,3) uint8."""
    s = DIGIT_SIZE
    background = np.stack([photos[p][t : t + s, l : l + s] for p, t, l in crops]).astype(np.int16)
    return np.abs(background - digits[..., None].astype(np.int16)).astype(np.uint8)


def _resize_gray(images: np.ndarray) -> np.ndarray:
    """Float [0,1] (n,h,w) -> uint8 RGB (n,28,28,3), bilinear in float so rounding happens once."""
    out = np.empty((len(images), DIGIT_SIZE, DIGIT_SIZE), dtype=np.uint8)
    for i, img in enumerate(images):
        big = np.asarray(Image.fromarray(img).resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BILINEAR))
        out[i] = np.clip(np.rint(big * 255.0), 0, 255)
    return np.repeat(out[..., None], 3, axis=3)


def _resize_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 (n,h,w,3) -> (n,28,28,3); Pillow's bilinear widens its kernel when shrinking (antialias)."""
    size = (DIGIT_SIZE, DIGIT_SIZE)
    return np.stack([np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR)) for img in images])


def _save_pngs(task: tuple[np.ndarray, list[str]]) -> int:
    images, paths = task
    for img, path in zip(images, paths):
        Image.fromarray(img).save(path, format="PNG", compress_level=_PNG_LEVEL)
    return len(paths)


def _convert_faces(pairs: list[tuple[str, str]]) -> int:
    for src, dst in pairs:
        try:
            with Image.open(src) as img:
                face = ImageOps.fit(img.convert("RGB"), (FACE_SIZE, FACE_SIZE), Image.Resampling.LANCZOS)
        except OSError as exc:
            raise DataSourceError(f"cannot read source file {src}: {exc}. {_FIX_HINT}") from exc
        face.save(dst, format="PNG", compress_level=_PNG_LEVEL)
    return len(pairs)


# --------------------------------------------------------------------------- runner


class _Runner:
    """Runs worker tasks in a process pool, or inline when ``workers <= 1``."""

    def __init__(self, workers: int) -> None:
        self._pool = multiprocessing.Pool(workers) if workers > 1 else None

    def run(self, func: Callable[[Any], int], tasks: Iterable[Any], bar: tqdm) -> None:
        results = self._pool.imap_unordered(func, tasks) if self._pool else map(func, tasks)
        for done in results:
            bar.update(done)

    def close(self, *, abort: bool = False) -> None:
        if self._pool is not None:
            if abort:  # on an error the queued tasks are pointless; don't wait for them
                self._pool.terminate()
            else:
                self._pool.close()
            self._pool.join()


def _chunks(n: int, size: int = _CHUNK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _write_csv(path: Path, names: Sequence[str], labels: Sequence[int]) -> None:
    with path.open("w", newline="\n") as fh:
        fh.write("image_name,label\n")
        fh.writelines(f"{name},{int(label)}\n" for name, label in zip(names, labels))


@dataclass(frozen=True)
class _Job:
    source: Path
    out: Path
    runner: _Runner
    seed: int
    limit: int | None
    progress: bool

    def take(self, n: int) -> int:
        return n if self.limit is None else min(n, self.limit)

    def bar(self, part: str, total: int) -> tqdm:
        return tqdm(total=total, desc=part, unit="img", disable=not self.progress)


# A digit split as its labels and a function from a slice of them to uint8 (n,28,28,3) images.
_DigitSplit = tuple[np.ndarray, Callable[[slice], np.ndarray]]


def _build_digits(job: _Job, domain: str, splits: dict[str, _DigitSplit]) -> dict[str, int]:
    folder = job.out / "digits" / domain
    (folder / "data").mkdir(parents=True, exist_ok=True)
    counts = {split: job.take(len(labels)) for split, (labels, _) in splits.items()}
    with job.bar(domain, sum(counts.values())) as bar:
        for split, (labels, images_of) in splits.items():
            names = [f"{split}_{i:05d}.png" for i in range(counts[split])]
            tasks = (
                (images_of(sl), [str(folder / "data" / name) for name in names[sl]])
                for sl in _chunks(counts[split])
            )
            job.runner.run(_save_pngs, tasks, bar)
            _write_csv(folder / f"{split}.csv", names, labels[: counts[split]])
    return counts


def _build_mnistm(job: _Job) -> dict[str, int]:
    photos = _load_bsds(job.source)
    splits: dict[str, _DigitSplit] = {}
    for index, split in enumerate(SPLITS):
        digits, labels = _load_mnist(job.source, split)
        crops = mnistm_crops(photos, len(digits), np.random.default_rng([job.seed, index]))
        splits[split] = (labels, lambda sl, d=digits, c=crops: compose_mnistm(d[sl], photos, c[sl]))
    return _build_digits(job, "mnistm", splits)


def _build_usps(job: _Job) -> dict[str, int]:
    usps = _load_usps(job.source)
    return _build_digits(job, "usps", {
        split: (labels, lambda sl, x=images: _resize_gray(x[sl])) for split, (images, labels) in usps.items()
    })


def _build_svhn(job: _Job) -> dict[str, int]:
    images, labels = _load_svhn(job.source)
    ranges = {"train": slice(0, SVHN_TRAIN_COUNT), "val": slice(SVHN_TRAIN_COUNT, len(images))}
    return _build_digits(job, "svhn", {
        split: (labels[r], lambda sl, x=images[r]: _resize_rgb(x[sl])) for split, r in ranges.items()
    })


def _build_faces(job: _Job) -> dict[str, int]:
    files = _source_files(job.source, SOURCES[CELEBA_GLOB])
    first = {"train": 0, "val": FACE_TRAIN_COUNT}  # faces are named by their index in the sorted list
    ends = {"train": FACE_TRAIN_COUNT, "val": CELEBA_COUNT}
    counts = {split: job.take(ends[split] - first[split]) for split in SPLITS}
    with job.bar("faces", sum(counts.values())) as bar:
        for split in SPLITS:
            folder = job.out / "face" / split
            folder.mkdir(parents=True, exist_ok=True)
            indices = range(first[split], first[split] + counts[split])
            pairs = [(str(files[i]), str(folder / f"{i:05d}.png")) for i in indices]
            job.runner.run(_convert_faces, (pairs[sl] for sl in _chunks(len(pairs))), bar)
    return counts


_BUILDERS = {"faces": _build_faces, "mnistm": _build_mnistm, "usps": _build_usps, "svhn": _build_svhn}
_PART_DIRS = {
    "faces": ("face",), "mnistm": ("digits", "mnistm"), "usps": ("digits", "usps"), "svhn": ("digits", "svhn"),
}


# --------------------------------------------------------------------------- entry point


def _prepare_out(out: Path, parts: Sequence[str]) -> Path:
    """Clear the folders of ``parts``, refusing to touch a tree this builder did not write."""
    manifest = out / "manifest.json"
    targets = [out.joinpath(*_PART_DIRS[p]) for p in parts]
    if not manifest.exists():
        occupied = [t for t in targets if t.exists() and any(t.iterdir())]
        if occupied:
            raise FileExistsError(
                f"{occupied[0]} is not empty and {out} has no manifest.json, so it was not written by this "
                "builder (it may be a real course folder); choose another --out or empty it yourself."
            )
        out.mkdir(parents=True, exist_ok=True)
        _write_manifest(manifest, {"builder_version": BUILDER_VERSION, "parts": {}})
    for target in targets:
        shutil.rmtree(target, ignore_errors=True)
    return manifest


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def build_all(
    source: Path,
    out: Path,
    *,
    seed: int = 0,
    limit: int | None = None,
    parts: Sequence[str] | None = None,
    workers: int = 2,
    verify: bool = True,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Build ``parts`` (default: all) of the hw2_data layout from ``source`` into ``out``.

    ``limit`` keeps only the first N images of each split. Returns
    ``{part: {"train": n, "val": n}}``. Raises ``DataSourceError`` for a missing,
    corrupt or unreadable source, ``FileExistsError`` if ``out`` holds a foreign tree.
    """
    source, out = Path(source), Path(out)
    parts = list(dict.fromkeys(PARTS if parts is None else parts))
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    checksums = check_sources(source, parts, verify=verify)
    manifest_path = _prepare_out(out, parts)

    counts: dict[str, dict[str, int]] = {}
    runner = _Runner(workers)
    try:
        job = _Job(source, out, runner, seed, limit, progress)
        for part in parts:
            counts[part] = _BUILDERS[part](job)
    except BaseException:
        runner.close(abort=True)
        raise
    runner.close()

    manifest = json.loads(manifest_path.read_text())
    manifest["builder_version"] = BUILDER_VERSION
    for part in parts:
        manifest.setdefault("parts", {})[part] = {
            "counts": counts[part],
            "seed": seed,
            "limit": limit,
            "verified": verify,
            "sources": {rel: checksums[rel] for rel in PART_SOURCES[part]},
        }
    _write_manifest(manifest_path, manifest)
    return counts
