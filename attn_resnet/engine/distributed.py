"""Data-parallel training with torch.distributed: the process group, DDP, SyncBatchNorm, and the
few collectives the loop needs (meters, validation sums, agreeing that a checkpoint was written).

One process per GPU (NCCL) or per CPU rank (gloo), launched by torchrun or by a submitit job on
Slurm (``distributed_env`` reads which rank this is). A run of one process gets a
``Distributed()`` whose collectives do nothing, so the loop has no distributed branches.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..distributed_env import ProcessEnv, process_env, rendezvous_store

log = logging.getLogger(__name__)

__all__ = ["Distributed", "GlooSyncBatchNorm", "PeerRankError", "convert_sync_batchnorm", "start_distributed"]


class PeerRankError(RuntimeError):
    """Another rank of the run failed; this one stops with it instead of waiting in a collective."""


class Distributed:
    """This process's view of the run's process group (a group of one by default).

    ``gather``, ``sum_`` and ``all_ok`` are collectives: every rank must call them at the same
    points of the run, in the same order (the trainer does so at log points, checkpoints and
    the end of each evaluation, which fall on the same batch on every rank).
    """

    def __init__(self, env: ProcessEnv | None = None, device: torch.device | None = None, backend: str | None = None):
        env = env or ProcessEnv()
        self.rank, self.world_size = env.rank, env.world_size
        self.local_rank, self.local_world_size = env.local_rank, env.local_world_size
        self.launcher = env.launcher
        self.device = device
        self.backend = backend

    @property
    def enabled(self) -> bool:
        """In a process group (a torchrun of one process is one too: DDP then runs as it would on many)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``(world_size, *tensor.shape)``: every rank's ``tensor``, in rank order."""
        if not self.enabled:
            return tensor[None]
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place; returns it."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_ok(self, ok: bool) -> bool:
        """True when ``ok`` is true on every rank."""
        if not self.enabled:
            return bool(ok)
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=self._collective_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def check_same(self, value: int, what: str) -> None:
        """PeerRankError unless every rank holds the same integer ``value`` (e.g. the resumed step)."""
        if not self.enabled:
            return
        values = self.gather(torch.tensor([int(value)], dtype=torch.int64, device=self._collective_device()))
        values = [int(v) for v in values.flatten().tolist()]
        if len(set(values)) > 1:
            raise PeerRankError(
                f"The ranks of this run disagree on {what}: {values} (rank order). Every rank must read the same "
                f"run folder: put it on a file system that all nodes share, and start all ranks with the same "
                f"overrides.")

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics).

        DDP sends rank 0's buffers at the start of each training forward, but each rank's last
        forward then updates its own copy; before an evaluation or a checkpoint all ranks must
        hold the ones rank 0 saves.
        """
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer.data, src=0)

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel (the module a training step runs), or as it is alone."""
        if not self.enabled:
            return model
        device_ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def grad_sync(self, step_model: nn.Module, sync: bool):
        """A context for one backward: without the gradient all-reduce unless ``sync`` (accumulation)."""
        if sync or not isinstance(step_model, nn.parallel.DistributedDataParallel):
            return nullcontext()
        return step_model.no_sync()

    def _collective_device(self) -> torch.device:
        return self.device if self.backend == "nccl" and self.device is not None else torch.device("cpu")

    def close(self) -> None:
        """Leave the process group (idempotent)."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _distributed_device(request: str, env: ProcessEnv) -> torch.device:
    request = str(request)
    if request.startswith("cuda:"):
        raise ValueError(
            f"trainer.device={request!r} names one GPU, but this is a {env.world_size}-process run in which each "
            f"process takes the GPU of its local rank. Use trainer.device=auto (or cuda), and choose the GPUs "
            f"with CUDA_VISIBLE_DEVICES.")
    if request == "cpu" or (request == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"trainer.device={request!r} but CUDA is not available here; use trainer.device=auto "
                         f"or cpu.")
    count = torch.cuda.device_count()
    if env.local_world_size > count:
        raise ValueError(
            f"This node runs {env.local_world_size} processes of the run but has {count} visible GPU"
            f"{'s' if count != 1 else ''}: one process per GPU. Start torchrun with --nproc_per_node={count} "
            f"(or ask Slurm for as many GPUs per node as tasks per node).")
    return torch.device("cuda", env.local_rank % count)


def start_distributed(device_request: str = "auto", timeout_s: float = 600.0,
                      env: ProcessEnv | None = None) -> tuple[Distributed, torch.device | None]:
    """Join the run's process group when this is one rank of several; ``(Distributed, device)``.

    The device is None for a single process (the caller resolves ``trainer.device`` itself);
    a rank gets the GPU of its local rank (NCCL) or the CPU (gloo). ``timeout_s`` bounds every
    collective: a rank whose peer died stops with an error instead of waiting for ever.
    """
    env = env or process_env()
    if not env.distributed:
        return Distributed(env), None
    device = _distributed_device(device_request, env)
    backend = "nccl" if device.type == "cuda" else "gloo"
    options: dict = {"backend": backend, "timeout": timedelta(seconds=float(timeout_s))}
    store = rendezvous_store()
    if store is not None:  # the launcher's store, already used to agree on the run folder
        # torchrun keeps its store across restarts (--max-restarts), with the addresses that the killed
        # attempt's ranks published for gloo: a restarted rank could read its peer's old address and fail with
        # "Connection refused". Each attempt's process group gets keys of its own.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        options.update(store=dist.PrefixStore(f"attn_resnet/attempt_{attempt}/", store), rank=env.rank,
                       world_size=env.world_size)
    else:
        options.update(init_method="env://", rank=env.rank, world_size=env.world_size)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        options["device_id"] = device
    dist.init_process_group(**options)
    log.info("Process group: %d processes (%s, %s), this is rank %d (local rank %d) on %s.", env.world_size,
             backend, env.launcher, env.rank, env.local_rank, device)
    return Distributed(env, device, backend), device


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every rank's loss depends on every
    rank's input through the global statistics."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm for CPU tensors (gloo): BatchNorm over the whole global batch.

    torch's SyncBatchNorm has GPU kernels only, and DDP refuses it in a CPU module. This
    computes the same thing on the CPU, the mean and variance of the global batch, with two
    differentiable all-reduces (sums, then squared deviations), and updates the running statistics as BatchNorm does (unbiased
    variance). In eval mode, or in a run of one process, it is plain BatchNorm. The same
    state_dict as BatchNorm; ``convert_sync_batchnorm`` puts it in place on the CPU only.
    """

    process_group = None

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if (not self.training or not dist.is_available() or not dist.is_initialized()
                or dist.get_world_size(self.process_group) < 2):
            return super().forward(input)
        self._check_input_dim(input)
        group = self.process_group or dist.group.WORLD
        dims = [0, *range(2, input.dim())]
        shape = [1, input.shape[1], *([1] * (input.dim() - 2))]
        x = input.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        totals = _SumOverRanks.apply(torch.cat([x.sum(dims), count]), group)
        total = totals[-1]
        mean = totals[:-1] / total
        centred = x - mean.view(shape)
        var = _SumOverRanks.apply(centred.pow(2).sum(dims), group) / total
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                unbiased = var.detach() * (total / (total - 1))
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return out.to(input.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer of ``model`` as SyncBatchNorm (GlooSyncBatchNorm on the CPU); same state_dict keys."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if device.type == "cpu":
        for module in model.modules():
            if type(module) is nn.SyncBatchNorm:
                module.__class__ = GlooSyncBatchNorm
    return model
