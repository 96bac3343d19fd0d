"""Compare a candidate's outputs with a reference's, the one table of tolerances, and the one
parity judgement that export's gate and ``edgeport check`` share.

The statistics follow Polygraphy's comparator: element-wise absolute and relative error with
their max, mean and 99th percentile, and an element counts as mismatched only when it fails
BOTH bounds (``|a - b| > atol`` and ``|a - b| > rtol * |ref|``). Each output is judged by its
kind (:func:`output_kind`):

- ``logits`` (a classifier's first output): on top, what matters for a classifier: per-sample
  cosine similarity, top-1 and top-5 agreement, and accuracy against labels (int8 is judged by
  its accuracy drop where there are labels, by top-1 agreement and cosine where there are none);
- ``tensor`` (any other float output: boxes, masks, embeddings): error statistics and cosine;
- ``exact`` (integer and bool outputs: indices, labels, counts): the share of elements that
  differ, which must be zero in fp32.

``TOLERANCES`` is the only place the pass/fail numbers live. It sits in the runtime (numpy only)
so that export's gate and a torch-free device's ``edgeport check`` judge with the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgeport.runtime.errors import ConfigError, InputError
from edgeport.runtime.specs import TensorSpec

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4
REL_FLOOR = 1e-6  # |ref| below this is treated as this when dividing for the relative error


@dataclass(frozen=True)
class Comparison:
    """Statistics of ``candidate`` against ``reference`` logits, shape (N, classes).

    Fractions (agreements, accuracies) are in [0, 1]. ``top1_near_ties`` counts the top-1
    disagreements where the reference itself could not tell the two classes apart: their
    reference logits differ by at most ``tie_atol`` (default ``2 * atol``: the most two
    logits that are each within ``atol`` can swap by). ``nonfinite`` counts NaN/Inf elements in
    the candidate (the error statistics are then NaN, and any tolerance fails).
    """

    count: int
    num_classes: int
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    p99_rel: float
    cosine_min: float
    cosine_mean: float
    top1_agreement: float
    top5_agreement: float
    top1_disagreements: int
    top1_near_ties: int
    accuracy_reference: float | None
    accuracy_candidate: float | None
    mismatched_elements: int
    total_elements: int
    atol: float
    rtol: float
    nonfinite: int
    worst_indices: tuple[int, ...]
    reference_max_abs: float  # the largest |logit| of the reference: the scale fp32 error has

    @property
    def accuracy_drop(self) -> float | None:
        """Reference accuracy minus candidate accuracy (a fraction), None without labels."""
        if self.accuracy_reference is None or self.accuracy_candidate is None:
            return None
        return self.accuracy_reference - self.accuracy_candidate

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain ints/floats, non-finite floats as None, tuples as lists."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, float) and not math.isfinite(value):
                data[key] = None
        data["worst_indices"] = list(self.worst_indices)
        data["accuracy_drop"] = self.accuracy_drop
        return data

    def summary(self) -> str:
        """One line for logs and reports."""
        text = (
            f"n={self.count} max_abs={self.max_abs:.3g} max_rel={self.max_rel:.3g} "
            f"cos_min={self.cosine_min:.6f} top1={self.top1_agreement:.2%}"
        )
        if self.accuracy_reference is not None and self.accuracy_candidate is not None:
            text += f" acc {self.accuracy_reference:.2%} -> {self.accuracy_candidate:.2%}"
        return text


def _check_arrays(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    for name, array in (("reference", reference), ("candidate", candidate)):
        if not isinstance(array, np.ndarray):
            raise InputError(f"{name} logits must be a numpy array, got {type(array).__name__}")
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"{name} logits must be floating point, got dtype {array.dtype}")
    if reference.shape != candidate.shape:
        raise InputError(
            f"reference logits have shape {reference.shape} but candidate logits have shape "
            f"{candidate.shape}; they must match before values can be compared"
        )
    if reference.ndim != 2 or reference.shape[0] < 1 or reference.shape[1] < 1:
        raise InputError(
            f"logits must have shape (N, classes) with N, classes >= 1, got {reference.shape}"
        )
    if not np.isfinite(reference).all():
        raise InputError("reference logits contain NaN or Inf; the reference must be finite")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (reference.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(
                f"labels must be integers of shape ({reference.shape[0]},), got "
                f"{labels.dtype} {labels.shape}"
            )
        if labels.min() < 0 or labels.max() >= reference.shape[1]:
            raise InputError(
                f"labels must lie in [0, {reference.shape[1]}), got "
                f"[{labels.min()}, {labels.max()}]"
            )
    return reference.astype(np.float64), candidate.astype(np.float64), labels


def _topk_sets_equal(reference: np.ndarray, candidate: np.ndarray, k: int) -> np.ndarray:
    ref_top = np.sort(np.argsort(-reference, axis=1, kind="stable")[:, :k], axis=1)
    cand_top = np.sort(np.argsort(-candidate, axis=1, kind="stable")[:, :k], axis=1)
    return (ref_top == cand_top).all(axis=1)


def _row_cosines(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample's logits (1 where both rows are all zeros)."""
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    dots = (ref * cand).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    both_zero = (np.abs(ref).sum(axis=1) == 0) & (np.abs(cand).sum(axis=1) == 0)
    return np.where(both_zero, 1.0, cosine)


