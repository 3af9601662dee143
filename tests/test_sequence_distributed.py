"""Professor Forcing data-parallel: the gates are decided from the reduced accuracy, so two gloo workers
with different data take the same branch on every step and end with identical parameters (a worker that
skipped a gated update would leave the other waiting in its gradient all-reduce)."""

import socket

import pytest
import torch
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import datetime
    import os

    import torch.distributed as dist

    from raygen.algorithms.sequence import ProfessorForcing
    from raygen.distributed import TorchDistributed
    from tests.test_sequence import config, text_dataset

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    # A deadlock guard, not a speed check: workers that disagreed on a gate would wait forever in the
    # all-reduce of the update only one of them makes; the collective timeout turns that into a failure.
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(minutes=5))
    try:
        torch.manual_seed(0)  # same initial weights on every worker
        # Thresholds near chance so that the gates flip between steps of an untrained discriminator.
        model = ProfessorForcing(
            config("professor", {"gate_generator": 0.5, "gate_discriminator": 0.52}), text_dataset()
        )
        model.ctx = TorchDistributed()
        torch.manual_seed(100 + rank)  # different free-running samples per worker
        shard = text_dataset().splits["train"][rank::world]  # different data per worker
        decisions, local = [], []
        original = model.ctx.all_reduce_mean
        model.ctx.all_reduce_mean = lambda v: (local.append(float(v)), original(v))[1]
        for step in range(8):
            m = model.train_step(shard[(3 * step) % 6 : (3 * step) % 6 + 6])
            decisions.append((m["disc_accuracy"], m["gate_generator_open"], m["gate_discriminator_open"]))
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        torch.save({"decisions": decisions, "local": local, "params": gathered}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_gates_agree_across_workers_and_parameters_stay_identical(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2)
    r0, r1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert r0["decisions"] == r1["decisions"]  # same accuracy, same branches, every step
    assert r0["local"] != r1["local"]  # although the workers' own accuracies differed
    opened = {d[1] for d in r0["decisions"]}
    assert opened == {0.0, 1.0}  # the generator gate really changed during the run
    assert torch.equal(r0["params"][0], r0["params"][1])
