"""Compare a candidate's logits with a reference's, and the one table of tolerances.

The statistics follow Polygraphy's comparator: element-wise absolute and relative error with
their max, mean and 99th percentile, and an element counts as mismatched only when it fails
BOTH bounds (``|a - b| > atol`` and ``|a - b| > rtol * |ref|``). On top come what matters for a
classifier: per-sample cosine similarity, top-1 and top-5 agreement, and accuracy against labels.

``TOLERANCES`` is the only place the pass/fail numbers live. It sits in the runtime (numpy only)
so that export's gate and a torch-free device's ``edgeport check`` judge with the same rules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeport.runtime.errors import ConfigError, InputError

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

    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    dots = (ref * cand).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    both_zero = (np.abs(ref).sum(axis=1) == 0) & (np.abs(cand).sum(axis=1) == 0)
    cosine = np.where(both_zero, 1.0, cosine)

    ref_top1 = ref.argmax(axis=1)
    cand_top1 = np.where(finite.all(axis=1), np.nan_to_num(cand).argmax(axis=1), -1)
    agree = ref_top1 == cand_top1
    rows = np.arange(count)
    safe_cand_top1 = np.where(cand_top1 >= 0, cand_top1, ref_top1)
    margin = ref[rows, ref_top1] - ref[rows, safe_cand_top1]
    near_tie = ~agree & (cand_top1 >= 0) & (margin <= tie_atol)

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
    max_abs: float | None = None
    max_mismatch_fraction: float | None = None
    min_top1_agreement: float | None = None
    ties_agree: bool = False
    max_accuracy_drop: float | None = None  # a fraction: 0.01 is one percentage point
    min_cosine: float | None = None
    description: str = ""

    def compare(
        self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None
    ) -> Comparison:
        """``compare_logits`` with this tolerance's atol/rtol."""
        return compare_logits(reference, candidate, labels, atol=self.atol, rtol=self.rtol)

    def failures(self, comparison: Comparison) -> list[str]:
        """Why ``comparison`` fails this tolerance, one readable sentence each; empty = pass."""
        out: list[str] = []
        c = comparison
        if c.nonfinite:
            out.append(f"{c.nonfinite} of {c.total_elements} logits are NaN or Inf")
        if self.max_abs is not None and not c.max_abs <= self.max_abs:
            out.append(f"max abs error {c.max_abs:.3g} > {self.max_abs:.3g}")
        if self.max_mismatch_fraction is not None:
            fraction = c.mismatched_elements / c.total_elements
            if fraction > self.max_mismatch_fraction:
                out.append(
                    f"{c.mismatched_elements} of {c.total_elements} logits ({fraction:.2%}) are "
                    f"outside atol={self.atol:g} and rtol={self.rtol:g}; at most "
                    f"{self.max_mismatch_fraction:.2%} allowed"
                )
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
                out.append("accuracy drop cannot be checked: no labels were given")
            elif drop > self.max_accuracy_drop + 1e-12:
                out.append(
                    f"accuracy dropped {drop * 100:.2f} percentage points "
                    f"({c.accuracy_reference:.2%} -> {c.accuracy_candidate:.2%}); at most "
                    f"{self.max_accuracy_drop * 100:.2f} allowed"
                )
        if self.min_cosine is not None and not c.cosine_min >= self.min_cosine:
            out.append(f"min cosine similarity {c.cosine_min:.6f} < {self.min_cosine:.6f}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TOLERANCES: dict[str, Tolerance] = {
    tolerance.precision: tolerance
    for tolerance in (
        Tolerance(
            precision="fp32",
            atol=1e-4,
            rtol=1e-4,
            max_abs=1e-4,
            min_top1_agreement=1.0,
            ties_agree=True,
            description="max abs logit error <= 1e-4 and 100% top-1 agreement (near ties excepted)",
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
    )
}


def tolerance_for(precision: str) -> Tolerance:
    """The tolerance of ``precision``; an unknown one raises ``ConfigError`` listing the known."""
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise ConfigError(
            f"no tolerance for precision {precision!r}; known: {sorted(TOLERANCES)}"
        ) from None