def _near_ties(
    ref: np.ndarray, ref_top1: np.ndarray, cand_top1: np.ndarray, tie_atol: float
) -> np.ndarray:
    """Top-1 disagreements where the reference's own two logits are within ``tie_atol``."""
    rows = np.arange(len(ref))
    safe_cand_top1 = np.where(cand_top1 >= 0, cand_top1, ref_top1)
    margin = ref[rows, ref_top1] - ref[rows, safe_cand_top1]
    return (ref_top1 != cand_top1) & (cand_top1 >= 0) & (margin <= tie_atol)


def compare_logits(
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    tie_atol: float | None = None,
    worst_k: int = 5,
) -> Comparison:
    """Compare logits of shape (N, classes); shape and dtype are checked before any value.

    ``top5_agreement`` is the fraction of samples whose top-k index SETS match
    (k = min(5, classes)). ``worst_indices`` lists up to ``worst_k`` samples, top-1
    disagreements first, then by largest absolute error.
    """
    ref, cand, labels = _check_arrays(reference, candidate, labels)
    count, classes = ref.shape
    tie_atol = 2.0 * atol if tie_atol is None else tie_atol
    finite = np.isfinite(cand)
    nonfinite = int(finite.size - finite.sum())

    abs_err = np.abs(cand - ref)
    rel_err = abs_err / np.maximum(np.abs(ref), REL_FLOOR)
    outside = (abs_err > atol) & (abs_err > rtol * np.abs(ref))
    mismatched = int((outside | ~finite).sum())  # NaN compares False: count it here

    cosine = _row_cosines(ref, cand)
    ref_top1 = ref.argmax(axis=1)
    cand_top1 = np.where(finite.all(axis=1), np.nan_to_num(cand).argmax(axis=1), -1)
    agree = ref_top1 == cand_top1
    near_tie = _near_ties(ref, ref_top1, cand_top1, tie_atol)

    k = min(5, classes)
    top5 = _topk_sets_equal(ref, np.nan_to_num(cand, nan=-np.inf), k)

    acc_ref = acc_cand = None
    if labels is not None:
        acc_ref = float((ref_top1 == labels).mean())
        acc_cand = float((cand_top1 == labels).mean())

    sample_err = np.nan_to_num(abs_err, nan=np.inf).max(axis=1)
    order = np.lexsort((-sample_err, agree))  # disagreements (False) first, then largest error
    worst = tuple(int(i) for i in order[: max(worst_k, 0)])

    return Comparison(
        count=int(count),
        num_classes=int(classes),
        max_abs=float(abs_err.max()),
        mean_abs=float(abs_err.mean()),
        p99_abs=float(np.percentile(abs_err, 99)),
        max_rel=float(rel_err.max()),
        mean_rel=float(rel_err.mean()),
        p99_rel=float(np.percentile(rel_err, 99)),
        cosine_min=float(cosine.min()),
        cosine_mean=float(cosine.mean()),
        top1_agreement=float(agree.mean()),
        top5_agreement=float(top5.mean()),
        top1_disagreements=int((~agree).sum()),
        top1_near_ties=int(near_tie.sum()),
        accuracy_reference=acc_ref,
        accuracy_candidate=acc_cand,
        mismatched_elements=mismatched,
        total_elements=int(abs_err.size),
        atol=float(atol),
        rtol=float(rtol),
        nonfinite=nonfinite,
        worst_indices=worst,
        reference_max_abs=float(np.abs(ref).max()) if ref.size else 0.0,
    )


