"""What an algorithm may ask of its runner when training data-parallel: reduce values, sync gradients.

Locally both are no-ops. Under Ray Train the loop installs `TorchDistributed`, which uses the process
group Ray Train set up (gloo on CPU, nccl on GPU).

Why not DistributedDataParallel: VW performs one optimizer step per walkback step (or accumulates over
a variable number of forwards), and Professor Forcing has two optimizers whose updates are gated. DDP
couples the all-reduce to each backward and assumes one forward per backward; an explicit, bucketed
all-reduce right before each optimizer step is the same data-parallel update for every algorithm, and
gated steps stay consistent because the gate is computed from reduced values on every worker.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class LocalContext:
    world_size = 1
    rank = 0

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def sync_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        return None


class TorchDistributed(LocalContext):
    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().clone().float()
        self._dist.all_reduce(value)
        return value / self.world_size

    def sync_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = _flatten_dense_tensors(grads)  # one all-reduce for the whole model
        self._dist.all_reduce(flat)
        flat /= self.world_size
        for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)
