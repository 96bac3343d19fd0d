"""``edgeport tune`` and the measured choice of ``load(backend="auto")``: a record is written,
followed while it holds on this machine, and ignored (saying why) when it does not."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs

from edgeport.runtime import load
from edgeport.runtime.cli import main
from edgeport.runtime.tools.timing import TimingConfig
from edgeport.runtime.tools.tune import TuneSettings, tune
from edgeport.runtime.tuning_records import (
    BatchWinner,
    Timing,
    TuningRecord,
    cache_path,
    effective_settings,
    find_record,
    manifest_digest,
    save_record,
)

QUICK = TuneSettings(batches=(1, 4), threads=1, timing=TimingConfig(warmup_s=0.0, iterations=5))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPORT_CACHE_DIR", str(tmp_path / "cache"))  # records of one test


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return rt_bundles.gemm_bundle(
        tmp_path / "b", ("fp32", "fp16", "int8"), parity={"fp16": rt_bundles.passed(False)}
    )


def test_tune_times_what_auto_may_pick_and_auto_follows_it(bundle: Path) -> None:
    record, left_out = tune(bundle, QUICK)
    measured = {(t.backend, t.artifact) for entry in record.batches for t in entry.timings}
    assert ("onnxruntime-cpu", "onnx-fp32") in measured
    assert all(artifact != "onnx-fp16" for _, artifact in measured)  # its parity failed
    assert any("onnx-fp16" in why and "parity" in why for why in left_out)
    assert [e.batch for e in record.batches] == [1, 4]
    path = save_record(record, bundle)
    assert path == cache_path(manifest_digest(bundle))
    with load(bundle, threads=1) as model:
        best = record.batches[0].winner
        assert (model.backend, model.artifact.name) == (best.backend, best.artifact)  # type: ignore[union-attr]
        assert "at batch 1 the fastest was" in model.explain()


def _record_choosing(bundle: Path, backend: str, artifact: str, precision: str) -> TuningRecord:
    record, _ = tune(bundle, replace(QUICK, batches=(1,)))
    winner = Timing(backend, precision, artifact, 0.001, 0.002)
    return replace(record, batches=(BatchWinner(1, winner, (winner,)),))


def test_auto_follows_the_record_even_against_the_rule(bundle: Path) -> None:
    pytest.importorskip("openvino", reason="the record names an openvino winner")
    record = _record_choosing(bundle, "openvino", "onnx-int8", "int8")
    save_record(record, bundle, in_bundle=True)  # shipped with the bundle
    with load(bundle, threads=1) as model:
        assert (model.backend, model.precision) == ("openvino", "int8")
        batch = rt_graphs.integer_batch(3)
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))
        assert "tuning.json" in model.explain()
    with load(bundle, threads=1, precision="fp32") as asked:  # asking overrides the record
        assert asked.backend == "onnxruntime-cpu"


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda r: replace(r, machine={**r.machine, "cpu": "another CPU"}), "another machine"),
        (
            lambda r: replace(r, threads=3, settings={**r.settings, "threads": 3}),
            "measured with other settings: threads 3, this load 1",
        ),
        (lambda r: replace(r, manifest_sha256="0" * 64), "another version of this bundle"),
        (lambda r: replace(r, versions={"onnxruntime": "0.1"}), "library versions changed"),
    ],
)
def test_a_record_that_does_not_hold_here_is_ignored_and_said_why(
    bundle: Path, edit: object, why: str
) -> None:
    record = _record_choosing(bundle, "onnxruntime-cpu", "onnx-int8", "int8")
    save_record(edit(record), bundle, in_bundle=True)  # type: ignore[operator]
    with load(bundle, threads=1) as model:
        assert model.precision == "fp32"  # the rule
        assert why in model.explain()


def test_a_corrupt_record_is_ignored(bundle: Path) -> None:
    (bundle / "tuning.json").write_text(json.dumps({"batches": "x"}))
    record, why = find_record(bundle, effective_settings(1))
    assert record is None and "is unreadable" in why
    with load(bundle, threads=1) as model:
        assert model.precision == "fp32"


def test_the_tune_command(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["tune", str(bundle), "--batch", "1", "--threads", "1", "--warmup-s", "0"]
    assert main([*args, "--duration-s", "0.05", "--backend", "onnxruntime-cpu", "--in-bundle"]) == 0
    out, err = capsys.readouterr()
    assert "<- auto" in out and f"wrote {bundle / 'tuning.json'}" in err
    assert "onnx-fp16: its export parity check failed" in err
