"""What this machine's processors can do: native bf16 on the CPU, the CUDA GPUs.

Asked by `training.precision: bf16` before a run starts, and shown by `dlcli info`.
"""

from __future__ import annotations

from typing import Any


def cpu_capability() -> str:
    """The widest vector instruction set PyTorch's CPU kernels use here (e.g. AVX2, AVX512)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def cpu_bf16_native() -> bool:
    """True when oneDNN runs bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def device_report() -> dict[str, Any]:
    """The CPU's capability and bf16 support, and each CUDA GPU with its bf16 support."""
    import os

    import torch

    report: dict[str, Any] = {
        "torch": torch.__version__,
        "cpu": {"threads": torch.get_num_threads(), "cores": os.cpu_count(), "capability": cpu_capability(),
                "bf16_native": cpu_bf16_native()},
        "cuda": [],
    }
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            with torch.cuda.device(index):
                report["cuda"].append({"device": f"cuda:{index}", "name": torch.cuda.get_device_name(index),
                                       "bf16": bool(torch.cuda.is_bf16_supported())})
    return report
