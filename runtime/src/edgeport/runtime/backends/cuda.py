"""The GPU side of the machine: which NVIDIA GPUs exist, and CUDA runtime calls for TensorRT.

``probe_gpus`` asks the NVIDIA driver directly (``libcuda`` through ctypes), so it works with
no Python CUDA package installed and answers "why not" when there is no usable GPU. The
TensorRT backend allocates memory and streams through ``cuda-python``; ``cudart`` imports it
from either of its module paths (``cuda.bindings.runtime`` from 12.6 on, ``cuda.cudart`` before).
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any

from edgeport.runtime.errors import BackendUnavailable, ConfigError

_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    compute_capability: str  # "9.0"
    memory_bytes: int


@dataclass(frozen=True)
class GpuProbe:
    """The GPUs the driver reports, or why there are none."""

    devices: tuple[GpuDevice, ...]
    driver_version: str | None
    reason: str | None  # None when at least one GPU is usable

    def device(self, index: int) -> GpuDevice:
        """The GPU ``index``; ``BackendUnavailable`` saying why when it does not exist."""
        if self.reason is not None:
            raise BackendUnavailable(self.reason)
        if not 0 <= index < len(self.devices):
            raise BackendUnavailable(
                f"no CUDA device {index}: this machine has {len(self.devices)} "
                f"({', '.join(d.name for d in self.devices)})"
            )
        return self.devices[index]


def _driver_library() -> ctypes.CDLL:
    """libcuda by the names the driver installs; ``find_library`` only elsewhere: on Linux it
    searches what ``dlopen`` already searched, by running ``ldconfig``, ``gcc`` and ``ld``
    (tens of milliseconds of every start on a machine without a GPU)."""
    if sys.platform == "win32":
        names = ["nvcuda.dll"]
    elif sys.platform.startswith("linux"):
        names = ["libcuda.so.1", "libcuda.so"]
    else:
        from ctypes.util import find_library

        names = [name for name in [find_library("cuda")] if name]
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError as exc:
            errors.append(str(exc))
    raise OSError("; ".join(errors) or "no CUDA driver library on this platform")


@cache
def probe_gpus() -> GpuProbe:
    """Ask the NVIDIA driver for its GPUs (cached for the process)."""
    try:
        lib = _driver_library()
    except OSError:
        return GpuProbe((), None, "no NVIDIA GPU: the NVIDIA driver (libcuda) is not installed")

    def call(name: str, *args: Any) -> int:
        return int(getattr(lib, name)(*args))

    def error_text(code: int) -> str:
        text = ctypes.c_char_p()
        if call("cuGetErrorString", code, ctypes.byref(text)) == 0 and text.value:
            return f"{text.value.decode(errors='replace')} (CUresult {code})"
        return f"CUresult {code}"

    code = call("cuInit", 0)
    if code != 0:
        return GpuProbe((), None, f"no usable NVIDIA GPU: cuInit failed: {error_text(code)}")
    version = ctypes.c_int()
    driver = None
    if call("cuDriverGetVersion", ctypes.byref(version)) == 0:
        driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    count = ctypes.c_int()
    code = call("cuDeviceGetCount", ctypes.byref(count))
    if code != 0 or count.value == 0:
        why = error_text(code) if code else "the driver reports 0 devices"
        return GpuProbe((), driver, f"no NVIDIA GPU: {why}")
    devices = []
    for index in range(count.value):
        handle = ctypes.c_int()
        if call("cuDeviceGet", ctypes.byref(handle), index) != 0:
            continue
        name = ctypes.create_string_buffer(256)
        call("cuDeviceGetName", name, 256, handle)
        major, minor = ctypes.c_int(), ctypes.c_int()
        call(
            "cuDeviceGetAttribute",
            ctypes.byref(major),
            _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
            handle,
        )
        call(
            "cuDeviceGetAttribute",
            ctypes.byref(minor),
            _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
            handle,
        )
        memory = ctypes.c_size_t()
        call("cuDeviceTotalMem_v2", ctypes.byref(memory), handle)
        devices.append(
            GpuDevice(
                index=index,
                name=name.value.decode(errors="replace"),
                compute_capability=f"{major.value}.{minor.value}",
                memory_bytes=memory.value,
            )
        )
    return GpuProbe(tuple(devices), driver, None if devices else "no NVIDIA GPU answered")


def parse_device(device: str | int | None) -> tuple[str | None, int]:
    """``None``/"cpu"/"cuda"/"cuda:N"/N to (kind, index); kind None means "any"."""
    if device is None:
        return None, 0
    if isinstance(device, int) and not isinstance(device, bool):
        if device < 0:
            raise ConfigError(f"device index must be >= 0, got {device}")
        return "cuda", device
    if isinstance(device, str):
        text = device.strip().lower()
        if text == "cpu":
            return "cpu", 0
        if text in ("cuda", "gpu"):
            return "cuda", 0
        if text.startswith(("cuda:", "gpu:")) and text.split(":", 1)[1].isdigit():
            return "cuda", int(text.split(":", 1)[1])
    raise ConfigError(
        f"device must be None, 'cpu', 'cuda', 'cuda:N' or a GPU index, got {device!r}"
    )


def cudart() -> Any:
    """The cuda-python runtime module, from whichever path this cuda-python version has."""
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python < 12.6
        except ImportError as exc:
            raise BackendUnavailable(
                "the TensorRT backend needs cuda-python for device memory and streams: "
                "pip install 'edgeport-runtime[tensorrt]'"
            ) from exc
    return runtime


def cuda_call(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(error, *values)`` result; raise on an error, naming the call."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if int(err) != 0:
        runtime = cudart()
        _, text = runtime.cudaGetErrorString(err)
        message = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        raise BackendUnavailable(f"CUDA call {what} failed: {getattr(err, 'name', err)}: {message}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values
