"""Ray Train and Ray Tune on a simulated multi-node cluster (ray.cluster_utils.Cluster, one machine).

One module-scoped cluster: a head with no CPUs (so nothing runs on it) and three 1-CPU nodes. Every test
uses a tiny walkback model on toy2d:swissroll. The cluster and every Ray process it started are shut down
at the end of the module.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import yaml
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from raygen.config import build_config
from raygen.engine.local import run_local
from raygen.engine.ray_train import run_distributed
from raygen.engine.sweep import run_sweep
from raygen.engine.sweep_spec import SpecError, load_spec, resolve
from raygen.results import read_artifacts, read_metrics, read_runs

pytestmark = pytest.mark.ray

TINY = {
    # a fixed trajectory length: the toy preset's Algorithm 1 n ~ U{0..5} extra steps move the report steps
    "algo.k_mode": "fixed",
    "train.batch_size": 64,
    "train.log_every": 10,
    "train.eval_every": 30,
    "train.checkpoint_every": 30,
    "train.eval_examples": 64,
    "train.progress": False,
    "algo.walkback_steps": 2,
    "algo.net.hidden": [16],
    "algo.reversibility_steps": 0,
    "eval.test_examples": 50,
    "eval.train_examples": 20,
    "eval.repeats": 1,
    "eval.likelihood_samples": 2,
    "eval.parzen": False,
}


def tiny_config(**overrides):
    return build_config(algorithm="walkback", dataset="toy2d:swissroll", overrides={**TINY, **overrides})


def sweep_spec(name: str, **changes) -> dict:
    spec = {
        "name": name,
        "algorithm": "walkback",
        "dataset": "toy2d:swissroll",
        "fixed": {**TINY, "train.steps": 60},
        "metric": {"name": "valid/lower_bound", "goal": "maximize"},
        "method": "random",
        "seed": 0,
        "run_cap": 4,
        "max_concurrent": 2,
        "resources": {"cpu": 1},
        "parameters": {"train.lr": {"min": 1.0e-4, "max": 3.0e-3, "log": True}},
    }
    spec.update(changes)
    return spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1",
                        "dashboard_port": free_port()},
    )
    for _ in range(3):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address)
    yield c
    ray.shutdown()
    c.shutdown()


def unique_metric_rows(metrics: pd.DataFrame, final_step: int | None = None) -> bool:
    """No (run, step, split, metric) twice (the final evaluation of the training split is train_eval/, so
    not even the final step repeats a key)."""
    return not metrics.duplicated(["run_id", "step", "split", "metric"]).any()


def wait_for(predicate, timeout: float = 300.0, every: float = 0.2):
    start = time.time()
    while time.time() - start < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached")  # a hang, not a timing assertion on the behaviour


# ---------------------------------------------------------------------------------------------- Ray Train


def test_one_worker_trainer_matches_in_process_training(cluster, tmp_path):
    """The loop runs unchanged inside a Ray Train worker: same metrics as in-process (CPU, same seed)."""
    import torch

    cfg = tiny_config(**{"train.steps": 60, "eval.final": False})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 1-CPU Ray worker runs torch on one thread
    try:
        run_local(cfg, tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    run_id = run_distributed(cfg, tmp_path / "ray", workers=1)
    local = read_metrics(tmp_path / "local").sort_values(["step", "split", "metric"]).reset_index(drop=True)
    remote = read_metrics(tmp_path / "ray").sort_values(["step", "split", "metric"]).reset_index(drop=True)
    assert len(local) > 10
    assert local[["step", "split", "metric"]].equals(remote[["step", "split", "metric"]])
    np.testing.assert_allclose(remote["value"], local["value"], rtol=1e-5, atol=1e-6)
    (row,) = read_runs(tmp_path / "ray").itertuples()
    assert (row.run_id, row.status, row.workers, row.steps) == (run_id, "completed", 1, 60)
    assert json.loads(row.resources_json)["workers"] == 1


def test_two_worker_run_resumes_from_its_checkpoint_after_losing_a_node(cluster, tmp_path):
    steps = 600
    cfg = tiny_config(**{"train.steps": steps, "train.log_every": 50, "train.eval_every": 300,
                         "train.checkpoint_every": 100})
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["run_id"] = run_distributed(cfg, tmp_path, workers=2, max_failures=2)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = err

    thread = threading.Thread(target=train)
    thread.start()

    def checkpoints() -> list[int]:
        arts = read_artifacts(tmp_path)
        return sorted(arts[arts["kind"] == "checkpoint"]["step"]) if not arts.empty else []

    seen = wait_for(lambda: (c := checkpoints()) and len(c) >= 2 and c)
    assert seen[-1] < steps, "the run finished before the node could be removed; make it longer"
    workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    worker_nodes = {w.node_id for w in workers}
    victim = next(n for n in cluster.list_all_nodes() if n.node_id in worker_nodes and n is not cluster.head_node)
    cluster.remove_node(victim, allow_graceful=False)
    killed_at = pd.Timestamp.now(tz="UTC")  # the restarted workers need seconds to start: all they log is later
    thread.join()
    cluster.add_node(num_cpus=1)  # give the next tests their three nodes back
    cluster.wait_for_nodes()

    assert "error" not in outcome, outcome.get("error")
    runs = read_runs(tmp_path)
    assert len(runs) == 1
    row = runs.iloc[0]
    assert (row["status"], row["steps"], row["workers"]) == ("completed", steps, 2)
    assert pd.notna(row["final.test/lower_bound"])  # the final evaluation ran after the restart
    metrics = read_metrics(tmp_path)
    assert unique_metric_rows(metrics, steps)
    assert sorted(metrics[(metrics["split"] == "train") & (metrics["metric"] == "loss")]["step"]) == list(
        range(50, steps + 1, 50))
    # Resumed, not restarted: the rows up to the checkpoint it resumed from were kept from before the loss, and
    # everything after that checkpoint was dropped and logged again afterwards. Training may run on past the
    # checkpoints seen above before the node is gone, so the resume point is only known to be at or after
    # seen[-2] (registered with Ray by then); a restart from scratch would have re-logged every step.
    before, after = metrics[metrics["time"] < killed_at], metrics[metrics["time"] > killed_at]
    assert len(before) and len(after)
    assert before["step"].max() < after["step"].min(), "rows from before the loss survived past the resume point"
    assert after["step"].min() > seen[-2], "the run restarted from scratch instead of resuming"


# ---------------------------------------------------------------------------------------------- Ray Tune


def test_sweep_spreads_over_nodes_and_stores_every_trial_once(cluster, tmp_path):
    spec = resolve(sweep_spec("spread"))
    outcome = run_sweep(spec, tmp_path)
    assert len(outcome.trials) == 4 and outcome.statuses == {"completed": 4}
    runs = read_runs(tmp_path)
    assert len(runs) == 4 and runs["run_id"].is_unique and runs["trial_id"].is_unique
    assert (runs["sweep_id"] == "spread").all()
    assert set(runs["run_id"]) == {f"spread-{t}" for t in runs["trial_id"]}
    nodes = {json.loads(r)["node_id"] for r in runs["resources_json"]}
    assert len(nodes) >= 2, "all trials ran on one node"
    assert cluster.head_node.node_id not in nodes
    params = [json.loads(p) for p in runs["params_json"]]
    assert all(1e-4 <= p["train.lr"] <= 3e-3 for p in params)
    assert [pytest.approx(p["train.lr"]) for p in params] == list(runs["config.train.lr"])
    assert unique_metric_rows(read_metrics(tmp_path), 60)
    stored = json.loads((tmp_path / "sweeps" / "spread.json").read_text())
    assert stored["metric"] == {"name": "valid/lower_bound", "goal": "maximize"}
    assert stored["parameters"]["train.lr"]["log"] is True
    best = runs.loc[runs["final.valid/lower_bound"].idxmax()]
    assert outcome.best_trial["run_id"] == best["run_id"]
    assert outcome.best_trial["value"] == best["final.valid/lower_bound"]


def test_diverging_trial_fails_once_with_its_reason_and_the_sweep_goes_on(cluster, tmp_path):
    # lr = 10 makes this tiny walkback diverge at its first updates (a NaN loss, or a noise scale of 0).
    # from the network's own initial noise (init_noise=null): the toy preset's small one does not diverge there
    spec = resolve(sweep_spec("nan", method="grid", run_cap=None, max_failures=2, fixed={**TINY, "train.steps": 60,
                                                                                   "algo.init_noise": None},
                              parameters={"train.lr": {"values": [1.0e-3, 10.0]}}))
    outcome = run_sweep(spec, tmp_path)
    runs = read_runs(tmp_path).set_index(read_runs(tmp_path)["params_json"].map(
        lambda p: json.loads(p)["train.lr"]))
    assert len(outcome.trials) == 2 and len(runs) == 2
    assert runs.loc[1.0e-3, "status"] == "completed"
    bad = runs.loc[10.0]
    assert bad["status"] == "failed" and bad["error"].startswith("DivergenceError: ")
    # Never retried: Tune saw the trial end by itself, not an error it would retry max_failures times.
    assert not outcome.result_grid.errors
    import optuna

    study = optuna.load_study(study_name="nan", storage=outcome.optuna_storage)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL"]


def test_trial_stopped_by_asha_is_stored_as_stopped_early(cluster, tmp_path):
    # Trials in grid order, one at a time: the first (a working lr) sets the rung at update 30; the second
    # (lr 1e-7, which cannot learn in 30 updates) is below the rung's cutoff and ASHA stops it there.
    spec = resolve(sweep_spec(
        "asha", method="grid", run_cap=None, max_concurrent=1,
        fixed={**TINY, "train.steps": 90},
        parameters={"train.lr": {"values": [3.0e-3, 1.0e-7]}},
        early_terminate={"type": "asha", "grace_period": 30, "reduction_factor": 2}))
    outcome = run_sweep(spec, tmp_path)
    assert outcome.statuses == {"completed": 1, "stopped": 1}
    import optuna  # the stopped trial is PRUNED in the study, the finished one COMPLETE

    study = optuna.load_study(study_name="asha", storage=outcome.optuna_storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    assert outcome.best_trial["params"]["train.lr"] == 3.0e-3
    runs = read_runs(tmp_path)
    runs = runs.set_index(runs["params_json"].map(lambda p: json.loads(p)["train.lr"]))
    good, bad = runs.loc[3.0e-3], runs.loc[1.0e-7]
    assert (good["status"], good["stopped_early"], good["steps"]) == ("completed", False, 90)
    assert (bad["status"], bad["stopped_early"]) == ("stopped", True)
    assert bad["error"] == "stopped early by the scheduler" and bad["steps"] < 90
    assert bad["final.valid/lower_bound"] < good["final.valid/lower_bound"]


def test_interrupted_sweep_resumes_to_exactly_its_trials(cluster, tmp_path):
    spec_file = tmp_path / "resume.yaml"
    spec_file.write_text(yaml.safe_dump(sweep_spec(
        "resume", run_cap=4, max_concurrent=1, method="tpe",
        fixed={**TINY, "train.steps": 300, "train.log_every": 50, "train.eval_every": 100,
               "train.checkpoint_every": 100})))
    results = tmp_path / "results"
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 - closed in the finally below
    driver = subprocess.Popen(
        [sys.executable, "-m", "raygen.cli", "sweep", str(spec_file), "--results", str(results),
         "--address", cluster.address],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        def progress():
            runs = read_runs(results)
            if runs.empty:
                return False
            return (runs["status"] == "completed").sum() >= 1 and (runs["status"] == "running").sum() >= 1
        wait_for(progress)
        driver.send_signal(signal.SIGINT)  # Ctrl-C
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        log.close()
    before = read_runs(results)
    assert (before["status"] == "completed").sum() < 4, "the sweep finished before it was interrupted"
    first = set(before["run_id"])

    outcome = run_sweep(load_spec(spec_file), results, resume=True)
    assert len(outcome.trials) == 4
    runs = read_runs(results)
    assert len(runs) == 4 and runs["run_id"].is_unique
    assert first <= set(runs["run_id"])  # the interrupted trials kept their ids: no duplicates
    assert (runs["status"] == "completed").all(), runs[["run_id", "status", "error"]]
    assert (runs["steps"] == 300).all()
    assert unique_metric_rows(read_metrics(results), 300)
    import optuna  # the study agrees: the interrupted trials were not told FAIL before they resumed

    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{results / 'optuna.db'}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 4

    # Once finished, running it again resumes nothing, changes nothing, and says how to add trials.
    again = run_sweep(load_spec(spec_file), results)
    assert len(again.trials) == 4 and len(read_runs(results)) == 4
    assert any("add trials with --more" in note for note in again.notes)


def test_multi_objective_sweep_of_two_worker_trials_keeps_its_optuna_study(cluster, tmp_path):
    """workers: 2 nests a TorchTrainer in each trial; two objectives go to NSGA-II; the study is in SQLite."""
    import optuna

    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    spec = resolve(sweep_spec(
        "nested", run_cap=2, max_concurrent=1, method="nsga2", optuna_storage=db,
        resources={"cpu": 1, "workers": 2, "driver_cpu": 0.1},
        metric=None, metrics=[{"name": "valid/lower_bound", "goal": "maximize"},
                              {"name": "test/lower_bound", "goal": "maximize"}]))
    outcome = run_sweep(spec, tmp_path)
    assert outcome.statuses == {"completed": 2}
    runs = read_runs(tmp_path)
    assert (runs["workers"] == 2).all() and (runs["steps"] == 60).all()
    assert set(runs["run_id"]) == {f"nested-{t}" for t in runs["trial_id"]}
    study = optuna.load_study(study_name="nested", storage=db)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MAXIMIZE"]
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 2
    # The values Optuna was told are the trials' final metrics in the store (forwarded from rank 0).
    told = sorted(tuple(t.values) for t in trials)
    stored = sorted(zip(runs["final.valid/lower_bound"], runs["final.test/lower_bound"]))
    np.testing.assert_allclose(told, stored, rtol=1e-9)
    assert sorted(t.params["train.lr"] for t in trials) == pytest.approx(
        sorted(json.loads(p)["train.lr"] for p in runs["params_json"]))


def test_changed_spec_is_not_resumed(cluster, tmp_path):
    spec = resolve(sweep_spec("changed", run_cap=1, max_concurrent=1))
    run_sweep(spec, tmp_path)
    changed = copy.deepcopy(sweep_spec("changed", run_cap=1, max_concurrent=1))
    changed["parameters"]["train.lr"]["max"] = 1.0e-2
    with pytest.raises(SpecError, match="already exists .* with a different spec"):
        run_sweep(resolve(changed), tmp_path)
    assert Path(tmp_path / "sweeps" / "changed.json").is_file()


def test_requests_the_cluster_cannot_place_are_refused_before_any_trial(cluster, tmp_path):
    # Three 1-CPU nodes and no GPU: a trial of 2 workers x 1 CPU + its driver fits across nodes; a GPU never.
    with pytest.raises(SpecError, match=r"resources: each trial of nogpu asks for CPU 1, GPU 0\.25.*no node has any GPU"):
        run_sweep(resolve(sweep_spec("nogpu", resources={"cpu": 1, "gpu": 0.25})), tmp_path)
    with pytest.raises(SpecError, match="short of CPU"):
        run_sweep(resolve(sweep_spec("wide", resources={"cpu": 1, "workers": 3, "driver_cpu": 0.5})), tmp_path)
    assert read_runs(tmp_path).empty


def test_python_entry_point_and_more_trials_continue_the_optuna_study(cluster, tmp_path):
    import optuna

    import raygen

    raw = sweep_spec("more", run_cap=2, max_concurrent=2, method="tpe")
    first = raygen.sweep(raw, results=tmp_path)
    assert len(first.trials) == 2 and first.statuses == {"completed": 2}
    assert len(first.result_grid) == 2 and first.best_trial["run_id"] in set(first.trials["run_id"])
    assert first.optuna_storage == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    again = raygen.sweep(raw, results=tmp_path, more=2)
    assert any("continuing the Optuna study of more (2 trials so far) with 2 more" in n for n in again.notes)
    assert len(again.trials) == 4 and again.statuses == {"completed": 4} and len(again.result_grid) == 2
    study = optuna.load_study(study_name="more", storage=again.optuna_storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    told = sorted(t.value for t in study.trials)
    np.testing.assert_allclose(told, sorted(again.trials["valid/lower_bound"]), rtol=1e-9)
    assert read_runs(tmp_path)["run_id"].is_unique
