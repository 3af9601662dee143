"""Issue 10, item 2: the sweep driver killed (SIGKILL) at any instant, then resumed, never duplicates, re-runs or
strands a trial in the results store.

A dozen drivers are killed in turn: right after a trial's run row turns `completed` (polled every few ms, so
within ~100 ms of the trial finishing), right after a trial starts, right after a checkpoint is written, and at
fixed offsets from the driver's start. After each kill (once the dead driver's actors are gone) the store is
checked: no (run_id, step, split, metric) key twice, no artifact row twice, and a trial seen `completed` keeps
exactly its rows and row. A last driver then runs the sweep to its end: every trial completed, none `running`,
no Optuna trial left RUNNING.

Tiny trials (walkback on toy2d:swissroll, 60 updates) on a one-node Ray cluster of 2 CPUs; slow (minutes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from raygen.results import read_artifacts, read_metrics, read_runs

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = {
    "train.steps": 60, "train.batch_size": 64, "train.log_every": 10, "train.eval_every": 20,
    "train.checkpoint_every": 20, "train.eval_examples": 64, "train.progress": False,
    "algo.walkback_steps": 2, "algo.net.hidden": [16], "algo.reversibility_steps": 0,
    "algo.k_mode": "fixed",  # fixed trajectories: the evaluations fall on the steps the test expects
    "eval.test_examples": 50, "eval.train_examples": 20, "eval.repeats": 1, "eval.likelihood_samples": 2,
    "eval.parzen": False,
}
SPEC = {
    "name": "kill", "algorithm": "walkback", "dataset": "toy2d:swissroll", "fixed": TINY,
    "metric": {"name": "valid/lower_bound", "goal": "maximize"}, "method": "tpe", "seed": 0,
    "run_cap": 9, "max_concurrent": 2, "resources": {"cpu": 1},
    "parameters": {"train.lr": {"min": 1.0e-4, "max": 3.0e-3, "log": True}},
}
# When each driver is killed: after a trial completes / starts / checkpoints, or N seconds after its start.
KILLS = ["complete", 4.0, "start", "complete", "checkpoint", 7.0, "complete", 2.0, "start", "complete",
         "checkpoint", "complete"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": _free_port()})
    c.wait_for_nodes()
    ray.init(address=c.address)
    yield c
    ray.shutdown()
    c.shutdown()


def _wait(predicate, proc: subprocess.Popen | None = None, timeout: float = 600.0, every: float = 0.005):
    """Poll until `predicate()`; None when the driver exited first (the sweep finished)."""
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(every)
    raise AssertionError("condition not reached (a hang, not a timing check)")


def _runs(results: Path) -> pd.DataFrame:
    runs = read_runs(results)
    return runs if not runs.empty else pd.DataFrame(columns=["run_id", "status"])


def _trigger(kind, results: Path, proc: subprocess.Popen):
    if isinstance(kind, float):
        end = time.time() + kind
        while time.time() < end and proc.poll() is None:
            time.sleep(0.01)
        return True
    runs = _runs(results)
    if kind == "complete":
        done = set(runs.loc[runs["status"] == "completed", "run_id"])
        return _wait(lambda: set(_runs(results).query("status == 'completed'")["run_id"]) - done, proc)
    if kind == "start":
        seen = set(runs["run_id"])
        return _wait(lambda: set(_runs(results)["run_id"]) - seen, proc)
    arts = read_artifacts(results)
    before = len(arts[arts["name"] == "checkpoint.pt"]) if not arts.empty else 0

    def more():
        a = read_artifacts(results)
        return not a.empty and len(a[a["name"] == "checkpoint.pt"]) > before

    return _wait(more, proc)


def _check(results: Path, snapshots: dict[str, object]) -> None:
    metrics = read_metrics(results)
    dup = metrics[metrics.duplicated(["run_id", "step", "split", "metric"], keep=False)]
    assert dup.empty, dup.sort_values(["run_id", "step", "split", "metric"]).to_string()
    arts = read_artifacts(results)
    if not arts.empty:
        dup = arts[arts.duplicated(["run_id", "step", "name"], keep=False)]
        assert dup.empty, dup.to_string()
    runs = _runs(results)
    for row in runs[runs["status"] == "completed"].to_dict("records"):
        mine = metrics[metrics["run_id"] == row["run_id"]]
        snapshot = (sorted(zip(mine["step"], mine["split"], mine["metric"], mine["value"])), row["started_at"],
                    row["ended_at"], row["steps"])
        if row["run_id"] in snapshots:
            assert snapshots[row["run_id"]] == snapshot, f"completed trial {row['run_id']} was run again"
        snapshots[row["run_id"]] = snapshot


def _driver(spec_file: Path, results: Path, address: str, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - the child holds it; closed when the test process reaps it
    return subprocess.Popen([sys.executable, "-m", "raygen.cli", "sweep", str(spec_file), "--results", str(results),
                             "--address", address], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})


def test_driver_killed_at_any_instant_then_resumed_keeps_the_store_exact(cluster, tmp_path):
    spec_file = tmp_path / "kill.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    results = tmp_path / "results"
    snapshots: dict[str, object] = {}
    kills = 0
    for i, kind in enumerate(KILLS):
        proc = _driver(spec_file, results, cluster.address, tmp_path / f"driver-{i}.log")
        fired = _trigger(kind, results, proc)
        if proc.poll() is not None:  # the sweep ended before this kill: the rest is the final check
            assert proc.returncode == 0, (tmp_path / f"driver-{i}.log").read_text()[-3000:]
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1 if fired else 0
        # The dead driver's trial actors die with it; wait for them before anyone reads or resumes the store.
        _wait(lambda: not [a for a in list_actors(filters=[("state", "=", "ALIVE")])], timeout=300, every=0.5)
        _check(results, snapshots)
    assert kills >= 6, f"only {kills} drivers were killed before the sweep finished"

    final = _driver(spec_file, results, cluster.address, tmp_path / "driver-final.log")
    final.wait(timeout=900)
    log = (tmp_path / "driver-final.log").read_text()
    assert final.returncode == 0, log[-3000:]
    _check(results, snapshots)
    runs = _runs(results)
    abandoned = runs["error"].fillna("").str.startswith("abandoned")
    assert not (runs["status"] == "running").any(), runs[["run_id", "status", "error"]]
    done = runs[~abandoned]
    assert (done["status"] == "completed").sum() == SPEC["run_cap"], runs[["run_id", "status", "error"]].to_string()
    assert (done["steps"] == 60).all()
    metrics = read_metrics(results)
    for run_id in done["run_id"]:
        mine = metrics[metrics["run_id"] == run_id]
        assert {"test", "train_eval", "valid", "train"} <= set(mine["split"]), run_id
        assert sorted(mine.loc[mine["split"] == "valid", "step"].unique()) == [20, 40, 60]
    import optuna

    study = optuna.load_study(study_name="kill", storage=f"sqlite:///{results.resolve() / 'optuna.db'}")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == SPEC["run_cap"]
