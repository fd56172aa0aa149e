"""CPU inference runtimes for the diffusion UNet: the network exported once to ONNX (``export``), run by torch,
OpenVINO or ONNX Runtime behind one callable (``engines``), and the choice among them (``choice``).

Measured on the shipped UNet, batch 20, 2 threads of an AMD EPYC with avx512_bf16, idle / shared with another job:
eager torch 475 / 1410-1544 ms, ONNX Runtime fp32 530 / 1005-1153 ms, OpenVINO fp32 424 / 956-1059 ms (both within
6e-6 of torch), OpenVINO bf16 202 / 507-551 ms (max |diff| 0.03). OpenVINO is the runtime the project depends on:
the fastest at fp32 and the only one with a bf16 path. ONNX Runtime is an optional engine, used when installed: no
faster than OpenVINO, nor than eager torch on an idle CPU, it would add ~80 MB to the worker for nothing measured.
"""

from .choice import (
    ACCURACY_TOLERANCE,
    MSSSIM_TOLERANCE,
    bf16_refusal,
    calibrate,
    choose_engine,
    measured_record,
    record_key,
)
from .engines import ENGINE_PRECISIONS, NoiseModel, TorchEngine, build_engine, precision_of
from .export import export_onnx, weights_digest
from .hardware import cpu_description, cpu_has_bf16

__all__ = [
    "ACCURACY_TOLERANCE",
    "ENGINE_PRECISIONS",
    "MSSSIM_TOLERANCE",
    "NoiseModel",
    "TorchEngine",
    "bf16_refusal",
    "build_engine",
    "calibrate",
    "choose_engine",
    "cpu_description",
    "cpu_has_bf16",
    "export_onnx",
    "measured_record",
    "precision_of",
    "record_key",
    "weights_digest",
]
