"""``export()``: a training run directory to a parity-checked bundle.

A thin front end of the shared pipeline (:mod:`edgeport.export.pipeline`): it loads the
checkpoint, takes the run's card, picks held-out test images (the parity reference, with their
labels) and training images (int8 calibration), and stores the run's weights beside the
reference so the PyTorch baselines can rebuild the model.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.export.bundle_writer import BundleWriter
from edgeport.export.onnx import INPUT_NAME, OUTPUT_NAME
from edgeport.export.pipeline import ExportJob, run_pipeline
from edgeport.export.settings import ExportSettings, ImagePreprocessing
from edgeport.runtime.bundle import Manifest
from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLE_SEED = 0
EXAMPLE_BATCH = 2  # images traced by torch.export (the batch axis is dynamic)


def _sample(
    dataset: str, card: ModelCard, split: str, size: int | None, data_root: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed images and labels of ``size`` images spread over the split (seeded)."""
    from edgeport.runtime.preprocess import normalize
    from edgeport.train.data import check_classes, load_split

    raw = load_split(dataset, split, data_root=data_root, download=False)
    check_classes(card, raw.class_names, dataset)
    total = len(raw)
    if size is None or size >= total:
        indices = np.arange(total)
    else:  # a seeded spread, not the first N: a folder dataset is sorted by class
        rng = np.random.default_rng(SAMPLE_SEED)
        indices = np.sort(rng.choice(total, size=size, replace=False))
    images = normalize(raw.prepared(card, [int(i) for i in indices]), card)
    return images, raw.labels[indices].astype(np.int64)


def _run_settings(settings: ExportSettings, card: ModelCard) -> ExportSettings:
    """A classifier's fixed names, dynamic batch and card fields (from the run's card)."""
    return settings.with_options(
        {
            "input_names": (INPUT_NAME,),
            "output_names": (OUTPUT_NAME,),
            "dynamic_shapes": {INPUT_NAME: {0: "batch"}},
            "task": "classification",
            "class_names": card.class_names,
            "image": ImagePreprocessing.from_card(card),
            "architecture": card.architecture,
        }
    )


def export(
    run_dir: str | Path,
    out: str | Path,
    settings: ExportSettings | None = None,
    *,
    data_root: str | Path | None = None,
    **options: Any,
) -> Manifest:
    """Export the run in ``run_dir`` to a bundle at ``out`` and return its manifest.

    ``settings`` (or its fields as keyword ``options``: ``precisions``, ``tensorrt``, ``batch``,
    ``calib``, ``parity_limit``, ...) says what to produce; ``data_root`` is where the run's
    dataset lives. Raises ``ConfigError``, ``ModelLoadError`` (a broken run), ``DatasetError``,
    ``ExportError`` or ``ParityError``; ``out`` is then left as it was.
    """
    from edgeport.train.checkpoint import WEIGHTS_FILE, load_checkpoint

    settings = (settings or ExportSettings()).with_options(options)
    run, dest = Path(run_dir).expanduser().absolute(), Path(out).expanduser().absolute()
    if dest == run or run in dest.parents:
        raise ConfigError(
            f"--out {dest} is inside the run directory {run}; put the bundle elsewhere"
        )
    BundleWriter(dest).check_destination()
    checkpoint = load_checkpoint(run)
    card = replace(checkpoint.card, inputs=(), outputs=())  # the graph says what they are
    dataset = checkpoint.dataset or settings.calib.dataset
    if dataset is None:
        raise ConfigError(
            f"run {run} does not record its dataset (config.json 'data'); pass --calib-data "
            "NAME to name the dataset to check parity and calibrate on"
        )
    root = str(data_root) if data_root is not None else checkpoint.data_root
    images, labels = _sample(dataset, card, "test", settings.parity_limit, root)
    calibration, calib_source = None, None
    if "int8" in settings.precisions:  # real training images, never noise
        calib_data = settings.calib.dataset or dataset
        calib_images, _ = _sample(calib_data, card, "train", settings.calib.size, root)
        calibration, calib_source = [{INPUT_NAME: calib_images}], f"{calib_data} train"
    job = ExportJob(
        module=checkpoint.model,
        example={INPUT_NAME: images[:EXAMPLE_BATCH]},
        parity={INPUT_NAME: images},
        card=card,
        labels=labels,
        dataset=dataset,
        split="test",
        calibration=calibration,
        calibration_source=calib_source,
        source={"kind": "run", "run_dir": str(run), "dataset": dataset, "data_root": root},
        weights=run / WEIGHTS_FILE,
    )
    return run_pipeline(job, _run_settings(settings, card), dest)
