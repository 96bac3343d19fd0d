"""What arithmetic this CPU has for reduced precision: bf16, int8 dot products, fp16.

Read from the CPU's own flags (``/proc/cpuinfo``: ``flags`` on x86, ``Features`` on Arm) without
importing any engine, so the automatic choice can ask at every load; OpenVINO's view of the same
CPU (its ``OPTIMIZATION_CAPABILITIES``, e.g. ``BF16``, ``INT8``, ``FP32``) is added by
:func:`describe` when OpenVINO is installed. ``inspect``, ``explain``, ``tune`` and the
benchmarks print it next to their numbers.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgeport.runtime.envinfo import cpuinfo_lines

log = logging.getLogger(__name__)

# The flags that matter for inference precision, by what they give (x86 and Arm names).
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # Arm: "bf16" (v8.6 BFDOT/BFMMLA)
AMX_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "amx_fp16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "asimddp")
FP16_FLAGS = ("amx_fp16", "avx512_fp16", "fphp", "asimdhp")
VECTOR_FLAGS = ("avx512f", "avx2", "fma", "sve", "asimd")
KNOWN_FLAGS = frozenset((*BF16_FLAGS, *AMX_FLAGS, *INT8_FLAGS, *FP16_FLAGS, *VECTOR_FLAGS))


@dataclass(frozen=True)
class CpuFeatures:
    """The precision-related flags of this CPU (a subset of :data:`KNOWN_FLAGS`)."""

    arch: str
    flags: frozenset[str]

    @classmethod
    def from_flags(cls, arch: str, flags: Iterable[str]) -> CpuFeatures:
        return cls(arch, frozenset(f for f in flags if f in KNOWN_FLAGS))

    @property
    def bf16(self) -> bool:
        """bf16 arithmetic in hardware (AVX512_BF16, AMX-BF16, Arm BF16)."""
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def amx(self) -> bool:
        return any(f in self.flags for f in AMX_FLAGS)

    def names(self, group: tuple[str, ...]) -> list[str]:
        return [f for f in group if f in self.flags]

    def summary(self) -> str:
        """``bf16 (avx512_bf16), int8 dot products (avx512_vnni), no AMX, fp16: none``."""

        def part(what: str, group: tuple[str, ...]) -> str:
            found = self.names(group)
            return f"{what} ({', '.join(found)})" if found else f"{what}: none"

        return ", ".join(
            (
                part("bf16", BF16_FLAGS),
                part("int8 dot products", INT8_FLAGS),
                part("AMX", AMX_FLAGS),
                part("fp16", FP16_FLAGS),
            )
        )


@functools.cache
def cpu_features() -> CpuFeatures:
    """This CPU's precision flags from ``/proc/cpuinfo`` (empty where there is none), read
    once per process."""
    flags: set[str] = set()
    for line in cpuinfo_lines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
            break  # every core lists the same
    return CpuFeatures.from_flags(platform.machine(), flags)


def openvino_capabilities() -> tuple[str, ...] | None:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of its CPU device, None when OpenVINO is not
    installed (see :func:`edgeport.runtime.backends.openvino.cpu_capabilities`)."""
    if importlib.util.find_spec("openvino") is None:
        return None
    from edgeport.runtime.backends.openvino import cpu_capabilities

    return cpu_capabilities()


def describe() -> dict[str, Any]:
    """This CPU's precision capabilities for reports: its flags and OpenVINO's reading."""
    features = cpu_features()
    return {
        "arch": features.arch,
        "flags": sorted(features.flags),
        "bf16": features.bf16,
        "amx": features.amx,
        "summary": features.summary(),
        "openvino": openvino_capabilities(),
    }


def describe_line(info: dict[str, Any] | None = None) -> str:
    """:func:`describe` in one line."""
    info = info or describe()
    ov = info.get("openvino")
    ov_text = "OpenVINO not installed" if ov is None else ", ".join(ov) or "none reported"
    return f"{info['arch']}: {info['summary']}; OpenVINO CPU capabilities: {ov_text}"
