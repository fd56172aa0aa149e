"""The engines that run the UNet: one callable protocol, three runtimes.

Each takes (sample (N, 3, 28, 28) float32, timestep (N,) long, label (N,) long, -1 = no
label) and returns the predicted noise as float32, for any N: the pipeline sends N
or, with guidance, 2N rows.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import nn

EngineName = Literal["torch", "openvino", "onnxruntime"]
Precision = Literal["fp32", "bf16"]
# The precisions each engine can run: ONNX Runtime's CPU provider has no bf16 kernels for these ops, and torch's
# CPU bf16 autocast measured no faster than its fp32 on the shipped UNet (batch 20, on a CPU with avx512_bf16).
ENGINE_PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32",),
    "openvino": ("fp32", "bf16"),
    "onnxruntime": ("fp32",),
}
_PRECISION_OF = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class NoiseModel(Protocol):
    name: str
    precision: str

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...


def precision_of(dtype: torch.dtype) -> str:
    """``fp32`` / ``bf16`` / ``fp16``: how engines and GET /models name a torch dtype."""
    return _PRECISION_OF.get(dtype, str(dtype).removeprefix("torch."))


class TorchEngine:
    """The module itself, eager, at its weights' dtype."""

    name = "torch"

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.precision = precision_of(next(module.parameters()).dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.module(x, t, labels).float()


def _feed(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    # contiguous(): the pipeline's timesteps are an expanded (stride 0) tensor, and its samples may be channels-last.
    return {
        "sample": x.detach().to("cpu", torch.float32).contiguous().numpy(),
        "timestep": t.detach().to("cpu", torch.int64).contiguous().numpy(),
        "label": labels.detach().to("cpu", torch.int64).contiguous().numpy(),
    }


class OpenVinoEngine:
    """The ONNX export compiled by OpenVINO's CPU plugin; bf16 through its inference precision hint."""

    name = "openvino"

    def __init__(self, onnx_path: Path, precision: str, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        config = {
            # Always explicit: on CPUs with native bf16 the plugin's default is bf16, not f32.
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
        self.precision = precision
        self._local = threading.local()  # an infer request serves one call at a time: one per thread

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer(_feed(x, t, labels))[0]
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))  # the request reuses its output buffer


class OnnxRuntimeEngine:
    """The ONNX export on ONNX Runtime's CPU execution provider, fp32."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, onnx_path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # As the worker sets for torch (workers.registry): softmax's subnormal floats are slow on x86.
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, _feed(x, t, labels))[0])


def build_engine(
    name: str, precision: str, unet: nn.Module, onnx_path: Callable[[], Path], threads: int | None = None
) -> NoiseModel:
    """Engine ``name`` at ``precision``; ``onnx_path`` exports (or finds) the ONNX file, called only when needed."""
    if precision not in ENGINE_PRECISIONS.get(name, ()):
        raise ValueError(f"engine {name!r} has no {precision} path (it runs {ENGINE_PRECISIONS.get(name)})")
    threads = threads or torch.get_num_threads()
    if name == "torch":
        return TorchEngine(unet)
    importlib.import_module(name)  # a runtime that is not installed fails here, before an export is paid for
    if name == "openvino":
        return OpenVinoEngine(onnx_path(), precision, threads)
    return OnnxRuntimeEngine(onnx_path(), threads)
