"""Pieces of the Ray runners that need no Ray: rewinding a restarted run in the store, reopening a run row
from a driver, and the carry-forward of metrics. (The runners themselves: tests/test_ray_cluster.py.)"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from raygen.config import build_config
from raygen.engine.ray_train import LatestMetrics, mark_run, reopen_run, resume_step, run_status
from raygen.engine.sweep import MetricNameError, NonFiniteMetricError, _check_objectives
from raygen.results import RunRecorder, read_artifacts, read_metrics, read_runs


@pytest.fixture()
def config():
    return build_config(algorithm="walkback", dataset="toy2d:swissroll", overrides={"train.steps": 30})


def record(recorder: RunRecorder, steps) -> None:
    for step in steps:
        recorder.log(step, {"train/loss": 10.0 - step / 10, "valid/lower_bound": -float(step)})
        recorder.flush()
        recorder.save_file(step, "checkpoint.pt", "checkpoint", b"x")


def test_rewind_drops_rows_after_the_checkpoint_and_keeps_the_start(config, tmp_path):
    first = RunRecorder(tmp_path, config, run_id="sweep-a1", extra={"sweep_id": "sweep", "trial_id": "a1"})
    first.write_run("running")
    record(first, [10, 20, 30])
    other = RunRecorder(tmp_path, config, run_id="sweep-a1-x")  # an id that extends the first one
    record(other, [10, 20, 30])

    again = RunRecorder(tmp_path, config, run_id="sweep-a1", extra={"sweep_id": "sweep", "trial_id": "a1"})
    previous = again.rewind(20)  # the restarted attempt resumes from the checkpoint at update 20
    assert previous["status"] == "running"
    assert again.started_at == first.started_at
    assert again.steps == 20
    assert again.final == {"train/loss": 8.0, "valid/lower_bound": -20.0}
    record(again, [30])  # logged again by the restarted attempt
    again.write_run("completed")

    metrics = read_metrics(tmp_path)
    mine = metrics[metrics["run_id"] == "sweep-a1"]
    assert sorted(mine[mine["metric"] == "loss"]["step"]) == [10, 20, 30]
    assert not mine.duplicated(["step", "split", "metric"]).any()
    assert len(metrics[metrics["run_id"] == "sweep-a1-x"]) == 6  # untouched
    arts = read_artifacts(tmp_path)
    assert sorted(arts[arts["run_id"] == "sweep-a1"]["step"]) == [10, 20, 30]
    runs = read_runs(tmp_path).set_index("run_id")
    assert runs.loc["sweep-a1", "status"] == "completed"
    assert runs.loc["sweep-a1", "started_at"] == pd.Timestamp(first.started_at)


@pytest.mark.parametrize("how_it_died", ["repaired", "still_running"])
def test_a_restarted_run_counts_its_training_time_not_the_time_it_lay_dead(config, tmp_path, how_it_died):
    from datetime import timedelta

    from raygen.results.store import now

    first = RunRecorder(tmp_path, config, run_id="r")
    first.started_at = now() - timedelta(hours=2)  # trained for 60 s two hours ago, then was killed
    last_sign = first.started_at + timedelta(seconds=60)
    if how_it_died == "repaired":  # `raygen runs --repair`: failed, ended at its last sign of life
        first.write_run("failed", error="lost", ended_at=last_sign)
    else:  # a sweep driver died with it: the row still says running, its heartbeat is the last sign
        first.write_run("running")
        row = tmp_path / "runs" / "r.parquet"
        table = pd.read_parquet(row).assign(heartbeat_at=pd.Timestamp(last_sign))
        table.to_parquet(row)
    again = RunRecorder(tmp_path, config, run_id="r")
    again.rewind(0)
    again.write_run("completed")
    wall = read_runs(tmp_path).set_index("run_id").loc["r", "wall_time_s"]
    assert 60.0 <= wall < 60.0 + 600, wall  # the two hours dead are not counted (with them: 7 200 s)


def test_rewind_to_zero_restarts_and_a_new_run_has_no_previous_row(config, tmp_path):
    rec = RunRecorder(tmp_path, config, run_id="r")
    assert rec.rewind(0) is None
    rec.write_run("running")
    record(rec, [10, 20])
    assert RunRecorder(tmp_path, config, run_id="r").rewind(0)["run_id"] == "r"
    assert read_metrics(tmp_path).empty and read_artifacts(tmp_path).empty


def test_driver_marks_a_run_keeping_its_node_times_and_values(config, tmp_path):
    rec = RunRecorder(tmp_path, config, run_id="s-t1", extra={
        "sweep_id": "s", "trial_id": "t1", "params": {"train.lr": 1e-3}, "resources": {"cpu": 1.0},
        "workers": 2, "device": "cpu"})
    rec.node = "worker-7"
    rec.write_run("running")
    record(rec, [10])
    assert not mark_run(tmp_path, "s-t1", "stopped", stopped_early=True, only_if=("completed",))
    assert run_status(tmp_path, "s-t1") == ("running", None)
    assert mark_run(tmp_path, "s-t1", "stopped", error="stopped early by the scheduler", stopped_early=True,
                    only_if=("running",))
    row = read_runs(tmp_path).iloc[0]
    assert (row["status"], row["stopped_early"], row["node"], row["workers"]) == ("stopped", True, "worker-7", 2)
    assert json.loads(row["params_json"]) == {"train.lr": 1e-3}
    assert row["final.valid/lower_bound"] == -10.0 and row["steps"] == 10
    assert row["started_at"] == pd.Timestamp(rec.started_at)
    assert reopen_run(tmp_path, "absent") is None
    assert not mark_run(tmp_path, "absent", "failed")


def test_latest_metrics_and_objective_checks():
    latest = LatestMetrics()
    assert latest.update(10, {"train/loss": 2.0}) == {"train/loss": 2.0, "step": 10}
    assert latest.update(20, {"valid/nll": 1.5}) == {"train/loss": 2.0, "valid/nll": 1.5, "step": 20}
    _check_objectives(latest.values, ["valid/nll"])
    with pytest.raises(MetricNameError, match="never reported"):  # a name error, not a divergence
        _check_objectives(latest.values, ["test/nll"])
    latest.update(30, {"valid/nll": math.nan})
    with pytest.raises(NonFiniteMetricError, match="valid/nll=nan"):
        _check_objectives(latest.values, ["valid/nll"])
    assert resume_step(None) == 0 and resume_step({"algorithm": {"updates": 40}}) == 40
