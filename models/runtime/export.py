"""A cached ONNX export of the diffusion UNet: the input of the OpenVINO and ONNX Runtime engines.

The file is named by a hash of what determines its bytes (the weights, the network's
config, torch's version and the opset), so a retrained checkpoint or another torch
gets a new export, and a worker restart reuses the old one without exporting again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..unet import NULL_LABEL, ConditionalUNet

ONNX_OPSET = 17
INPUT_NAMES = ("sample", "timestep", "label")
OUTPUT_NAME = "eps"
# Raise when the export's code changes the file it writes: cached files of the old code then go unused.
EXPORT_FORMAT = 1


def weights_digest(module: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes and bytes, in order), whatever its memory format."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def export_key(unet: ConditionalUNet) -> str:
    """The hash that names ``unet``'s export."""
    parts = {
        "weights": weights_digest(unet),
        "config": unet.config.to_dict(),
        "torch": torch.__version__,
        "opset": ONNX_OPSET,
        "format": EXPORT_FORMAT,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def export_onnx(unet: ConditionalUNet, checkpoint_key: str, cache_dir: Path) -> Path:
    """``cache_dir/<checkpoint_key>-<hash>.onnx``, exported unless a file of these weights is already there.

    Written to a temporary file and renamed, so a worker that dies mid-export, or two
    workers exporting at once, never leave a half-written model under the final name.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"{checkpoint_key}-{export_key(unet)[:16]}.onnx"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=cache_dir)
    os.close(handle)
    try:
        _export(unet, Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would keep the cache from workers running as other users
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path


def _export(unet: ConditionalUNet, path: Path) -> None:
    """The TorchScript-based exporter (``dynamo=False``): it needs no onnxscript, and it traces this UNet, whose
    Python branches do not depend on the batch, into one graph with a dynamic batch axis."""
    param = next(unet.parameters())
    model = unet if (param.device.type, param.dtype) == ("cpu", torch.float32) else copy.deepcopy(unet).float().cpu()
    size, channels = model.config.sample_size, model.config.in_channels
    # Batch 2 with a real and a null label, so neither case is traced as a constant.
    example = (
        torch.zeros(2, channels, size, size),
        torch.tensor([1, 2], dtype=torch.long),
        torch.tensor([0, NULL_LABEL], dtype=torch.long),
    )
    batch_axis = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # Tracer warnings about Python ints taken from shapes: those are the crop sizes, fixed by the config.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            example,
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: batch_axis for name in (*INPUT_NAMES, OUTPUT_NAME)},
        )
