"""The MLflow / W&B run of a `--workers` run (rank 0 of Ray Train) and of a sweep trial is ended as the raygen
run ended: finished when it completed, failed otherwise. Both were left open (W&B's `finish` never called).
wandb is an optional extra: a stand-in module records the calls, as tests/test_loggers.py does."""

from __future__ import annotations

import socket
import sys
import types

import pytest

from raygen.results import read_runs


@pytest.fixture
def wandb_finishes(monkeypatch):
    """The exit codes passed to `finish` of every fake W&B run, in order."""
    finishes: list[int] = []

    class FakeRun:
        def log(self, values, step):
            pass

        def finish(self, exit_code):
            finishes.append(exit_code)

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: FakeRun(), Image=object))
    return finishes


def _trial_config(results, algorithm, **fixed):
    from raygen.engine import sweep as sw
    from raygen.engine.sweep_spec import resolve

    resolved = resolve({"name": "mirrors", "algorithm": algorithm, "dataset": "toy2d:swissroll",
                        "metric": {"name": "valid/nll", "goal": "minimize"}, "run_cap": 2,
                        "parameters": {"train.lr": {"min": 1e-3, "max": 1e-1}},
                        "fixed": {"train.steps": 20, "train.eval_every": 10, "train.log_every": 10,
                                  "train.checkpoint_every": 10, "train.progress": False, "log.wandb": True,
                                  "log.wandb_mode": "offline", **fixed}})
    return {sw.JOB_KEY: sw._job(resolved, results, str(results)), "train.lr": 1e-2}


def test_a_sweep_trial_ends_its_wandb_run_as_it_ended(tmp_path, toy_algorithm, wandb_finishes):
    from raygen.engine import sweep as sw

    sent = []
    sw.run_trial(_trial_config(tmp_path / "ok", toy_algorithm), "t1", send=lambda p, d: sent.append(p))
    assert read_runs(tmp_path / "ok").iloc[0].status == "completed"
    assert wandb_finishes == [0]

    # a diverging trial returns without an exception (Tune must not retry it): its run must end failed too
    config = {**_trial_config(tmp_path / "nan", toy_algorithm, **{"algo.explode_at": 3}), "train.grad_clip": None}
    sw.run_trial(config, "t1", send=lambda p, d: sent.append(p))
    assert read_runs(tmp_path / "nan").iloc[0].status == "failed"
    assert wandb_finishes == [0, 1]


@pytest.fixture
def one_rank_process_group():
    """A gloo process group of one rank in this process: what Ray Train gives rank 0, without Ray."""
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("fails", [False, True])
def test_a_workers_run_ends_its_wandb_run_as_it_ended(tmp_path, toy_algorithm, wandb_finishes, monkeypatch,
                                                     one_rank_process_group, fails):
    import ray.train

    from raygen.config import build_config
    from raygen.engine import loop
    from raygen.engine.ray_train import train_worker

    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    monkeypatch.setattr(ray.train, "report", lambda *a, **k: None)
    if fails:
        def broken(*args, **kwargs):
            raise RuntimeError("a worker error")

        monkeypatch.setattr(loop, "train", broken)
    cfg = build_config(algorithm=toy_algorithm, dataset="toy2d:circle",
                       overrides={"train.steps": 4, "data.toy_samples": 100, "train.batch_size": 20,
                                  "eval.final": False, "log.wandb": True, "log.wandb_mode": "offline"})
    job = {"config": cfg.to_dict(), "results": str(tmp_path), "run_id": "w-1", "extra": {}, "device": "cpu",
           "progress": False}
    if fails:
        with pytest.raises(RuntimeError, match="a worker error"):
            train_worker(job)
    else:
        train_worker(job)
    assert read_runs(tmp_path).iloc[0].status == ("failed" if fails else "completed")
    assert wandb_finishes == [1 if fails else 0]
