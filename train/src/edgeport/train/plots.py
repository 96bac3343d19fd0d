"""Training plots as PNG bytes: loss/accuracy curves and a grid of labelled test predictions.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch),
so plotting works without a display and from any thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def curves_png(history: Sequence[dict[str, Any]], title: str = "") -> bytes:
    """Loss and accuracy per epoch (train and validation) side by side."""
    figure = Figure(figsize=(9, 3.5))
    loss_ax, acc_ax = figure.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        for split, label in (("train", "train"), ("val", "validation")):
            values = [h.get(f"{split}_{metric}") for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker="o", label=label)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0.0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        figure.suptitle(title)
    return _png(figure)


def predictions_png(
    images: np.ndarray,
    predicted: Sequence[int],
    true: Sequence[int],
    class_names: Sequence[str],
    *,
    columns: int = 8,
    cell: int = 64,
) -> bytes:
    """A grid of uint8 NHWC images captioned 'predicted / true', green when right, red when
    wrong. The images are tiled into one mosaic (one ``imshow``), which is fast to draw."""
    count = len(images)
    rows = max(1, math.ceil(count / columns))
    gap = cell // 4
    mosaic = np.full((rows * (cell + gap), columns * cell + (columns - 1) * 4, 3), 255, np.uint8)
    for index in range(count):
        image = images[index]
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=2)
        height, width = image.shape[:2]
        scale = max(1, cell // max(height, width))
        tile = np.kron(image, np.ones((scale, scale, 1), np.uint8))[:cell, :cell]  # nearest
        top = (index // columns) * (cell + gap) + gap
        left = (index % columns) * (cell + 4)
        mosaic[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    figure = Figure(figsize=(mosaic.shape[1] / 60, mosaic.shape[0] / 60 + 0.4))
    ax = figure.add_axes((0, 0, 1, 0.95))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for index in range(count):
        right = predicted[index] == true[index]
        ax.text(
            (index % columns) * (cell + 4) + cell / 2,
            (index // columns) * (cell + gap) + gap - 2,
            f"{class_names[predicted[index]]} / {class_names[true[index]]}",
            ha="center",
            va="bottom",
            fontsize=7,
            color="green" if right else "red",
        )
    figure.suptitle("predicted / true (test images)", fontsize=9)
    return _png(figure)
