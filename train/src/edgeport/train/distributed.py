"""Data-parallel training over several processes with torch.distributed, launched by torchrun.

``edgeport train ... --nproc-per-node N`` runs the same command again under
``python -m torch.distributed.run ... -m edgeport.train`` (:func:`launch`), which starts N
processes per node with RANK, WORLD_SIZE and LOCAL_RANK in their environment; ``torchrun -m
edgeport.train ...`` started by hand does the same. Each process joins the process group
(:func:`process_group`: gloo on CPU, nccl on CUDA with one GPU per local rank) and the loop
trains one model with DistributedDataParallel: every rank takes ``batch_size / world_size`` of
each global batch, losses and accuracies are summed over the ranks, and rank 0 alone writes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeport.runtime.errors import ConfigError

log = logging.getLogger(__name__)

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TRAIN_MODULE = "edgeport.train"


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # this rank's device (cuda:LOCAL_RANK on CUDA)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.startswith("cuda") else "gloo"

    def to_dict(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend}


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process: RANK, WORLD_SIZE and
    LOCAL_RANK are all in the environment."""
    return all(name in os.environ for name in ENV)


def from_env(device: str) -> Dist:
    """The rank, world size and local rank the launcher set, and this rank's device."""
    if not launched():
        return Dist(device=device)
    try:
        rank, world, local = (int(os.environ[name]) for name in ENV)
    except ValueError as exc:
        values = {name: os.environ[name] for name in ENV}
        raise ConfigError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, got {values}"
        ) from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"invalid launch environment: RANK={rank} WORLD_SIZE={world}")
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{local}"
    return Dist(rank, world, local, device)


@contextmanager
def process_group(device: str) -> Iterator[Dist]:
    """Join the launcher's process group (when the world has more than one process) for the
    block, and leave it afterwards."""
    import torch.distributed as td

    dist = from_env(device)
    if not dist.enabled:
        yield dist
        return
    if dist.device.startswith("cuda"):
        torch.cuda.set_device(dist.device)
    td.init_process_group(backend=dist.backend)  # env://: MASTER_ADDR/PORT from the launcher
    log.debug("rank %d of %d joined (%s)", dist.rank, dist.world_size, dist.backend)
    try:
        yield dist
    finally:
        td.destroy_process_group()


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Each rank's share of the global batch; ``ConfigError`` when it does not divide."""
    if batch_size % world_size:
        raise ConfigError(
            f"the batch size {batch_size} does not divide among {world_size} processes: the "
            f"global batch must be a multiple of the world size (e.g. "
            f"{max(batch_size // world_size, 1) * world_size})"
        )
    return batch_size // world_size


def barrier(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as td

        td.barrier()


def all_reduce_sum(values: Sequence[float], dist: Dist) -> list[float]:
    """``values`` summed over the ranks (float64), on every rank."""
    if not dist.enabled:
        return list(values)
    import torch.distributed as td

    tensor = torch.tensor(list(values), dtype=torch.float64, device=dist.device)
    td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return [float(v) for v in tensor.cpu()]


def all_gather(tensor: torch.Tensor, dist: Dist) -> list[torch.Tensor]:
    """Every rank's ``tensor`` (same shape and dtype on each), in rank order, on every rank."""
    if not dist.enabled:
        return [tensor]
    import torch.distributed as td

    local = tensor.to(dist.device)
    parts = [torch.empty_like(local) for _ in range(dist.world_size)]
    td.all_gather(parts, local)
    return [part.cpu() for part in parts]


def broadcast_buffers(model: nn.Module, dist: Dist) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, so all evaluate one
    model (DDP synchronises them only at the start of each training step)."""
    if not dist.enabled:
        return
    import torch.distributed as td

    for buffer in model.buffers():
        td.broadcast(buffer.data, src=0)


def wrap(model: nn.Module, dist: Dist) -> nn.Module:
    """``model`` in DistributedDataParallel under a process group, else itself."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [dist.local_rank] if dist.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=device_ids)


# -- launching -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchConfig:
    """torchrun's settings: processes per node, nodes, this node's rank and the rendezvous
    address (rank 0's node; on one node without a port, torchrun picks a free one)."""

    nproc_per_node: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.nproc_per_node < 1 or self.nnodes < 1:
            problems.append(
                f"--nproc-per-node and --nnodes must be >= 1, got {self.nproc_per_node} and "
                f"{self.nnodes}"
            )
        if not 0 <= self.node_rank < self.nnodes:
            problems.append(f"--node-rank must be in 0..{self.nnodes - 1}, got {self.node_rank}")
        if self.nnodes > 1 and self.master_addr is None:
            problems.append("several nodes need --master-addr (the address of node 0)")
        if self.master_port is not None and not 0 < self.master_port < 65536:
            problems.append(f"--master-port must be in 1..65535, got {self.master_port}")
        if problems:
            raise ConfigError("invalid launch settings: " + "; ".join(problems))

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def torchrun_args(self) -> list[str]:
        args = [f"--nproc-per-node={self.nproc_per_node}", f"--nnodes={self.nnodes}"]
        if self.nnodes == 1 and self.master_addr is None and self.master_port is None:
            return [*args, "--standalone"]
        args.append(f"--node-rank={self.node_rank}")
        args.append(f"--master-addr={self.master_addr or '127.0.0.1'}")
        return [*args, f"--master-port={self.master_port or 29500}"]


def launch(config: LaunchConfig, train_argv: Sequence[str]) -> int:
    """Run ``edgeport train TRAIN_ARGV`` under torchrun; its exit status."""
    command = [
        sys.executable, "-m", "torch.distributed.run", *config.torchrun_args(),
        "-m", TRAIN_MODULE, *train_argv,
    ]  # fmt: skip
    log.info("launching %d processes: %s", config.nproc_per_node, " ".join(command))
    return subprocess.run(command, check=False).returncode
