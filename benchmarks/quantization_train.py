"""Train the int8 benchmark's torchvision networks on the embedded digits to a real accuracy.

Random-weight MobileNets give logits near 1e-9, where int8 agreement means nothing, and no
pretrained weights are downloaded; so each network is trained from a seeded init on the digits
(3 channels, ImageNet normalisation) before it is quantized. Training at 224x224 costs several
CPU-minutes per epoch, so most epochs run at 112x112 and the last at 224x224, the size the
benchmark runs at; BatchNorm statistics are then recomputed at 224x224 over the training
images (torchvision's MobileNets keep running statistics with momentum 0.01, too slow to
follow a few hundred steps: their eval-mode accuracy stayed at chance without it). More 224x224
epochs are added until the held-out accuracy reaches the target (or ``max_extra`` is spent).

The weights are cached (``weights.safetensors`` and ``training.json`` per model), so a rerun
of the benchmark does not train again.

    python benchmarks/quantization_train.py mobilenet_v3_small [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("edgeport.benchmarks")

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "quantization-bench"
SIZE = 224
CLASSES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class Recipe:
    """How one network is trained: epochs at 112x112, then at 224x224, Adam's learning rate."""

    small_epochs: int = 3
    full_epochs: int = 1
    lr: float = 2e-3
    batch: int = 32
    target: float = 0.90
    max_extra: int = 3


RECIPES = {
    "mobilenet_v3_small": Recipe(),
    "mobilenet_v3_large": Recipe(),
    "mobilenet_v2": Recipe(),
    "efficientnet_b0": Recipe(),
    "resnet18": Recipe(lr=1e-3),
    "regnet_y_400mf": Recipe(),
}


def card(size: int = SIZE) -> Any:
    from edgeport.runtime.card import ModelCard
    from edgeport.train.data import IMAGENET_MEAN, IMAGENET_STD

    return ModelCard(
        architecture="digits",
        num_classes=len(CLASSES),
        class_names=CLASSES,
        in_channels=3,
        input_size=(size, size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


def digits(split: str, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The digits of ``split`` preprocessed at ``size`` x ``size`` (float32 NCHW) and labels."""
    from edgeport.train.data import load_eval_arrays

    arrays = load_eval_arrays("digits", card(size), split=split)
    return arrays.images, arrays.labels.astype(np.int64)


def weights_path(name: str, cache: Path = CACHE) -> Path:
    return cache / name / "weights.safetensors"


def build(name: str) -> Any:
    from edgeport.train.models import build_model

    return build_model(f"torchvision:{name}", num_classes=10, in_channels=3, input_size=(SIZE,) * 2)


def load_trained(name: str, cache: Path = CACHE) -> Any:
    from safetensors.torch import load_file

    model = build(name)
    model.load_state_dict(load_file(str(weights_path(name, cache))))
    return model.eval()


def _epoch(
    model, optimizer, images: np.ndarray, labels: np.ndarray, batch: int, seed: int
) -> float:
    import torch

    model.train()
    order = np.random.default_rng(seed).permutation(len(images))
    correct = 0
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        x, y = torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])
        optimizer.zero_grad()
        logits = model(x)
        torch.nn.functional.cross_entropy(logits, y).backward()
        optimizer.step()
        correct += int((logits.argmax(1) == y).sum())
    return correct / len(order)


def recalibrate_batchnorm(model: Any, images: np.ndarray, batch: int = 64) -> None:
    """Recompute every BatchNorm's running statistics as a plain average over ``images``."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            model(torch.from_numpy(images[start : start + batch]))
    model.eval()


def accuracy(model: Any, images: np.ndarray, labels: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.inference_mode():
        logits = torch.cat(
            [model(torch.from_numpy(images[i : i + 64])) for i in range(0, len(images), 64)]
        )
    return float((logits.argmax(1).numpy() == labels).mean())


def train(name: str, cache: Path = CACHE) -> dict[str, Any]:
    """Train ``name`` (or reuse its cached weights); returns its training record."""
    import torch

    record_path = cache / name / "training.json"
    if weights_path(name, cache).is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("trained", True):
            log.info("reusing the trained %s in %s", name, record_path.parent)
            return record
    recipe = RECIPES[name]
    torch.manual_seed(0)
    model = build(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    started, history = time.perf_counter(), []
    small = digits("train", SIZE // 2)
    for epoch in range(recipe.small_epochs):
        history.append(
            {
                "size": SIZE // 2,
                "train_accuracy": _epoch(model, optimizer, *small, recipe.batch, epoch),
            }
        )
        log.info("%s epoch %d at %d: %s", name, epoch + 1, SIZE // 2, history[-1])
    del small
    full, test = digits("train"), digits("test")
    extra, test_accuracy = 0, 0.0
    while True:
        for epoch in range(recipe.full_epochs if extra == 0 else 1):
            seed = 100 + len(history) + epoch
            history.append(
                {
                    "size": SIZE,
                    "train_accuracy": _epoch(model, optimizer, *full, recipe.batch, seed),
                }
            )
        recalibrate_batchnorm(model, full[0])
        test_accuracy = accuracy(model, *test)
        history[-1]["test_accuracy"] = test_accuracy
        log.info("%s at %d: %s", name, SIZE, history[-1])
        if test_accuracy >= recipe.target or extra >= recipe.max_extra:
            break
        extra += 1
    record = {
        "model": name,
        "trained": True,
        "recipe": recipe.__dict__,
        "history": history,
        "test_accuracy": test_accuracy,
        "test_samples": len(test[1]),
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
    }
    _save(model, record, cache)
    return record


def untrained(name: str, cache: Path = CACHE, images: int = 256) -> dict[str, Any]:
    """``name`` with seeded random weights and BatchNorm statistics measured on ``images``
    training digits (so that its logits are not near zero), for a network not trained yet:
    int8 can then be judged by agreement with fp32, not by accuracy. Reuses trained weights."""
    import torch

    record_path = cache / name / "training.json"
    if weights_path(name, cache).is_file() and record_path.is_file():
        return json.loads(record_path.read_text())
    torch.manual_seed(0)
    model = build(name)
    recalibrate_batchnorm(model, digits("train")[0][:images])
    test = digits("test")
    record = {
        "model": name,
        "trained": False,
        "batchnorm_images": images,
        "test_accuracy": accuracy(model, *test),
        "test_samples": len(test[1]),
    }
    _save(model, record, cache)
    return record


def _save(model: Any, record: dict[str, Any], cache: Path) -> None:
    from safetensors.torch import save_file

    name = record["model"]
    weights_path(name, cache).parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights_path(name, cache)))
    (cache / name / "training.json").write_text(json.dumps(record, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", choices=sorted(RECIPES))
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in args.models:
        record = train(name, args.cache)
        print(f"{name}: test accuracy {record['test_accuracy']:.2%} after {record['seconds']} s")


if __name__ == "__main__":
    main()
