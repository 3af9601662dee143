"""A local run SIGKILLed at several points: `raygen runs` shows it lost once its heartbeat is stale, `--repair`
marks it failed for good, and `raygen train --resume` completes it under the same run id with no key
(run_id, step, split, metric) stored twice and no logged step missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from raygen.cli import app
from raygen.lifecycle import effective_status
from raygen.results import read_artifacts, read_metrics, read_runs

REPO = Path(__file__).resolve().parents[1]
STEPS, LOG_EVERY = 120, 10

SLOW = '''
import time
from tests.toy_algorithm import MeanFit

class SlowFit(MeanFit):
    """MeanFit slowed down so that a kill lands inside training or inside the final evaluation."""
    name = "slowfit"

    def train_step(self, batch):
        time.sleep(0.02)
        return super().train_step(batch)

    def evaluate(self, data, split, *, full, generator):
        if full:
            time.sleep(1.0)
        return super().evaluate(data, split, full=full, generator=generator)
'''
LAUNCH = '''
import sys
from raygen import algorithms
algorithms._ALGORITHMS["slowfit"] = "slowfit:SlowFit"
from raygen.cli import app
app(sys.argv[1:], prog_name="raygen")
'''
ARGS = ["--dataset", "toy2d:circle", "--steps", str(STEPS), "--device", "cpu", "data.toy_samples=200",
        "train.batch_size=20", f"train.log_every={LOG_EVERY}", "train.eval_every=20", "train.checkpoint_every=30",
        "eval.parzen_samples=50", "eval.test_examples=50", "eval.train_examples=50"]


@pytest.fixture()
def slowfit(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "slowfit.py").write_text(SLOW)
    (code / "launch.py").write_text(LAUNCH)
    monkeypatch.syspath_prepend(str(code))
    from raygen import algorithms

    monkeypatch.setitem(algorithms._ALGORITHMS, "slowfit", "slowfit:SlowFit")
    return code


def _wait(condition, what: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout  # a safety net against a hung test, not a speed requirement
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def _progress(store: Path) -> tuple[str | None, int, bool]:
    """(run id, highest training step stored, whether the final training report is stored)."""
    if not (store / "runs").is_dir() or not any((store / "runs").glob("*.parquet")):
        return None, -1, False
    run_id = read_runs(store).iloc[0].run_id
    metrics = read_metrics(store)
    top = int(metrics["step"].max()) if len(metrics) else -1
    return run_id, top, top >= STEPS


def _killed_run(code: Path, store: Path, point: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAYGEN_HEARTBEAT_S": "0.1",
           "PYTHONPATH": os.pathsep.join([str(code), str(REPO)])}
    proc = subprocess.Popen([sys.executable, str(code / "launch.py"), "train", "slowfit", *ARGS, "--results", store],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if point == "running":  # row written, before its first checkpoint
            _wait(lambda: _progress(store)[0] is not None, "the run row")
        elif point == "training":  # between two checkpoints
            _wait(lambda: _progress(store)[1] >= 70, "update 70")
        else:  # the final training report is stored: the final evaluation (seconds long) is under way
            _wait(lambda: _progress(store)[2], "the end of training")
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    run_id = _progress(store)[0]
    assert run_id is not None
    return run_id


def _shown_status(store: Path, run_id: str, *options) -> str:
    res = CliRunner().invoke(app, ["runs", "--results", str(store), *options])
    assert res.exit_code == 0, res.output
    rows = [[c for c in (line.split("│") if "│" in line else line.split()) if c.strip()]
            for line in res.output.splitlines()]
    header = next(r for r in rows if r and r[0].strip() == "run_id")
    status = [c.strip() for c in header].index("status")
    for cells in rows:
        if cells and cells[0].strip() == run_id:
            return cells[status].strip()
    raise AssertionError(f"{run_id} not listed:\n{res.output}")


@pytest.mark.parametrize("point", ["running", "training", "final evaluation"])
def test_a_killed_run_is_shown_lost_and_resumes_under_its_id(slowfit, tmp_path, monkeypatch, point):
    store = tmp_path / "store"
    run_id = _killed_run(slowfit, store, point)
    row = read_runs(store).iloc[0]
    assert row.status == "running"  # what the killed process left; readers must not believe it

    monkeypatch.setenv("RAYGEN_HEARTBEAT_S", "0.1")  # as the killed run had: a 1 s threshold must exceed it
    monkeypatch.setenv("RAYGEN_LOST_AFTER_S", "1")
    assert _shown_status(store, run_id, "--lost-after", "3600") == "running"  # recent enough to be alive
    _wait(lambda: (effective_status(read_runs(store)) == "lost").all(), "the heartbeat to go stale")
    assert _shown_status(store, run_id) == "lost"

    if point == "training":  # repair marks it for good; a failed run resumes too
        res = CliRunner().invoke(app, ["runs", "--repair", "--results", str(store)])
        assert res.exit_code == 0, res.output
        row = read_runs(store).iloc[0]
        assert row.status == "failed" and row.error.startswith("lost: no heartbeat since")
        assert not list((store / "runs").glob(".*.reserve"))  # the killed run's disk reserve is freed
        assert _shown_status(store, run_id) == "failed"

    res = CliRunner().invoke(app, ["train", "--resume", run_id[:12], "--results", str(store)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == run_id

    runs = read_runs(store)
    assert len(runs) == 1 and runs.iloc[0].status == "completed" and runs.iloc[0].steps == STEPS
    metrics = read_metrics(store)
    assert set(metrics["run_id"]) == {run_id}
    keys = ["run_id", "step", "split", "metric"]
    assert not metrics.duplicated(keys).any(), metrics[metrics.duplicated(keys, keep=False)].sort_values(keys)
    trained = metrics[(metrics["split"] == "train") & (metrics["metric"] == "nll")]
    assert sorted(trained["step"]) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))  # none lost, none twice
    assert set(metrics[metrics["split"] == "test"]["step"]) == {STEPS}
    arts = read_artifacts(store)
    assert not arts.duplicated(["run_id", "step", "name"]).any()
    assert runs.iloc[0]["started_at"] == pd.Timestamp(row["started_at"])  # the same run, continued
    assert not list((store / "runs").glob(".*.reserve"))

    again = CliRunner().invoke(app, ["train", "--resume", run_id, "--results", str(store)])
    assert again.exit_code == 2 and "is completed" in again.output
