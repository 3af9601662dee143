"""`raygen runs --lost-after` must not call a live run lost: a threshold within the heartbeat interval made
`--repair` mark a training run failed, after which `train --resume` started a second writer on it and the store
held 29 (run_id, step, split, metric) keys twice with different values (found by fault injection)."""

from __future__ import annotations

from typer.testing import CliRunner

from raygen.cli import app
from raygen.results import read_runs


def test_lost_after_within_the_heartbeat_interval_is_refused_and_repairs_nothing(toy_algorithm, tmp_path,
                                                                                monkeypatch):
    from raygen.config import build_config
    from raygen.results import RunRecorder

    monkeypatch.setenv("RAYGEN_HEARTBEAT_S", "3600")  # a live run rewrites its row only once an hour
    rec = RunRecorder(tmp_path, build_config(algorithm=toy_algorithm, dataset="toy2d:circle"))
    rec.write_run("running")  # alive: its next heartbeat is not due yet
    res = CliRunner().invoke(app, ["runs", "--repair", "--lost-after", "0.001", "--results", str(tmp_path)])
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert "--lost-after" in lines[0] and "heartbeat interval" in lines[0]
    assert read_runs(tmp_path).iloc[0].status == "running"

    res = CliRunner().invoke(app, ["runs", "--lost-after", "7200", "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "running" in res.output and "lost" not in res.output
