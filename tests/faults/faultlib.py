"""Faults of the machine, made real: small tmpfs mounts (full, or read-only), folders a process
may not write, files that change or vanish while edgeport uses them. Commands run as real
processes under a timeout, so a hang fails the test instead of stalling the suite.

Mounting needs root (and a kernel that lets this container mount); a process without the
right to write is made by dropping root's override capabilities (``setpriv``), as a non-root
user would be. Where either is impossible the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

EDGEPORT = str(Path(sys.executable).with_name("edgeport"))
TIMEOUT_S = 300
QUICK = ("--warmup-s", "0", "--duration-s", "0.05")  # timing flags of bench and tune
# A root process without these capabilities is refused by file permissions like any user.
DROP_OVERRIDES = ("--bounding-set=-dac_override,-dac_read_search,-fowner",)


@contextmanager
def tmpfs(path: Path, size: str = "4m", *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (read-only if asked), unmounted afterwards."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60, check=False)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to the last byte (writes of halving size)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        size = 1 << 16
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError:
                size //= 2
    finally:
        os.close(fd)


def unprivileged() -> list[str]:
    """A command prefix that runs a process refused by file permissions, or skip."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not hasattr(os, "geteuid"):
        pytest.skip("setpriv is not installed")
    if os.geteuid() != 0:
        return []  # already a user whom permissions refuse
    prefix = [setpriv, *DROP_OVERRIDES]
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "pass"], capture_output=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot drop capabilities here: {probe.stderr.decode().strip()}")
    return prefix


def edgeport(
    *args: object,
    env: dict[str, str] | None = None,
    prefix: list[str] | None = None,
    timeout: float = TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """``edgeport ARGS`` in a new process; a traceback in its output fails the test."""
    done = subprocess.run(
        [*(prefix or []), EDGEPORT, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def run_on_openvino(
    bundle: Path, inputs: Path, out: Path, env: dict[str, str], prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``edgeport run BUNDLE --backend openvino --inputs INPUTS --out OUT``, exit 0 asserted."""
    done = edgeport(
        "run", bundle, "--backend", "openvino", "--inputs", inputs, "--out", out,
        env=env, prefix=prefix,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done
