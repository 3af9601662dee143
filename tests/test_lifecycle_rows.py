"""What `raygen runs` and `repair` say about a run's row, and who may train a run: a live run's progress before its
first heartbeat, one rule for the lost threshold, a repaired run's end time, and one trainer per run."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
from typer.testing import CliRunner

from raygen.cli import app
from raygen.results import read_metrics, read_runs

TOY = ["--dataset", "toy2d:circle", "data.toy_samples=200", "train.batch_size=20", "eval.final=false"]


def _recorder(algorithm, root, **kw):
    from raygen.config import build_config
    from raygen.results import RunRecorder

    return RunRecorder(root, build_config(algorithm=algorithm, dataset="toy2d:circle"), **kw)


def _cells(output: str, run_id: str) -> dict[str, str]:
    header, *lines = output.splitlines()  # not a terminal: plain columns
    for line in lines:
        if line.split()[0] == run_id:
            return dict(zip(header.split(), line.split()))
    raise AssertionError(f"{run_id} not listed:\n{output}")


def test_runs_shows_a_live_runs_latest_metric_step_before_its_first_heartbeat(toy_algorithm, tmp_path):
    rec = _recorder(toy_algorithm, tmp_path)
    rec.write_run("running")  # the row at the start: update 0; the heartbeat thread rewrites it only after 30 s
    rec.log(40, {"train/loss": 1.0})
    rec.flush()  # what every report of the loop does
    assert read_runs(tmp_path).iloc[0].heartbeat_step == 0
    res = CliRunner().invoke(app, ["runs", "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert _cells(res.output, rec.run_id)["step"] == "40"


def test_the_lost_threshold_from_the_environment_must_exceed_the_heartbeat_interval(toy_algorithm, tmp_path,
                                                                                      monkeypatch):
    from raygen.lifecycle import lost_after

    rec = _recorder(toy_algorithm, tmp_path)
    rec.write_run("running")  # alive: its next heartbeat is not due for 30 s
    monkeypatch.setenv("RAYGEN_LOST_AFTER_S", "5")
    res = CliRunner().invoke(app, ["runs", "--repair", "--results", str(tmp_path)])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "RAYGEN_LOST_AFTER_S" in lines[0] and "heartbeat interval (30 s" in lines[0]
    assert read_runs(tmp_path).iloc[0].status == "running"  # nothing repaired
    res = CliRunner().invoke(app, ["train", "--resume", rec.run_id, "--results", str(tmp_path)])
    assert res.exit_code == 2 and "RAYGEN_LOST_AFTER_S" in res.output, res.output  # not resumed as lost
    monkeypatch.setenv("RAYGEN_HEARTBEAT_S", "1")
    assert lost_after() == 5.0  # the same threshold, now longer than the interval


def test_a_repaired_run_ended_at_its_last_sign_of_life_not_at_the_repair(toy_algorithm, tmp_path, monkeypatch):
    from raygen.lifecycle import repair
    from raygen.results import store

    real_now = store.now
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    clock = iter(start + timedelta(seconds=s) for s in range(0, 10_000, 10))
    monkeypatch.setattr(store, "now", lambda: next(clock))  # the run lived two hours ago, 10 s per clock read
    rec = _recorder(toy_algorithm, tmp_path)
    rec.write_run("running")
    rec.log(5, {"train/loss": 1.0})
    rec.flush()
    monkeypatch.setattr(store, "now", real_now)
    before = read_runs(tmp_path).iloc[0]
    last_metric = pd.Timestamp(read_metrics(tmp_path)["time"].max())
    assert last_metric > pd.Timestamp(before.heartbeat_at)  # its metric row came after its only heartbeat

    assert repair(tmp_path) == [rec.run_id]  # default threshold: 600 s
    row = read_runs(tmp_path).iloc[0]
    assert row.status == "failed" and row.error.startswith("lost: no heartbeat since")
    assert "marked failed by repair at" in row.error
    assert pd.Timestamp(row.ended_at) == last_metric  # not the repair's time, two hours later
    assert row.wall_time_s == (last_metric - pd.Timestamp(before.started_at)).total_seconds()
    # the repair is no sign of the run's life: its last real heartbeat stays in the row (it was overwritten by
    # the end time)
    assert pd.Timestamp(row.heartbeat_at) == pd.Timestamp(before.heartbeat_at)
    assert row.heartbeat_step == before.heartbeat_step == 0


def test_one_run_row_reader_skips_an_unreadable_row_with_a_warning(toy_algorithm, tmp_path, caplog):
    """raygen.lifecycle.run_row (drivers, resume, repair) is the store's reader: a missing or unreadable row is
    None, the unreadable one named in a warning (run_row raised ArrowInvalid where the writers skipped it)."""
    from raygen import lifecycle
    from raygen.results import store

    assert lifecycle.run_row is store.run_row
    rec = _recorder(toy_algorithm, tmp_path)
    rec.write_run("running")
    assert lifecycle.run_row(tmp_path, rec.run_id)["status"] == "running"
    assert lifecycle.run_row(tmp_path, "no-such-run") is None
    rec.row_path.write_bytes(rec.row_path.read_bytes()[:40])  # truncated
    assert lifecycle.run_row(tmp_path, rec.run_id) is None
    assert lifecycle.run_status(tmp_path, rec.run_id) == (None, None)
    assert str(rec.row_path) in caplog.text and "unreadable" in caplog.text


def test_two_trainers_of_one_run_are_refused(toy_algorithm, tmp_path):
    from raygen.lifecycle import claim, mark_run

    res = CliRunner().invoke(app, ["train", toy_algorithm, *TOY, "--steps", "4", "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    run_id = res.output.strip().splitlines()[-1]
    assert mark_run(tmp_path, run_id, "stopped", error="interrupted by the user")  # resumable
    with claim(tmp_path, run_id) as mine:  # another `train --resume` of it (flock: per open file, so in-process)
        assert mine
        res = CliRunner().invoke(app, ["train", "--resume", run_id, "--results", str(tmp_path)])
        assert res.exit_code == 2 and "being trained by another process" in res.output, res.output
        assert read_runs(tmp_path).iloc[0].status == "stopped"  # untouched
    res = CliRunner().invoke(app, ["train", "--resume", run_id, "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert read_runs(tmp_path).iloc[0].status == "completed"