@dataclass(frozen=True)
class Tolerance:
    """What an artifact of one precision must meet against the fp32 PyTorch reference.

    A bound set to None is not checked. ``atol``/``rtol`` define mismatched elements
    (Polygraphy semantics) and the top-1 near-tie threshold; ``max_mismatch_fraction`` bounds
    their share. ``min_top1_agreement`` counts near ties (the reference's own two top logits
    within ``2 * atol``) as agreements when ``ties_agree``: a class flip there is numerical noise.
    """

    precision: str
    atol: float
    rtol: float
    kind: str = "logits"
    max_abs: float | None = None
    max_abs_scales: bool = False  # logits: max_abs times the largest |reference logit| (>= 1)
    max_mismatch_fraction: float | None = None
    min_top1_agreement: float | None = None
    ties_agree: bool = False
    max_accuracy_drop: float | None = None  # a fraction: 0.01 is one percentage point
    min_cosine: float | None = None
    description: str = ""

    def compare(
        self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None
    ) -> Comparison | TensorComparison:
        """The comparison of this tolerance's kind, with its atol/rtol."""
        if self.kind == "logits":
            return compare_logits(reference, candidate, labels, atol=self.atol, rtol=self.rtol)
        return compare_tensors(reference, candidate, atol=self.atol, rtol=self.rtol)

    def failures(self, comparison: Comparison | TensorComparison) -> list[str]:
        """Why ``comparison`` fails this tolerance, one readable sentence each; empty = pass."""
        out: list[str] = []
        c = comparison
        what = "logits" if isinstance(c, Comparison) else "elements"
        if c.nonfinite:
            out.append(f"{c.nonfinite} of {c.total_elements} {what} are NaN or Inf")
        if self.max_abs is not None:
            bound = self.max_abs
            if self.max_abs_scales and isinstance(c, Comparison):
                bound *= max(1.0, c.reference_max_abs)
            if not c.max_abs <= bound:
                out.append(f"max abs error {c.max_abs:.3g} > {bound:.3g}")
        if self.max_mismatch_fraction is not None and c.total_elements:
            fraction = c.mismatched_elements / c.total_elements
            if fraction > self.max_mismatch_fraction:
                how = (
                    "differ from the reference"
                    if self.kind == "exact"
                    else f"are outside atol={self.atol:g} and rtol={self.rtol:g}"
                )
                out.append(
                    f"{c.mismatched_elements} of {c.total_elements} {what} ({fraction:.2%}) "
                    f"{how}; at most {self.max_mismatch_fraction:.2%} allowed"
                )
        if isinstance(c, Comparison):
            out += self._classifier_failures(c)
        if self.min_cosine is not None and not c.cosine_min >= self.min_cosine:
            out.append(f"min cosine similarity {c.cosine_min:.6f} < {self.min_cosine:.6f}")
        return out

    def _classifier_failures(self, c: Comparison) -> list[str]:
        out: list[str] = []
        if self.min_top1_agreement is not None:
            disagree = c.top1_disagreements - (c.top1_near_ties if self.ties_agree else 0)
            agreement = 1.0 - disagree / c.count
            if agreement + 1e-12 < self.min_top1_agreement:
                ties = ""
                if self.ties_agree and c.top1_near_ties:
                    ties = f"; {c.top1_near_ties} near ties not counted"
                out.append(
                    f"top-1 agreement {agreement:.2%} < {self.min_top1_agreement:.2%} "
                    f"({disagree} of {c.count} samples changed class{ties})"
                )
        if self.max_accuracy_drop is not None:
            drop = c.accuracy_drop
            if drop is None:
                if self.min_top1_agreement is None:  # else agreement with the reference judges
                    out.append("accuracy drop cannot be checked: no labels were given")
            elif drop > self.max_accuracy_drop + 1e-12:
                out.append(
                    f"accuracy dropped {drop * 100:.2f} percentage points "
                    f"({c.accuracy_reference:.2%} -> {c.accuracy_candidate:.2%}); at most "
                    f"{self.max_accuracy_drop * 100:.2f} allowed"
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TOLERANCES: dict[tuple[str, str], Tolerance] = {
    (tolerance.precision, tolerance.kind): tolerance
    for tolerance in (
        Tolerance(
            precision="fp32",
            atol=1e-4,
            rtol=1e-4,
            # fp32 kernels that sum in another order differ by a share of the logits' scale:
            # a trained EfficientNet-B0 (logits up to 18) differed from PyTorch on ONNX Runtime
            # by 7.5e-4 (4e-5 of its largest logit), a digits CNN (logits near 1) by 6e-6
            max_abs=1e-4,
            max_abs_scales=True,
            min_top1_agreement=1.0,
            ties_agree=True,
            description="max abs logit error <= 1e-4 x the largest |logit| (at least 1e-4) and "
            "100% top-1 agreement (near ties excepted)",
        ),
        Tolerance(
            precision="fp16",
            atol=1e-2,
            rtol=1e-2,
            min_top1_agreement=0.995,
            description="top-1 agreement >= 99.5%",
        ),
        Tolerance(
            precision="int8",
            atol=1e-1,
            rtol=1e-1,
            max_accuracy_drop=0.01,
            description="accuracy drop <= 1 percentage point",
        ),
        # bf16 keeps 8 significant bits (fp16 11): one rounding is off by up to 2^-8 = 0.4%
        # relative, 8x fp16's, so its bounds are fp16's scaled by 8.
        Tolerance(
            precision="bf16",
            atol=8e-2,
            rtol=8e-2,
            max_mismatch_fraction=0.01,
            min_top1_agreement=0.99,
            max_accuracy_drop=0.005,
            min_cosine=0.999,
            description="top-1 agreement >= 99%, accuracy drop <= 0.5 point, cosine >= 0.999, "
            "logits off by more than 8e-2 and 8% at most 1%",
        ),
        # atol 2e-3, not 1e-4: fp32 kernels that sum in another order differ by a share of the
        # output's scale. Measured on ssdlite320 (BN-recalibrated random weights) ONNX Runtime
        # CPU vs PyTorch: cls_logits (rms 2.4, |max| 27) max abs error 8.2e-4 on 8 real
        # 320x320 images, 3.0e-3 on 8 random-pixel images (rms 9.7), where 0.65% of elements
        # exceed 1e-4 / 0.1% but 7 of 2.35M exceed 2e-3; bbox_regression 2.7e-4 / 1.0e-3.
        # Cosine >= 0.99999 still bounds the error's RMS at 0.45% of the signal's.
        Tolerance(
            precision="fp32",
            kind="tensor",
            atol=2e-3,
            rtol=1e-3,
            max_mismatch_fraction=1e-4,
            min_cosine=0.99999,
            description="elements off by more than 2e-3 and 0.1% at most 0.01%; cosine >= 0.99999",
        ),
        # atol 5e-2, not 1e-2: fp16 rounding scales with the activations. Measured on
        # fcn_resnet50 (seeded weights, 4 images of 520x520; `out` rms 17, |max| 53): max abs
        # error 0.059, median 0.010, cosine 1.000000, yet 4.3% of elements exceed 1e-2 / 1%
        # (those near zero); 2e-6 of them exceed 5e-2.
        Tolerance(
            precision="fp16",
            kind="tensor",
            atol=5e-2,
            rtol=1e-2,
            max_mismatch_fraction=0.01,
            min_cosine=0.999,
            description="elements off by more than 5e-2 and 1% at most 1%; cosine >= 0.999",
        ),
        Tolerance(
            precision="bf16",
            kind="tensor",
            atol=4e-1,
            rtol=8e-2,
            max_mismatch_fraction=0.01,
            min_cosine=0.995,
            description="elements off by more than 4e-1 and 8% at most 1%; cosine >= 0.995",
        ),
        Tolerance(
            precision="int8",
            kind="tensor",
            atol=1e-1,
            rtol=1e-1,
            min_cosine=0.98,
            description="cosine similarity >= 0.98",
        ),
        Tolerance(
            precision="fp32",
            kind="exact",
            atol=0.0,
            rtol=0.0,
            max_mismatch_fraction=0.0,
            description="every element equal",
        ),
        Tolerance(
            precision="fp16",
            kind="exact",
            atol=0.0,
            rtol=0.0,
            max_mismatch_fraction=0.005,
            description="at most 0.5% of elements differ",
        ),
        Tolerance(
            precision="bf16",
            kind="exact",
            atol=0.0,
            rtol=0.0,
            max_mismatch_fraction=0.01,
            description="at most 1% of elements differ",
        ),
        Tolerance(
            precision="int8",
            kind="exact",
            atol=0.0,
            rtol=0.0,
            max_mismatch_fraction=0.01,
            description="at most 1% of elements differ",
        ),
    )
}
# Logits compared without labels: an accuracy drop cannot be measured, so a precision judged by
# it is judged by agreement with the fp32 reference instead. The cosine bound is per sample (the
# worst one): measured on MobileNetV3-Small trained on the digits (617 samples), OpenVINO int8
# at 99.5% top-1 agreement had a worst-sample cosine of 0.968; a wrong file is far below (a
# rounded-away activation: 9% agreement, cosine -0.59).
UNLABELLED: dict[str, Tolerance] = {
    "int8": Tolerance(
        precision="int8",
        atol=1e-1,
        rtol=1e-1,
        min_top1_agreement=0.99,
        ties_agree=True,
        min_cosine=0.95,
        description=(
            "no labels: top-1 agreement >= 99% (near ties excepted) and every sample's cosine "
            ">= 0.95"
        ),
    ),
}
OUTPUT_KINDS = ("logits", "tensor", "exact")


def tolerance_for(precision: str, kind: str = "logits", *, labelled: bool = True) -> Tolerance:
    """The tolerance of ``precision`` for an output of ``kind`` (logits without labels: the
    agreement rule of :data:`UNLABELLED` where the precision has one); an unknown one raises
    ``ConfigError`` listing the known."""
    if kind == "logits" and not labelled and precision in UNLABELLED:
        return UNLABELLED[precision]
    try:
        return TOLERANCES[(precision, kind)]
    except KeyError:
        raise ConfigError(
            f"no tolerance for precision {precision!r} and output kind {kind!r}; known: "
            f"{sorted(TOLERANCES)}"
        ) from None


def output_kind(spec: TensorSpec, *, classifier: bool, index: int) -> str:
    """How an output is judged: a classifier's first (batch, classes) float output as logits,
    other float outputs as tensors, integer and bool outputs exactly."""
    if not spec.is_float:
        return "exact"
    if classifier and index == 0 and spec.rank == 2:
        return "logits"
    return "tensor"


@dataclass(frozen=True)
class TensorComparison:
    """Statistics of one output of any shape against its reference (floats compared as float64,
    integers and bools element by element: their abs error is the difference of values)."""

    shape: tuple[int, ...]
    total_elements: int
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    p99_rel: float
    cosine_min: float  # of the flattened tensors; the name matches ``Comparison``'s
    mismatched_elements: int
    nonfinite: int
    atol: float
    rtol: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, float) and not math.isfinite(value):
                data[key] = None
        data["shape"] = list(self.shape)
        return data

    def summary(self) -> str:
        share = self.mismatched_elements / max(self.total_elements, 1)
        return (
            f"shape={list(self.shape)} max_abs={self.max_abs:.3g} max_rel={self.max_rel:.3g} "
            f"cos={self.cosine_min:.6f} mismatched={share:.2%}"
        )


