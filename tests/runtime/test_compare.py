"""compare_logits and the tolerance table on inputs whose statistics are known exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeport.runtime.compare import (
    TOLERANCES,
    UNLABELLED,
    Comparison,
    Tolerance,
    compare_logits,
    judge,
    tolerance_for,
)
from edgeport.runtime.errors import ConfigError, InputError


def logits(rows: list[list[float]] | np.ndarray) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def test_identical_logits_are_a_perfect_match() -> None:
    ref = logits([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    c = compare_logits(ref, ref.copy(), np.array([2, 0]))
    assert (c.count, c.num_classes) == (2, 3)
    assert c.max_abs == 0.0 and c.mean_abs == 0.0 and c.p99_abs == 0.0
    assert c.max_rel == 0.0
    assert c.cosine_min == pytest.approx(1.0) and c.cosine_mean == pytest.approx(1.0)
    assert c.top1_agreement == 1.0 and c.top5_agreement == 1.0
    assert c.top1_disagreements == 0 and c.mismatched_elements == 0
    assert c.accuracy_reference == 1.0 and c.accuracy_candidate == 1.0
    assert c.accuracy_drop == 0.0
    for tol in TOLERANCES.values():
        assert tol.failures(c) == []


def test_known_errors_give_exact_statistics() -> None:
    ref = logits([[1.0, 2.0, 4.0], [2.0, 0.5, 1.0]])
    cand = logits([[1.5, 2.0, 4.0], [2.0, 0.5, 0.0]])
    c = compare_logits(ref, cand, atol=0.6, rtol=0.5)
    # abs errors: 0.5, 0, 0, 0, 0, 1.0 ; rel errors: 0.5, 0, 0, 0, 0, 1.0
    assert c.max_abs == pytest.approx(1.0)
    assert c.mean_abs == pytest.approx(1.5 / 6)
    assert c.max_rel == pytest.approx(1.0)
    assert c.mean_rel == pytest.approx(1.5 / 6)
    # Polygraphy semantics: 0.5 is within atol=0.6; 1.0 exceeds both atol and 0.5*|1.0|
    assert c.mismatched_elements == 1 and c.total_elements == 6
    assert c.top1_agreement == 1.0
    # cosine of [1,2,4] and [1.5,2,4]: 21.5 / (sqrt(21) * sqrt(22.25))
    expected = 21.5 / (math.sqrt(21.0) * math.sqrt(22.25))
    assert c.cosine_min == pytest.approx(min(expected, 4.25 / (math.sqrt(5.25) * math.sqrt(4.25))))
    assert c.worst_indices == (1, 0)  # sample 1 has the largest error


def test_mismatch_needs_both_bounds_exceeded() -> None:
    ref = logits([[100.0, 0.001]])
    cand = logits([[100.05, 0.002]])
    # 0.05 > atol but < rtol*100 -> fine; 0.001 < atol -> fine
    assert compare_logits(ref, cand, atol=0.01, rtol=0.01).mismatched_elements == 0
    assert compare_logits(ref, cand, atol=0.01, rtol=1e-4).mismatched_elements == 1
    assert compare_logits(ref, cand, atol=1e-4, rtol=1e-4).mismatched_elements == 2


def test_top1_disagreements_accuracy_and_worst_first() -> None:
    ref = logits([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    cand = logits([[0.0, 1.0], [0.0, 1.0], [0.0, 1.1], [2.0, 0.0]])
    labels = np.array([1, 0, 1, 1])
    c = compare_logits(ref, cand, labels)
    assert c.top1_agreement == pytest.approx(0.75)
    assert c.top1_disagreements == 1 and c.top1_near_ties == 0
    assert c.accuracy_reference == pytest.approx(0.75)
    assert c.accuracy_candidate == pytest.approx(0.5)
    assert c.accuracy_drop == pytest.approx(0.25)
    assert c.worst_indices[0] == 1  # the disagreement comes first
    assert c.worst_indices[1] == 2  # then the largest error
    assert c.cosine_min == pytest.approx(0.0)  # [1,0] vs [0,1] are orthogonal


def test_top5_compares_index_sets() -> None:
    ref = logits([[6, 5, 4, 3, 2, 1, 0], [6, 5, 4, 3, 2, 1, 0]])
    cand = logits([[6, 4, 5, 2, 3, 1, 0], [6, 5, 4, 3, 0, 1, 2]])  # same set / 2 swapped in
    c = compare_logits(ref, cand)
    assert c.top5_agreement == pytest.approx(0.5)
    assert c.top1_agreement == 1.0


def test_near_tie_is_counted_and_excused_only_by_fp32() -> None:
    ref = logits([[1.0, 1.00005, 0.0]] + [[5.0, 0.0, 0.0]] * 9)
    cand = ref.copy()
    cand[0] = [1.00003, 1.00002, 0.0]  # flips, with each error well within 1e-4
    c = TOLERANCES[("fp32", "logits")].compare(ref, cand)
    assert c.top1_disagreements == 1 and c.top1_near_ties == 1
    assert c.max_abs < 1e-4
    assert TOLERANCES[("fp32", "logits")].failures(c) == []
    strict = Tolerance(precision="fp32", atol=1e-4, rtol=1e-4, min_top1_agreement=1.0)
    (message,) = strict.failures(c)
    assert message == "top-1 agreement 90.00% < 100.00% (1 of 10 samples changed class)"


def test_fp32_tolerance_failure_messages_carry_the_numbers() -> None:
    ref = logits([[0.0, 1.0, 2.0]] * 4)
    cand = ref.copy()
    cand[0, 2] += 3e-4
    cand[1] = [0.0, 3.0, 2.0]
    c = TOLERANCES[("fp32", "logits")].compare(ref, cand)
    failures = TOLERANCES[("fp32", "logits")].failures(c)
    assert failures == [
        "max abs error 2 > 0.0002",  # 1e-4 x the largest logit, 2
        "top-1 agreement 75.00% < 100.00% (1 of 4 samples changed class)",
    ]


def test_fp32_max_abs_error_scales_with_the_largest_logit() -> None:
    fp32 = TOLERANCES[("fp32", "logits")]
    small = logits([[0.5, 0.1, 0.0]] * 4)
    large = small * 40.0  # logits up to 20: bound 2e-3
    for ref, error, passes in ((small, 5e-4, False), (large, 5e-4, True), (large, 3e-3, False)):
        cand = ref.copy()
        cand[0, 1] += error
        assert (fp32.failures(fp32.compare(ref, cand)) == []) is passes, (ref.max(), error)


def test_fp16_tolerance_is_top1_agreement_at_99_5_percent() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(400, 10)).astype(np.float32)
    ref[np.arange(400), rng.integers(0, 10, 400)] += 10.0  # clear winners
    cand = ref + np.float32(0.05)  # a large but uniform error keeps every class
    assert (
        TOLERANCES[("fp16", "logits")].failures(TOLERANCES[("fp16", "logits")].compare(ref, cand))
        == []
    )
    flipped = cand.copy()
    for i in range(3):  # 3 of 400 = 0.75% flips > 0.5%
        flipped[i] = -flipped[i]
    (message,) = TOLERANCES[("fp16", "logits")].failures(
        TOLERANCES[("fp16", "logits")].compare(ref, flipped)
    )
    assert message.startswith("top-1 agreement 99.25% < 99.50% (3 of 400")
    one_flip = cand.copy()
    one_flip[0] = -one_flip[0]  # 1 of 400 = 0.25% is allowed
    assert (
        TOLERANCES[("fp16", "logits")].failures(
            TOLERANCES[("fp16", "logits")].compare(ref, one_flip)
        )
        == []
    )


def test_int8_tolerance_is_accuracy_drop_of_one_point() -> None:
    ref = np.tile(logits([[1.0, 0.0]]), (200, 1))
    labels = np.zeros(200, dtype=np.int64)
    cand = ref.copy()
    cand[:2] = [0.0, 1.0]  # 2 of 200 wrong = 1.00 points: allowed
    int8 = TOLERANCES[("int8", "logits")]
    assert int8.failures(int8.compare(ref, cand, labels)) == []
    cand[2] = [0.0, 1.0]  # 3 of 200 = 1.5 points
    (message,) = int8.failures(int8.compare(ref, cand, labels))
    assert message == (
        "accuracy dropped 1.50 percentage points (100.00% -> 98.50%); at most 1.00 allowed"
    )
    (message,) = int8.failures(int8.compare(ref, cand))
    assert message == "accuracy drop cannot be checked: no labels were given"


def test_int8_logits_without_labels_are_judged_by_agreement_and_cosine() -> None:
    """No labels, no accuracy drop to measure: int8 must agree with fp32 instead (top-1 on 99%
    of samples, near ties excepted, and every sample's cosine >= 0.98)."""
    rng = np.random.default_rng(0)
    ref = logits(rng.normal(0, 3, (200, 10)))
    cand = ref + logits(rng.normal(0, 0.01, ref.shape))
    labelled = judge(
        {"y": ref}, {"y": cand}, precision="int8", kinds={"y": "logits"}, labels=ref.argmax(1)
    )
    unlabelled = judge({"y": ref}, {"y": cand}, precision="int8", kinds={"y": "logits"})
    assert labelled[0].tolerance is TOLERANCES[("int8", "logits")]
    assert unlabelled[0].tolerance is UNLABELLED["int8"] is tolerance_for("int8", labelled=False)
    assert labelled[0].failures == () and unlabelled[0].failures == ()
    flipped = cand.copy()
    for row in range(3):  # 3 of 200 samples change class by a clear margin: 98.5% agreement
        top = int(ref[row].argmax())
        flipped[row, (top + 1) % 10] = ref[row, top] + 5.0
    (check,) = judge({"y": ref}, {"y": flipped}, precision="int8", kinds={"y": "logits"})
    assert check.failures[0].startswith("top-1 agreement 98.50% < 99.00% (3 of 200 samples")
    assert any(f.startswith("min cosine similarity") for f in check.failures)
    # fp16 was judged by agreement already: the same rule with or without labels
    assert tolerance_for("fp16", labelled=False) is TOLERANCES[("fp16", "logits")]


def test_nonfinite_candidate_fails_every_tolerance_and_serialises() -> None:
    ref = logits([[1.0, 0.0], [0.0, 1.0]])
    cand = logits([[np.nan, 0.0], [0.0, np.inf]])
    c = compare_logits(ref, cand, np.array([0, 1]))
    assert c.nonfinite == 2 and c.mismatched_elements == 2
    assert c.top1_agreement == 0.0
    for tol in TOLERANCES.values():
        assert "2 of 4 logits are NaN or Inf" in tol.failures(c)
    data = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert data["max_abs"] is None and data["nonfinite"] == 2


def test_shape_and_dtype_are_checked_before_values() -> None:
    ref = logits([[1.0, 0.0]])
    shapes = r"shape \(1, 2\) but candidate logits have shape \(1, 3\)"
    with pytest.raises(InputError, match=shapes):
        compare_logits(ref, logits([[1.0, 0.0, 0.0]]))
    with pytest.raises(InputError, match="floating point, got dtype int64"):
        compare_logits(ref, np.array([[1, 0]]))
    with pytest.raises(InputError, match=r"shape \(N, classes\)"):
        compare_logits(np.zeros(3, np.float32), np.zeros(3, np.float32))
    with pytest.raises(InputError, match="reference logits contain NaN"):
        compare_logits(logits([[np.nan, 0.0]]), ref)
    with pytest.raises(InputError, match=r"labels must be integers of shape \(1,\)"):
        compare_logits(ref, ref, np.array([0, 1]))
    with pytest.raises(InputError, match=r"labels must lie in \[0, 2\)"):
        compare_logits(ref, ref, np.array([2]))
    with pytest.raises(InputError, match="must be a numpy array, got list"):
        compare_logits([[1.0]], ref)  # type: ignore[arg-type]


def test_to_dict_is_json_and_round_trips_the_fields() -> None:
    ref = logits([[1.0, 2.0], [2.0, 1.0]])
    c = compare_logits(ref, ref + 1e-3, np.array([1, 0]))
    data = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert set(data) == {*Comparison.__dataclass_fields__, "accuracy_drop"}
    assert data["worst_indices"] == [0, 1] or data["worst_indices"] == [1, 0]
    assert data["max_abs"] == pytest.approx(1e-3, rel=1e-3)
    assert data["accuracy_reference"] == 1.0


def test_tolerance_table_holds_the_stated_numbers() -> None:
    assert set(TOLERANCES) == {
        (p, k) for p in ("fp32", "fp16", "int8", "bf16") for k in ("logits", "tensor", "exact")
    }
    assert (
        TOLERANCES[("fp32", "logits")].max_abs == 1e-4
        and TOLERANCES[("fp32", "logits")].min_top1_agreement == 1.0
    )
    assert TOLERANCES[("fp16", "logits")].min_top1_agreement == 0.995
    assert TOLERANCES[("int8", "logits")].max_accuracy_drop == 0.01
    assert tolerance_for("fp16") is TOLERANCES[("fp16", "logits")]
    with pytest.raises(ConfigError, match=r"no tolerance for precision 'fp8' and output kind"):
        tolerance_for("fp8")
    as_json = json.loads(json.dumps(TOLERANCES[("int8", "logits")].to_dict()))
    assert as_json["max_accuracy_drop"] == 0.01
