"""The checkpoint format shared by training (writer) and workers (reader).

A model ``NAME`` in a checkpoint directory is:
- ``NAME.json``: the model card (kind, network config, data, training, metrics);
- ``NAME.safetensors``: inference weights only, fp16 by default; or, when larger
  than one shard, ``NAME-00001-of-0000K.safetensors`` ... plus
  ``NAME.safetensors.index.json`` (the Hugging Face sharded layout: a
  ``weight_map`` from tensor name to shard file).

No pickle is on the load path: safetensors and JSON only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .dann import DANN, DANNConfig
from .dcgan import DCGANConfig, Generator
from .digit_classifier import DigitClassifier, DigitClassifierConfig
from .unet import ConditionalUNet, UNetConfig

FORMAT_VERSION = 1
DEFAULT_SHARD_BYTES = 15 * 2**20  # stays under a 16 MiB per-file limit


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match its card."""


@dataclass(frozen=True)
class ModelKind:
    build: Callable[[Any], nn.Module]
    config_type: type


KINDS: dict[str, ModelKind] = {
    "dcgan-generator": ModelKind(Generator, DCGANConfig),
    "conditional-unet": ModelKind(ConditionalUNet, UNetConfig),
    "dann": ModelKind(DANN, DANNConfig),
    "digit-classifier": ModelKind(DigitClassifier, DigitClassifierConfig),
}


def kind_of(model: nn.Module) -> str:
    for name, kind in KINDS.items():
        if type(model) is kind.build:
            return name
    raise CheckpointError(f"no checkpoint kind for {type(model).__name__}")


def build_model(kind: str, config: dict) -> nn.Module:
    if kind not in KINDS:
        raise CheckpointError(f"unknown model kind {kind!r}; known: {sorted(KINDS)}")
    spec = KINDS[kind]
    return spec.build(spec.config_type(**config))


def card_path(directory: Path, name: str) -> Path:
    return Path(directory) / f"{name}.json"


def read_card(directory: Path, name: str) -> dict:
    path = card_path(directory, name)
    if not path.is_file():
        raise CheckpointError(f"model card {path} not found: train the model or point CHECKPOINT_DIR at a folder that has it")
    return json.loads(path.read_text())


def write_card(directory: Path, name: str, card: dict) -> Path:
    path = card_path(directory, name)
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return path


def list_cards(directory: Path) -> dict[str, dict]:
    """Every model card in ``directory`` (files with a ``kind`` key), by name."""
    cards = {}
    for path in sorted(Path(directory).glob("*.json")):
        if path.name.endswith(".index.json"):
            continue
        card = json.loads(path.read_text())
        if isinstance(card, dict) and "kind" in card:
            cards[path.stem] = card
    return cards


def _inference_state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[key] = tensor.contiguous()
    return state


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def save_model(
    model: nn.Module,
    directory: Path,
    name: str,
    card: dict,
    *,
    dtype: torch.dtype = torch.float16,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Path:
    """Write inference weights and the model card; returns the card's path.

    ``card`` holds what the caller knows (data, training, metrics); kind, config,
    dtype and file names are filled in here so they always match the weights.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in list(directory.glob(f"{name}.safetensors*")) + list(directory.glob(f"{name}-0*-of-*.safetensors")):
        stale.unlink()
    state = _inference_state(model, dtype)
    shards = _shards(state, max_shard_bytes)
    metadata = {"format": "pt", "name": name}
    if len(shards) == 1:
        files = [f"{name}.safetensors"]
        save_file(shards[0], directory / files[0], metadata=metadata)
    else:
        files = [f"{name}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        weight_map = {}
        for file, shard in zip(files, shards):
            save_file(shard, directory / file, metadata=metadata)
            weight_map.update({key: file for key in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (directory / f"{name}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    full_card = {
        "name": name,
        "kind": kind_of(model),
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        **{k: v for k, v in card.items() if k not in {"name", "kind", "format_version", "config", "weights"}},
        "weights": {
            "dtype": str(dtype).removeprefix("torch."),
            "files": files,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
    }
    return write_card(directory, name, full_card)


def load_state(directory: Path, name: str) -> dict[str, torch.Tensor]:
    """The tensors of ``name``, from one file or from its shards."""
    directory = Path(directory)
    single = directory / f"{name}.safetensors"
    index = directory / f"{name}.safetensors.index.json"
    if single.is_file():
        return load_file(single)
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        state: dict[str, torch.Tensor] = {}
        for file in sorted(set(weight_map.values())):
            if not (directory / file).is_file():
                raise CheckpointError(f"shard {directory / file} listed in {index.name} is missing")
            state.update(load_file(directory / file))
        return state
    raise CheckpointError(f"no weights for {name!r} in {directory}: expected {single.name} or {index.name}")


def load_model(
    directory: Path, name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, dict]:
    """Build the network its card describes, load its weights, and put it in eval mode."""
    card = read_card(directory, name)
    model = build_model(card["kind"], card["config"])
    state = load_state(directory, name)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"weights of {name!r} do not match its card: {err}") from err
    return model.to(device=device, dtype=dtype).eval(), card


def update_metrics(directory: Path, name: str, metrics: dict) -> dict:
    """Merge ``metrics`` into the card's ``metrics`` (evaluation commands write through this)."""
    card = read_card(directory, name)
    card.setdefault("metrics", {}).update(metrics)
    write_card(directory, name, card)
    return card