def compare_tensors(
    reference: np.ndarray, candidate: np.ndarray, *, atol: float = 0.0, rtol: float = 0.0
) -> TensorComparison:
    """Compare two arrays of any (equal) shape; shape and dtype kind are checked first."""
    for name, array in (("reference", reference), ("candidate", candidate)):
        if not isinstance(array, np.ndarray):
            raise InputError(f"{name} must be a numpy array, got {type(array).__name__}")
    if reference.shape != candidate.shape:
        raise InputError(
            f"reference has shape {reference.shape} but candidate has shape {candidate.shape}; "
            "they must match before values can be compared"
        )
    floats = np.issubdtype(reference.dtype, np.floating)
    if floats != np.issubdtype(candidate.dtype, np.floating):
        raise InputError(
            f"reference is {reference.dtype} but candidate is {candidate.dtype}: one is floating "
            "point and the other is not"
        )
    ref = reference.astype(np.float64).reshape(-1)
    cand = candidate.astype(np.float64).reshape(-1)
    if ref.size == 0:
        return TensorComparison(reference.shape, 0, 0, 0, 0, 0, 0, 0, 1.0, 0, 0, atol, rtol)
    if not np.isfinite(ref).all():
        raise InputError("the reference contains NaN or Inf; the reference must be finite")
    finite = np.isfinite(cand)
    abs_err = np.abs(cand - ref)
    rel_err = abs_err / np.maximum(np.abs(ref), REL_FLOOR)
    outside = (abs_err > atol) & (abs_err > rtol * np.abs(ref)) if floats else ref != cand
    norms = float(np.linalg.norm(ref) * np.linalg.norm(np.nan_to_num(cand)))
    dot = float(ref @ np.nan_to_num(cand))
    same = not ref.any() and not np.nan_to_num(cand).any()
    return TensorComparison(
        shape=tuple(int(d) for d in reference.shape),
        total_elements=int(ref.size),
        max_abs=float(abs_err.max()),
        mean_abs=float(abs_err.mean()),
        p99_abs=float(np.percentile(abs_err, 99)),
        max_rel=float(rel_err.max()),
        mean_rel=float(rel_err.mean()),
        p99_rel=float(np.percentile(rel_err, 99)),
        cosine_min=1.0 if same else (dot / norms if norms > 0 else 0.0),
        mismatched_elements=int((outside | ~finite).sum()),
        nonfinite=int(finite.size - finite.sum()),
        atol=float(atol),
        rtol=float(rtol),
    )


