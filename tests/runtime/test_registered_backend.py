"""A backend added from outside edgeport's backend modules, by its record alone: ONNX Runtime on
the CPU with basic graph optimizations (a real session with other ``SessionOptions``). Once
registered it is found by ``load`` (named, and by ``auto``), ``explain``, ``inspect``,
``bench`` (with its profiler), ``tune`` and the CLI's ``--backend``, with no other edit."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rt_bundles
import rt_graphs

from edgeport.runtime import load
from edgeport.runtime.backends.base import Backend
from edgeport.runtime.backends.onnxrt import (
    CPU,
    OnnxRuntimeBackend,
    OrtSettings,
    unavailable_reason,
)
from edgeport.runtime.backends.registry import register, unregister
from edgeport.runtime.backends.spec import BackendSpec, ModelFile, OpenRequest
from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.tools.bench import BenchSettings, benchmark
from edgeport.runtime.tools.profile import ProfileConfig, profile_onnxruntime
from edgeport.runtime.tools.timing import TimingConfig
from edgeport.runtime.tools.tune import TuneSettings, tune

NAME = "onnxruntime-basic"


def _settings(threads: int | None) -> OrtSettings:
    return OrtSettings(threads=threads, provider=CPU, optimization="basic")


def _open(request: OpenRequest) -> Backend:
    return OnnxRuntimeBackend(request.model, NAME, _settings(request.threads))


def _profiler(name: str, file: ModelFile, threads: int | None) -> Any:
    def profile(arrays: Sequence[np.ndarray], config: ProfileConfig) -> Any:
        return profile_onnxruntime(file.path, name, arrays, config, _settings(threads))

    return profile


BASIC = BackendSpec(
    name=NAME,
    formats=("onnx",),
    target="onnxruntime",
    device="cpu",
    precisions=("fp32", "int8", "fp16"),
    unavailable=lambda file, device_index: unavailable_reason(NAME, device_index, CPU),
    open=_open,
    profiler=_profiler,
    packages=("onnxruntime",),
)


@pytest.fixture()
def basic() -> Iterator[BackendSpec]:
    register(BASIC, before="onnxruntime-cpu")  # auto tries it before ONNX Runtime's default
    try:
        yield BASIC
    finally:
        unregister(NAME)


@pytest.fixture()
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEPORT_CACHE_DIR", str(tmp_path / "cache"))  # no tuning record
    return rt_bundles.gemm_bundle(tmp_path / "b", ("fp32", "int8"))


def test_load_and_explain_find_it(basic: BackendSpec, bundle: Path) -> None:
    batch = rt_graphs.integer_batch(4)
    with load(bundle, backend=NAME, threads=1) as model:
        assert model.backend == NAME and model.artifact.name == "onnx-fp32"  # type: ignore[union-attr]
        assert model.describe()["graph_optimization_level"] == "ORT_ENABLE_BASIC"
        expected = rt_graphs.gemm_reference(batch)
        np.testing.assert_allclose(model.run(batch), expected, rtol=1e-5, atol=1e-5)
    with load(bundle, backend=NAME, artifact="onnx-int8") as model:
        assert model.artifact.name == "onnx-int8"  # type: ignore[union-attr]
    with load(bundle, threads=1) as model:  # auto: the first CPU backend in the registry's order
        assert model.backend == NAME
        text = model.explain()
    assert f"chosen: {NAME}, onnx-fp32 (fp32)" in text
    assert f"{NAME}: fp32 > int8 > fp16" in text  # the precision rule, from its record


def test_it_is_gone_when_unregistered(bundle: Path) -> None:
    register(BASIC)
    unregister(NAME)
    with pytest.raises(ConfigError, match=f"unknown backend '{NAME}'"):
        load(bundle, backend=NAME)


def test_inspect_lists_it(
    basic: BackendSpec, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(bundle), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["machine"]["backends"][NAME] is None  # it can run here
    assert all(NAME in art["backends"] for art in info["artifacts"])


def test_bench_times_and_profiles_it(basic: BackendSpec, bundle: Path) -> None:
    settings = BenchSettings(
        backends=(NAME, "onnxruntime-cpu"),
        precisions=("fp32",),
        batches=(1,),
        timing=TimingConfig(warmup_s=0.0, iterations=5),
        threads=1,
        baselines=(),
        profile=ProfileConfig(warmup_runs=1, runs=2),
    )
    result = benchmark(bundle, settings)
    assert {r.backend for r in result.rows} == {NAME, "onnxruntime-cpu"}
    (profiled,) = [p for p in result.profiles if p.backend == NAME]
    assert profiled.profile.layers and not profiled.profile.notes[1:]  # CPU: no GPU note


def test_tune_measures_it(basic: BackendSpec, bundle: Path) -> None:
    quick = TuneSettings(batches=(1,), threads=1, timing=TimingConfig(warmup_s=0.0, iterations=5))
    record, _ = tune(bundle, quick)
    measured = {(t.backend, t.artifact) for entry in record.batches for t in entry.timings}
    assert (NAME, "onnx-fp32") in measured and ("onnxruntime-cpu", "onnx-fp32") in measured


def test_the_cli_takes_it_as_backend(
    basic: BackendSpec, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(bundle), "--backend", NAME, "--threads", "1", "--json"]) == 0
    assert NAME in capsys.readouterr().out
    unregister(NAME)
    try:
        with pytest.raises(SystemExit):  # the choices are read when parsing
            main(["run", str(bundle), "--backend", NAME])
    finally:
        register(BASIC)
