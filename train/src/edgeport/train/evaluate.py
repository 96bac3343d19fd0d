"""``edgeport evaluate``: accuracy, per-class accuracy and confusion matrix of a trained run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeport.train.checkpoint import load_checkpoint
from edgeport.train.data import load_eval_arrays
from edgeport.train.loop import per_class_accuracy, predict_logits


@dataclass
class Evaluation:
    """What ``edgeport evaluate`` reports for one split."""

    run_dir: Path
    dataset: str
    split: str
    count: int
    accuracy: float
    per_class_accuracy: dict[str, float | None]
    per_class_count: dict[str, int]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    class_names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "dataset": self.dataset,
            "split": self.split,
            "count": self.count,
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "per_class_count": self.per_class_count,
            "confusion": self.confusion,
            "class_names": list(self.class_names),
        }

    def table(self) -> str:
        width = max(len("class"), *(len(n) for n in self.class_names))
        lines = [
            f"{self.dataset} {self.split}: accuracy {self.accuracy:.4f} on {self.count} images",
            f"{'class'.ljust(width)}  accuracy  images",
        ]
        for name in self.class_names:
            acc = self.per_class_accuracy[name]
            shown = "     n/a" if acc is None else f"{acc:8.4f}"
            lines.append(f"{name.ljust(width)}  {shown}  {self.per_class_count[name]:6d}")
        return "\n".join(lines)


def evaluate(
    run_dir: str | Path,
    data: str | None = None,
    *,
    split: str = "test",
    data_root: str | Path | None = None,
    limit: int | None = None,
    download: bool = False,
    batch_size: int = 256,
) -> Evaluation:
    """Accuracy of a run's model on a dataset split (by default the one it was trained on)."""
    checkpoint = load_checkpoint(run_dir)
    dataset = data or checkpoint.dataset or "digits"
    root = data_root if data_root is not None else checkpoint.data_root
    arrays = load_eval_arrays(
        dataset, checkpoint.card, split=split, data_root=root, limit=limit, download=download
    )
    logits = predict_logits(
        checkpoint.model, torch.from_numpy(arrays.images), batch_size=batch_size
    )
    predicted = logits.argmax(1).numpy()
    labels = arrays.labels
    classes = len(arrays.class_names)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return Evaluation(
        run_dir=Path(run_dir),
        dataset=dataset,
        split=split,
        count=len(labels),
        accuracy=float((predicted == labels).mean()) if len(labels) else 0.0,
        per_class_accuracy=per_class_accuracy(predicted, labels, arrays.class_names),
        per_class_count={n: int((labels == i).sum()) for i, n in enumerate(arrays.class_names)},
        confusion=confusion.tolist(),
        class_names=arrays.class_names,
    )