@dataclass(frozen=True)
class OutputCheck:
    """One output's comparison with its tolerance and why it fails (empty: it passes)."""

    name: str
    kind: str
    tolerance: Tolerance
    comparison: Comparison | TensorComparison
    failures: tuple[str, ...]
    worst: tuple[dict[str, Any], ...] = ()  # logits: the worst samples (see worst_samples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "tolerance": self.tolerance.to_dict(),
            "comparison": self.comparison.to_dict(),
            "failures": list(self.failures),
            "worst": list(self.worst),
        }


def worst_samples(
    comparison: Comparison,
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] = (),
) -> tuple[dict[str, Any], ...]:
    """The samples of ``comparison.worst_indices`` as JSON-ready records: index, the reference's
    and the candidate's top-1 class (by name when ``class_names`` has it), whether they agree,
    the sample's max abs error, and its label when there are labels."""

    def name(index: int) -> str | int:
        return class_names[index] if index < len(class_names) else index

    out = []
    for i in comparison.worst_indices:
        ref_row, cand_row = reference[i].astype(np.float64), candidate[i].astype(np.float64)
        r, c = int(ref_row.argmax()), int(np.nan_to_num(cand_row, nan=-np.inf).argmax())
        entry: dict[str, Any] = {
            "index": int(i),
            "reference_class": name(r),
            "candidate_class": name(c),
            "agree": r == c,
            "max_abs": float(np.nan_to_num(np.abs(cand_row - ref_row), nan=np.inf).max()),
        }
        if labels is not None:
            entry["label"] = name(int(labels[i]))
        out.append(entry)
    return tuple(out)


