"""One rule decides what runs, whatever a tuning record says: an artifact whose export parity
check failed is never run by ``auto`` (a record naming it is not obeyed, and ``explain`` says
why), is refused when asked for by name unless the caller opts in, and a record measured with
the same effective settings holds however they were spelled."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs
from faultlib import edgeport

from edgeport.runtime import load
from edgeport.runtime.errors import ParityError
from edgeport.runtime.tools.timing import TimingConfig
from edgeport.runtime.tools.tune import TuneSettings, tune
from edgeport.runtime.tuning_records import (
    BatchWinner,
    Timing,
    TuningRecord,
    default_threads,
    effective_settings,
    engine_versions,
    machine_fingerprint,
    manifest_digest,
    save_record,
)

BACKENDS = ["onnxruntime-cpu", "openvino"]
FAILED = {"int8": rt_bundles.passed(False)}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPORT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    """fp32 and int8 artifacts; the int8 one failed its export parity check."""
    return rt_bundles.gemm_bundle(tmp_path / "b", ("fp32", "int8"), parity=FAILED)


def record_naming(
    bundle: Path, backend: str, artifact: str, *, threads: int | None = None
) -> TuningRecord:
    """A well-formed record, as `tune` writes them, whose winner at batch 1 and 8 is given."""
    winner = Timing(backend, "int8", artifact, 0.01, 0.02)
    return TuningRecord(
        manifest_sha256=manifest_digest(bundle),
        machine=machine_fingerprint(),
        versions=engine_versions(),
        threads=threads,
        created="2026-12-01T00:00:00+00:00",
        batches=tuple(BatchWinner(b, winner, (winner,)) for b in (1, 8)),
        settings=effective_settings(threads),
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("in_bundle", [False, True])
@pytest.mark.parametrize("batch", [1, 8])
def test_a_record_naming_a_failed_artifact_is_not_obeyed(
    bundle: Path, backend: str, in_bundle: bool, batch: int
) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    save_record(record_naming(bundle, backend, "onnx-int8"), bundle, in_bundle=in_bundle)
    with load(bundle, expected_batch=batch) as model:
        assert model.precision == "fp32"
        assert np.array_equal(
            model.run(rt_graphs.integer_batch(batch)),
            rt_graphs.gemm_reference(rt_graphs.integer_batch(batch)),
        )
        text = model.explain()
    assert f"it names {backend} [onnx-int8]" in text
    assert f"not obeyed: {backend} [onnx-int8]: its export parity check failed" in text
    assert "the fastest was" not in text


def test_the_cli_explains_and_exits_0_on_the_trusted_artifact(bundle: Path, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(image)
    save_record(record_naming(bundle, "onnxruntime-cpu", "onnx-int8"), bundle, in_bundle=True)
    done = edgeport("predict", bundle, image, "--explain")
    assert done.returncode == 0, done.stderr
    assert "chosen: onnxruntime-cpu, onnx-fp32 (fp32)" in done.stdout
    assert "not obeyed: onnxruntime-cpu [onnx-int8]: its export parity check failed" in done.stdout


def test_a_record_naming_a_backend_that_does_not_exist(bundle: Path) -> None:
    save_record(record_naming(bundle, "tensorflow-lite", "onnx-fp32"), bundle)
    with load(bundle) as model:
        text = model.explain()
    assert "it names backend 'tensorflow-lite', which this edgeport does not have" in text
    assert "the fastest was" not in text and "fastest (" not in text


def test_asking_for_the_failed_artifact_needs_allow_failed(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ParityError, match=r"onnx-int8: its export parity check failed.*allow_fail"):
        load(bundle, precision="int8")
    with pytest.raises(ParityError, match="allow_failed"):
        load(bundle / "model.int8.onnx")  # asked for by its path: the manifest beside it speaks
    with load(bundle, precision="int8", allow_failed=True) as model:
        assert model.precision == "int8"
        assert "its export parity check failed" in model.explain()
    np.savez(tmp_path / "in.npz", input=rt_graphs.integer_batch(2))
    refused = edgeport("run", bundle, "--precision", "int8", "--inputs", tmp_path / "in.npz")
    assert refused.returncode == 1 and "--allow-failed" in refused.stderr
    allowed = edgeport(
        "run", bundle, "--precision", "int8", "--inputs", tmp_path / "in.npz", "--allow-failed"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "although its export parity check failed" in allowed.stderr


def test_a_record_holds_for_the_same_settings_spelled_differently(bundle: Path) -> None:
    pytest.importorskip("openvino")
    trusted = rt_bundles.gemm_bundle(bundle.parent / "ok", ("fp32", "int8"))
    save_record(record_naming(trusted, "openvino", "onnx-int8", threads=None), trusted)
    for threads in (None, default_threads()):  # the default, left out or given by number
        with load(trusted, threads=threads, backend_options={"hint": "latency"}) as model:
            assert (model.backend, model.precision) == ("openvino", "int8"), model.explain()
    other = 1 if default_threads() != 1 else 2
    with load(trusted, threads=other) as model:
        assert model.backend == "onnxruntime-cpu"
        assert f"threads {default_threads()}, this load {other}" in model.explain()
    with load(trusted, backend_options={"hint": "throughput"}) as model:
        assert "'PERFORMANCE_HINT': 'THROUGHPUT'" in model.explain()


def test_tune_with_default_threads_then_load_with_the_number(bundle: Path) -> None:
    trusted = rt_bundles.gemm_bundle(bundle.parent / "ok", ("fp32", "int8"))
    quick = TuneSettings(batches=(1,), timing=TimingConfig(warmup_s=0.0, iterations=3))
    record, _ = tune(trusted, quick)
    assert record.threads == default_threads() and record.settings["threads"] == default_threads()
    save_record(record, trusted)
    best = record.batches[0].winner
    with load(trusted, threads=default_threads()) as model:
        assert (model.backend, model.artifact.name) == (best.backend, best.artifact)  # type: ignore[union-attr]
        assert "the fastest was" in model.explain()


def test_a_schema_1_record_still_holds(bundle: Path) -> None:
    trusted = rt_bundles.gemm_bundle(bundle.parent / "ok", ("fp32", "int8"))
    old = replace(record_naming(trusted, "onnxruntime-cpu", "onnx-int8"), settings={})
    save_record(replace(old, schema_version=1), trusted)
    with load(trusted) as model:
        assert model.precision == "int8" and "the fastest was" in model.explain()
