"""The environment a number was measured in: CPU, cores, threads, GPU, driver, versions, bundle.

Saved beside every benchmark and check result, so a number never travels without its machine.
Nothing here imports a heavy library: versions come from the names of the installed
distributions' metadata folders, the GPUs from ``nvidia-smi`` when it is on the PATH, the CUDA
driver version from the driver itself.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

from edgeport.runtime.backends.cuda import probe_gpus

log = logging.getLogger(__name__)

# Distributions whose versions matter for the numbers (absent ones are left out).
PACKAGES = (
    "edgeport-runtime",
    "edgeport-train",
    "edgeport-export",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "ai-edge-litert",
    "executorch",
    "litert-torch",
    "torch",
    "torchvision",
    "tensorrt",
    "tensorrt-cu12",
    "tensorrt-cu13",
    "tensorrt-rtx-cu13",
    "cuda-python",
    "cuda-bindings",
    "safetensors",
    "matplotlib",
)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_SMI_TIMEOUT_S = 10


@cache
def _cpuinfo() -> tuple[str, ...]:
    """The lines of ``/proc/cpuinfo`` (read once per process), empty where there is none."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return ()
    return tuple(cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines())


def cpuinfo_lines() -> tuple[str, ...]:
    """The lines of ``/proc/cpuinfo``, read once per process; empty where there is none."""
    return _cpuinfo()


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 7B13"), or the best the platform offers."""
    for line in _cpuinfo():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            name = line.split(":", 1)[1].strip()
            if name:
                return re.sub(r"\s+", " ", name)
    if sys.platform == "darwin":
        out = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if out:
            return out.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_counts() -> dict[str, int | None]:
    """Logical CPUs, physical cores (Linux), and the CPUs this process may run on."""
    logical = os.cpu_count()
    cores: set[tuple[str, str]] = set()
    package = ""
    for line in _cpuinfo():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            package = value.strip()
        elif key == "core id":
            cores.add((package, value.strip()))
    physical = len(cores) or None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return {"logical": logical, "physical": physical, "usable": usable}


def machine_slug() -> str:
    """A folder name for this machine's results: CPU model and usable cores, e.g.
    ``amd-epyc-7b13-2c``."""
    name = cpu_model().lower()
    name = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\d+-core", " ", name)
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "unknown-cpu"
    cores = cpu_counts()["usable"] or 0
    return f"{slug}-{cores}c"


def gpu_slug(gpu_name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``gpu-nvidia-h100-80gb-hbm3``."""
    return "gpu-" + (re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "unknown")


def _run(cmd: list[str]) -> str | None:
    import subprocess  # only to ask tools (nvidia-smi, sysctl): not at every start

    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=_SMI_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("%s failed: %s", cmd[0], exc)
        return None
    return result.stdout if result.returncode == 0 else None


def gpus() -> list[dict[str, str]]:
    """Name, driver, memory and compute capability of each NVIDIA GPU ``nvidia-smi`` sees."""
    import shutil

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    fields = ("name", "driver_version", "memory.total", "compute_cap", "pci.bus_id")
    out = _run([smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"])
    if not out:
        return []
    found = []
    for line in out.strip().splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) == len(fields):
            found.append(
                dict(
                    zip(
                        ("name", "driver", "memory", "compute_capability", "bus"),
                        values,
                        strict=True,
                    )
                )
            )
    return found


def cuda_driver_version() -> str | None:
    """The CUDA version the driver supports (``nvidia-smi``'s "CUDA Version"), from libcuda."""
    return probe_gpus().driver_version


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@cache
def _installed() -> dict[str, str | None]:
    """{normalized distribution name: version} from the ``.dist-info``/``.egg-info`` folders on
    ``sys.path``, the first one of a name winning (as in importlib.metadata)."""
    found: dict[str, str | None] = {}
    for entry in sys.path:
        try:
            names = [path.name for path in Path(entry or ".").iterdir()]
        except OSError:
            continue
        for item in names:
            stem, _, suffix = item.rpartition(".")
            if suffix in ("dist-info", "egg-info"):
                dist, _, rest = stem.partition("-")
                found.setdefault(_normalized(dist), rest.split("-")[0] or None)
    return found


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed.

    Read from the name of its metadata folder: importing ``importlib.metadata`` costs tens of
    milliseconds of a process's start, which ``load(backend="auto")`` (the tuning record's
    versions) must not pay. A folder that names no version (an old ``.egg-info``) is asked
    through importlib.metadata."""
    key = _normalized(name)
    if key not in _installed():
        return None
    found = _installed()[key]
    if found:
        return found
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """{name: version} of the distributions in ``names`` that are installed."""
    return {name: v for name in dict.fromkeys(names) if (v := package_version(name)) is not None}


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy the machine was (Unix only)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def collect_environment(*, threads: int | None = None) -> dict[str, Any]:
    """Everything about this machine that a latency number depends on."""
    gpu_list = gpus()
    return {
        "machine": machine_slug(),
        "cpu": {"model": cpu_model(), **cpu_counts(), "arch": platform.machine()},
        "threads": {
            "requested": threads,
            **{k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        },
        "load_average": load_average(),
        "gpus": gpu_list,
        "cuda_driver": cuda_driver_version() if gpu_list else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions((*PACKAGES, *engine_packages())),
    }


def engine_packages() -> tuple[str, ...]:
    """The distributions the registered backends run on (``BackendSpec.packages``)."""
    from edgeport.runtime.backends.registry import backend_specs  # the backends import this

    return tuple(dict.fromkeys(p for s in backend_specs() for p in s.packages))