STATUSES = ("passed", "failed", "error", "skipped", "not_run")


@dataclass
class Verdict:
    """The parity verdict on one artifact run by one backend: every output judged, or why it
    could not be. One record for export's gate (stored as ``artifact.parity`` in the manifest)
    and for ``edgeport check``."""

    artifact: str
    precision: str
    backend: str
    status: str  # one of STATUSES
    outputs: list[OutputCheck] = field(default_factory=list)
    reason: str | None = None  # why not run, or what went wrong
    count: int = 0  # samples compared
    reference: str | None = None  # what it was compared with
    seconds: float = 0.0

    @property
    def passed(self) -> bool | None:
        """True/False when compared, None when it could not run (skipped, not run, error)."""
        if self.status in ("passed", "failed"):
            return self.status == "passed"
        return None

    @property
    def failures(self) -> list[str]:
        """Every output's failures, each prefixed with the output's name when there are several."""
        several = len(self.outputs) > 1
        return [f"{o.name}: {f}" if several else f for o in self.outputs for f in o.failures]

    def summary(self) -> str:
        return "; ".join(
            f"{o.name} {o.comparison.summary()}"
            if len(self.outputs) > 1
            else o.comparison.summary()
            for o in self.outputs
        )

    def message(self) -> str:
        """``onnx-int8 on onnxruntime-cpu fails ...: why [numbers]`` for errors and logs."""
        label = f"{self.artifact} on {self.backend}"
        if self.status in ("skipped", "not_run", "error"):
            return f"{label}: {self.status.replace('_', ' ')} ({self.reason})"
        if self.status == "failed":
            kinds = "; ".join(
                f"{o.name}: {o.tolerance.description}" for o in self.outputs if o.failures
            )
            return (
                f"{label} fails its {self.precision} tolerance ({kinds}): "
                + "; ".join(self.failures)
                + f" [{self.summary()}]"
            )
        return f"{label} passed: {self.summary()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "precision": self.precision,
            "backend": self.backend,
            "status": self.status,
            "passed": self.passed,
            "reason": self.reason,
            "failures": self.failures,
            "count": self.count,
            "reference": self.reference,
            "outputs": [o.to_dict() for o in self.outputs],
            "seconds": round(self.seconds, 3),
        }


