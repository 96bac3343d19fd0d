"""What this machine can run: used by conftest to skip gpu/tensorrt tests with a reason."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from functools import cache


@cache
def cuda_gpu_reason() -> str | None:
    """None when an NVIDIA GPU with a working driver is visible, else why not."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA GPU: nvidia-smi not found"
    result = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False)
    if result.returncode != 0 or "GPU" not in result.stdout:
        return f"no NVIDIA GPU: nvidia-smi -L said {result.stdout or result.stderr!r}"
    return None


@cache
def tensorrt_module_name() -> str | None:
    """'tensorrt' or 'tensorrt_rtx', whichever is importable (full TensorRT first)."""
    for name in ("tensorrt", "tensorrt_rtx"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None
