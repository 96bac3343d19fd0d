"""The training loop behind ``edgeport train``: seeded, resumable, atomic outputs.

``train(TrainConfig(...))`` builds the model from the registry, trains it with Adam (or SGD)
and cross-entropy, validates after every epoch, and writes a run directory (see
``checkpoint``). After every epoch it also saves what resuming needs, so an interrupted run
continues with ``TrainConfig(resume=RUN_DIR)`` and ends with the same weights as an
uninterrupted one (on CPU, same machine and thread count).

Under torchrun every process calls ``train`` with the same config (see ``distributed``): the
model trains in DistributedDataParallel on shards of each global batch, the metrics are summed
over the ranks, and rank 0 alone writes the run directory while the others wait for it.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from edgeport.runtime.card import ModelCard
from edgeport.runtime.envinfo import package_versions
from edgeport.runtime.errors import ConfigError, InputError, ModelLoadError
from edgeport.runtime.io import atomic_write_bytes, atomic_write_json, read_regular_file
from edgeport.runtime.schema import decode, parse_json
from edgeport.train import checkpoint as ckpt
from edgeport.train import distributed, plots
from edgeport.train.data import (
    NO_AUGMENTATION,
    Augmentation,
    RawSplit,
    TrainingDataset,
    article_normalization,
    dataset_spec,
    imagenet_normalization,
    load_split,
)
from edgeport.train.models import build_model, default_input_size, state_dict_mismatch

log = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "sgd")
NORMALIZATIONS = ("article", "imagenet")
PREDICTION_GRID = 24
# Fields that define a run: a resumed run must use the same values.
_RUN_IDENTITY = (
    "model",
    "data",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "seed",
    "augment",
    "hflip",
    "rotation",
    "crop_scale",
    "freeze_backbone",
    "input_size",
    "in_channels",
    "arch_args",
    "limit",
    "normalization",
)


@dataclass
class TrainConfig:
    """Everything ``edgeport train`` takes. ``None`` means "the dataset's or model's default"."""

    model: str = "simple_cnn_bn"
    data: str = "digits"
    out: Path | None = None
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    seed: int = 0
    augment: bool | None = None  # None: the dataset's default augmentation; False: none
    hflip: bool | None = None
    rotation: float | None = None  # degrees
    crop_scale: float | None = None  # smallest area fraction of the random resized crop
    freeze_backbone: bool = False
    weights: Path | None = None  # ImageNet weights for resnet18 / torchvision:<name>
    data_root: Path | None = None
    download: bool = False
    input_size: tuple[int, int] | None = None
    in_channels: int | None = None
    arch_args: dict[str, Any] = field(default_factory=dict)
    normalization: str | None = None  # "article" (mean=std=0.5) or "imagenet"
    limit: int | None = None  # use only the first N training images (quick experiments)
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True
    overwrite: bool = False
    resume: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: paths as strings, tuples as lists."""
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, Path):
                data[key] = str(value)
            elif isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The inverse of ``to_dict``, every field type-checked; keys that are not fields
        (``resolved``, ``versions``) are ignored."""
        if not isinstance(data, dict):
            raise ConfigError(f"a training config must be a JSON object, got {type(data).__name__}")
        try:
            return decode(data, cls, "training config", ignore_unknown=True)
        except InputError as exc:
            raise ConfigError(str(exc)) from exc


def load_train_config(run_dir: str | Path) -> TrainConfig:
    """The configuration a run was started with (from its ``config.json``)."""
    path = Path(run_dir) / ckpt.CONFIG_FILE
    if not path.exists():
        raise ConfigError(
            f"cannot resume {run_dir}: {path} not found (is it the --out directory of "
            "`edgeport train`?)"
        )
    try:
        data = parse_json(read_regular_file(path, what="training config"), str(path))
        return TrainConfig.from_dict(data)
    except (ConfigError, InputError, ModelLoadError) as exc:
        raise ConfigError(f"cannot resume {run_dir}: {exc}") from exc


@dataclass
class ResolvedRun:
    """Defaults filled in: the card, augmentation and splits a config leads to."""

    card: ModelCard
    augmentation: Augmentation
    normalization: str
    splits: dict[str, RawSplit]


def _validate(config: TrainConfig) -> None:
    """Every bad setting of ``config`` in one ``ConfigError``."""
    problems = []
    if config.epochs < 1:
        problems.append(f"epochs must be >= 1, got {config.epochs}")
    if config.batch_size < 1:
        problems.append(f"batch size must be >= 1, got {config.batch_size}")
    if not config.lr > 0:
        problems.append(f"learning rate must be > 0, got {config.lr}")
    if config.optimizer not in OPTIMIZERS:
        problems.append(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}"
        )
    if config.normalization not in (None, *NORMALIZATIONS):
        problems.append(
            f"normalization must be one of {', '.join(NORMALIZATIONS)}, "
            f"got {config.normalization!r}"
        )
    if config.limit is not None and config.limit < 1:
        problems.append(f"limit must be >= 1 image, got {config.limit}")
    if config.in_channels not in (None, 1, 3):
        problems.append(f"in_channels must be 1 or 3, got {config.in_channels}")
    if problems:
        raise ConfigError("invalid training configuration: " + "; ".join(problems))


def resolve(config: TrainConfig) -> ResolvedRun:
    """Read the splits and fill in every default (channels, size, normalisation, augmentation)."""
    _validate(config)
    spec = dataset_spec(config.data)
    splits = {
        name: load_split(config.data, name, data_root=config.data_root, download=config.download)
        for name in ("train", "val", "test")
    }
    if config.limit is not None:
        train = splits["train"]
        keep = slice(0, config.limit)
        splits["train"] = dataclasses.replace(
            train,
            labels=train.labels[keep],
            arrays=None if train.arrays is None else train.arrays[keep],
            files=train.files[keep],
        )
    channels = config.in_channels or spec.in_channels
    size = config.input_size or spec.input_size or default_input_size(config.model)
    normalization = config.normalization or ("imagenet" if config.weights else "article")
    mean, std = (imagenet_normalization if normalization == "imagenet" else article_normalization)(
        channels
    )
    class_names = splits["train"].class_names
    card = ModelCard(
        architecture=config.model,
        num_classes=len(class_names),
        class_names=tuple(class_names),
        in_channels=channels,
        input_size=(int(size[0]), int(size[1])),
        mean=mean,
        std=std,
        arch_args=dict(config.arch_args),
    )
    if config.augment is False:
        augmentation = NO_AUGMENTATION
    else:
        base = spec.augmentation
        augmentation = Augmentation(
            hflip=base.hflip if config.hflip is None else config.hflip,
            rotation=base.rotation if config.rotation is None else float(config.rotation),
            crop_scale=base.crop_scale if config.crop_scale is None else float(config.crop_scale),
        )
    return ResolvedRun(card, augmentation, normalization, splits)


def library_versions() -> dict[str, str]:
    """Python, platform and the versions of the packages a run depends on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **package_versions(
            ("edgeport-train", "edgeport-runtime", "torch", "torchvision", "numpy", "safetensors")
        ),
    }


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD over the parameters still trainable (not frozen)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"{config.model} has no trainable parameters left to train")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, *, batch_size: int = 256, device: str = "cpu"
) -> torch.Tensor:
    """Eval-mode logits for a float32 NCHW tensor, in batches (restores the training mode)."""
    was_training = model.training
    model.eval()
    outputs = [
        model(images[start : start + batch_size].to(device)).float().cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.zeros(0)


def _normalized(split: RawSplit, card: ModelCard) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split preprocessed per ``card`` (no augmentation): (images NCHW, labels)."""
    return TrainingDataset(split, card).tensors()


def _score(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float | None, float | None]:
    """(cross-entropy loss, accuracy), or (None, None) for an empty split."""
    return _means(_sums(logits, labels))


def _sums(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """[summed cross-entropy, correct, count]: the parts of a score that add up over ranks."""
    if labels.numel() == 0:
        return [0.0, 0.0, 0.0]
    loss = nn.functional.cross_entropy(logits, labels, reduction="sum").item()
    return [loss, float((logits.argmax(1) == labels).sum().item()), float(labels.numel())]


def _means(sums: list[float]) -> tuple[float | None, float | None]:
    loss, correct, count = sums
    return (loss / count, correct / count) if count else (None, None)


def per_class_accuracy(
    predicted: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]
) -> dict[str, float | None]:
    """Accuracy per class name; None for a class with no images."""
    out: dict[str, float | None] = {}
    for index, name in enumerate(class_names):
        members = labels == index
        out[name] = float((predicted[members] == index).mean()) if members.any() else None
    return out


def _check_out_dir(out: Path, overwrite: bool, *, delete: bool = True) -> None:
    """Refuse to start over a finished or interrupted run, or delete its files if ``overwrite``
    (and ``delete``: rank 0 deletes, the other ranks only check)."""
    finished = (out / ckpt.METRICS_FILE).is_file()
    interrupted = (out / ckpt.STATE_JSON_FILE).is_file() and not finished
    if not (finished or interrupted):
        return
    if overwrite:
        names = (
            ckpt.WEIGHTS_FILE, ckpt.CARD_FILE, ckpt.METRICS_FILE, ckpt.CONFIG_FILE,
            ckpt.CURVES_FILE, ckpt.PREDICTIONS_FILE, ckpt.STATE_TENSORS_FILE, ckpt.STATE_JSON_FILE,
        )  # fmt: skip
        for name in names if delete else ():
            (out / name).unlink(missing_ok=True)
        return
    what = "a finished run" if finished else "an interrupted run"
    raise ConfigError(
        f"{out} already holds {what}; continue it with --resume {out}"
        + (" --epochs N (more epochs)" if finished else "")
        + ", or pass --overwrite, or choose another --out"
    )


def _check_resume(config: TrainConfig, saved: TrainConfig) -> None:
    """Refuse to resume with settings that define the run (``_RUN_IDENTITY``) changed."""
    mine, theirs = config.to_dict(), saved.to_dict()
    differ = [
        f"{k}: run has {theirs[k]!r}, asked {mine[k]!r}"
        for k in _RUN_IDENTITY
        if mine[k] != theirs[k]
    ]
    if differ:
        raise ConfigError(
            f"cannot resume {config.resume} with different settings ({'; '.join(differ)}); "
            "only --epochs, --device, --threads and --data-root may change"
        )


@dataclass
class _Session:
    """A run in progress: where it writes, what it trains, and its history so far."""

    run_dir: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader_rng: torch.Generator
    dist: distributed.Dist
    net: nn.Module | None = None  # what training steps call: the model, or its DDP wrapper
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0


def train(config: TrainConfig) -> Path:
    """Train (or resume) a model and write its run directory; returns the directory. Under
    torchrun, every rank calls it and rank 0 writes."""
    with distributed.process_group(config.device) as dist:
        distributed.per_rank_batch(config.batch_size, dist.world_size)  # before reading data
        run_dir, state = _open_run_dir(config, dist)
        distributed.barrier(dist)  # rank 0 has cleared an --overwrite directory
        if config.threads:
            torch.set_num_threads(config.threads)
        resolved = resolve(config)
        session = _start_session(config, resolved.card, run_dir, state, dist)
        config_doc = _config_document(config, run_dir, resolved, dist)
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(run_dir / ckpt.CONFIG_FILE, config_doc)
        _fit(config, resolved, session)
        if dist.is_main:
            _finish(config, resolved, session, config_doc)
        distributed.barrier(dist)  # the others wait for rank 0's files
    return run_dir


def _open_run_dir(
    config: TrainConfig, dist: distributed.Dist
) -> tuple[Path, ckpt.TrainingState | None]:
    """The run directory, with its saved training state when resuming (checked against
    ``config``; every rank loads it); a new run's directory must not hold another run unless
    ``overwrite``."""
    if config.resume is None:
        if config.out is None:
            raise ConfigError("TrainConfig.out (--out RUN_DIR) is required when not resuming")
        run_dir = Path(config.out)
        _check_out_dir(run_dir, config.overwrite, delete=dist.is_main)
        return run_dir, None
    run_dir = Path(config.resume)
    _check_resume(config, load_train_config(run_dir))
    if not (run_dir / ckpt.STATE_JSON_FILE).is_file():
        raise ConfigError(
            f"cannot resume {run_dir}: no {ckpt.STATE_JSON_FILE} (it stopped before its "
            "first epoch finished); start it again with --overwrite"
        )
    return run_dir, ckpt.load_training_state(run_dir)


def _start_session(
    config: TrainConfig,
    card: ModelCard,
    run_dir: Path,
    state: ckpt.TrainingState | None,
    dist: distributed.Dist,
) -> _Session:
    """Seed, build the model and optimizer, and restore ``state`` when resuming."""
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(
        config.model,
        num_classes=card.num_classes,
        in_channels=card.input_shape[0],
        input_size=card.input_shape[1:],
        weights=None if state else config.weights,  # resumed weights come from the state
        freeze_backbone=config.freeze_backbone,
        **config.arch_args,
    ).to(dist.device)
    session = _Session(
        run_dir,
        model,
        _make_optimizer(model, config),
        torch.Generator().manual_seed(config.seed),
        dist,
    )
    if state is None and dist.enabled:
        torch.manual_seed(config.seed + dist.rank)  # each rank its own augmentations
    if state is not None:
        mismatch = state_dict_mismatch(model.state_dict(), state.model_state)
        if mismatch:
            raise ModelLoadError(
                f"the training state in {run_dir} does not fit the model its config describes: "
                + "; ".join(mismatch)
            )
        model.load_state_dict(state.model_state)
        try:
            session.optimizer.load_state_dict(state.optimizer_state)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelLoadError(f"the optimizer state in {run_dir} does not fit: {exc}") from exc
        _restore_rng(state, session, config.seed)
        session.history = list(state.scalars.get("history", []))
        session.start_epoch = int(state.scalars.get("epoch", 0))
        log.info("resuming %s after epoch %d of %d", run_dir, session.start_epoch, config.epochs)
    session.net = distributed.wrap(model, dist)
    return session


def _rng_key(rank: int) -> str:
    """The training state's name of a rank's torch RNG state (rank 0's is plain "torch")."""
    return "torch" if rank == 0 else f"torch.rank{rank}"


def _restore_rng(state: ckpt.TrainingState, session: _Session, seed: int) -> None:
    """This rank's torch RNG state and the loader's generator from ``state``."""
    dist = session.dist
    saved_world = int(state.scalars.get("world_size", 1))
    if saved_world != dist.world_size:
        log.warning(
            "%s was trained by %d process(es), resumed by %d: it continues, but will not repeat "
            "an uninterrupted run exactly", session.run_dir, saved_world, dist.world_size,
        )  # fmt: skip
    key = _rng_key(dist.rank)
    if key in state.rng:
        torch.set_rng_state(state.rng[key])
    else:  # a rank the saved run did not have: seeded by the seed, epoch and rank
        epoch = int(state.scalars.get("epoch", 0))
        torch.manual_seed(seed + 1000 * epoch + dist.rank)
    session.loader_rng.set_state(state.rng["loader"])


def _config_document(
    config: TrainConfig, run_dir: Path, resolved: ResolvedRun, dist: distributed.Dist
) -> dict[str, Any]:
    """``config.json``: the settings as given, the defaults they resolved to, and versions."""
    card = resolved.card
    document = {
        **config.to_dict(),
        "out": str(run_dir),
        "resolved": {
            "input_size": list(card.input_shape[1:]),
            "in_channels": card.input_shape[0],
            "mean": list(card.mean or ()),
            "std": list(card.std or ()),
            "normalization": resolved.normalization,
            "augmentation": resolved.augmentation.to_dict(),
            "split_sizes": {k: len(v) for k, v in resolved.splits.items()},
        },
        "versions": library_versions(),
    }
    if dist.enabled:
        document["distributed"] = {
            **dist.to_dict(),
            "per_rank_batch_size": distributed.per_rank_batch(config.batch_size, dist.world_size),
        }
    return document


def _loader(
    config: TrainConfig, train_set: TrainingDataset, session: _Session
) -> torch.utils.data.DataLoader:
    """Shuffled batches of the training set: under a process group, this rank's share of each
    global batch from a seeded DistributedSampler (``set_epoch`` each epoch)."""
    dist = session.dist
    batch = distributed.per_rank_batch(config.batch_size, dist.world_size)
    sampler: torch.utils.data.DistributedSampler[Any] | None = None
    if dist.enabled:
        sampler = torch.utils.data.DistributedSampler(
            train_set, dist.world_size, dist.rank, shuffle=True, seed=config.seed
        )
    count = len(sampler) if sampler is not None else len(train_set)
    return torch.utils.data.DataLoader(
        train_set,
        batch_size=batch,
        shuffle=sampler is None,
        sampler=sampler,
        generator=session.loader_rng,
        num_workers=0,
        drop_last=count % batch == 1,  # BatchNorm cannot take a batch of 1
    )


def _fit(config: TrainConfig, resolved: ResolvedRun, session: _Session) -> None:
    """Train the remaining epochs, validating and saving the resumable state after each."""
    card, dist = resolved.card, session.dist
    train_set = TrainingDataset(resolved.splits["train"], card, resolved.augmentation)
    loader = _loader(config, train_set, session)
    val_x, val_y = _normalized(resolved.splits["val"], card)
    val_x, val_y = val_x[dist.rank :: dist.world_size], val_y[dist.rank :: dist.world_size]
    log.info(
        "training %s on %s: %d train / %d val / %d test images, input %s, augmentation %s",
        config.model, config.data, len(train_set), len(resolved.splits["val"]),
        len(resolved.splits["test"]), "x".join(map(str, card.input_shape)),
        resolved.augmentation.to_dict(),
    )  # fmt: skip
    for epoch in range(session.start_epoch, config.epochs):
        started = time.perf_counter()
        if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
            loader.sampler.set_epoch(epoch)
        train_loss, train_acc = _train_epoch(config, session, loader, epoch)
        distributed.broadcast_buffers(session.model, dist)  # every rank validates one model
        val_logits = predict_logits(session.model, val_x, device=dist.device)
        val_loss, val_acc = _means(distributed.all_reduce_sum(_sums(val_logits, val_y), dist))
        entry = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": session.optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 3),
        }
        session.history.append(entry)
        log.info(
            "epoch %d/%d: loss %.4f, train accuracy %.4f, val accuracy %s (%.1f s)",
            epoch + 1, config.epochs, train_loss, train_acc,
            "n/a" if val_acc is None else f"{val_acc:.4f}", entry["seconds"],
        )  # fmt: skip
        _save_state(session, epoch)


def _save_state(session: _Session, epoch: int) -> None:
    """What resuming needs after ``epoch``: rank 0 writes it, with every rank's RNG state."""
    dist = session.dist
    states = distributed.all_gather(torch.get_rng_state(), dist)
    if not dist.is_main:
        return
    rng = {_rng_key(rank): state for rank, state in enumerate(states)}
    ckpt.save_training_state(
        session.run_dir,
        model=session.model,
        optimizer=session.optimizer,
        scalars={"epoch": epoch + 1, "history": session.history, "world_size": dist.world_size},
        rng={**rng, "loader": session.loader_rng.get_state()},
    )


def _train_epoch(
    config: TrainConfig, session: _Session, loader: torch.utils.data.DataLoader, epoch: int
) -> tuple[float, float]:
    """One pass over the training data; returns its mean loss and accuracy (over all ranks)."""
    net, optimizer, device = session.net or session.model, session.optimizer, session.dist.device
    net.train()
    seen, loss_sum, correct = 0, 0.0, 0
    bar = tqdm(
        loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, unit="batch",
        disable=not (config.progress and session.dist.is_main),
    )  # fmt: skip
    for images, labels in bar:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = net(images)
        loss = nn.functional.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        seen += labels.shape[0]
        loss_sum += loss.item() * labels.shape[0]
        correct += int((logits.argmax(1) == labels).sum().item())
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    bar.close()
    loss_sum, correct_sum, count = distributed.all_reduce_sum(
        [loss_sum, correct, seen], session.dist
    )
    return loss_sum / max(count, 1), correct_sum / max(count, 1)


def _finish(
    config: TrainConfig, resolved: ResolvedRun, session: _Session, config_doc: dict[str, Any]
) -> None:
    """Test the trained model on CPU and write weights, card, metrics and the two plots."""
    card, history, run_dir = resolved.card, session.history, session.run_dir
    model = session.model.to("cpu").eval()
    test_x, test_y = _normalized(resolved.splits["test"], card)
    test_logits = predict_logits(model, test_x)
    test_loss, test_acc = _score(test_logits, test_y)
    predicted = test_logits.argmax(1).numpy()
    metrics = {
        "test_accuracy": test_acc,
        "test_loss": test_loss,
        "test_count": len(test_y),
        "per_class_accuracy": per_class_accuracy(predicted, test_y.numpy(), card.class_names),
        "val_accuracy": history[-1]["val_accuracy"] if history else None,
        "epochs": config.epochs,
        "history": history,
        "train_seconds": round(sum(h["seconds"] for h in history), 3),
        "dataset": config.data,
        "split_sizes": config_doc["resolved"]["split_sizes"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    ckpt.save_checkpoint(run_dir, model, card, metrics=metrics, config=config_doc)
    _write_plots(f"{config.model} on {config.data}", resolved, session, predicted)
    log.info(
        "test accuracy %.4f on %d images; run saved to %s", test_acc or 0.0, len(test_y), run_dir
    )


def _write_plots(
    title: str, resolved: ResolvedRun, session: _Session, predicted: np.ndarray
) -> None:
    """``curves.png`` from the history and ``predictions.png`` of the first test images."""
    run_dir, card, test = session.run_dir, resolved.card, resolved.splits["test"]
    atomic_write_bytes(run_dir / ckpt.CURVES_FILE, plots.curves_png(session.history, title))
    shown = min(PREDICTION_GRID, len(test))
    grid = test.prepared(card, range(shown))
    atomic_write_bytes(
        run_dir / ckpt.PREDICTIONS_FILE,
        plots.predictions_png(
            grid, predicted[:shown].tolist(), test.labels[:shown].tolist(), card.class_names
        ),
    )