def judge(
    reference: dict[str, np.ndarray],
    candidate: dict[str, np.ndarray],
    *,
    precision: str,
    kinds: dict[str, str],
    labels: np.ndarray | None = None,
    class_names: Sequence[str] = (),
) -> list[OutputCheck]:
    """Judge every output of ``candidate`` against ``reference`` with the tolerance of its
    precision and kind (``kinds`` by output name; logits by agreement when there are no
    ``labels``). Names and shapes are checked first. Logits outputs also list their worst
    samples, classes named from ``class_names``."""
    if list(reference) != list(candidate):
        raise InputError(
            f"the reference has outputs {list(reference)}, the candidate {list(candidate)}"
        )
    checks = []
    for name, ref in reference.items():
        kind = kinds.get(name, "tensor")
        tolerance = tolerance_for(precision, kind, labelled=labels is not None)
        cand = candidate[name]
        if kind == "logits":
            cand = cand.astype(np.float32, copy=False)
        comparison = tolerance.compare(ref, cand, labels if kind == "logits" else None)
        worst: tuple[dict[str, Any], ...] = ()
        if isinstance(comparison, Comparison):
            worst = worst_samples(comparison, ref, cand, labels, class_names)
        failures = tuple(tolerance.failures(comparison))
        checks.append(OutputCheck(name, kind, tolerance, comparison, failures, worst))
    return checks
