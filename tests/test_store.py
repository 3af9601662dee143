"""The Parquet results store: schema, atomic files, readers without raygen."""

import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from raygen.config import build_config
from raygen.engine.local import run_local
from raygen.results import RunRecorder, find_run, read_artifacts, read_metrics, read_runs

SMALL = {"eval.parzen_samples": 100, "eval.test_examples": 100, "data.toy_samples": 300, "train.batch_size": 50,
         "train.steps": 20, "train.log_every": 10, "train.eval_every": 10, "train.checkpoint_every": 10}


def _run(tmp_path, name, **overrides):
    cfg = build_config(algorithm=name, dataset="toy2d:circle", overrides={**SMALL, **overrides})
    return cfg, run_local(cfg, tmp_path, progress=False)


def test_run_row_metrics_and_artifacts(toy_algorithm, tmp_path):
    cfg, run_id = _run(tmp_path, toy_algorithm)
    runs = read_runs(tmp_path)
    assert list(runs["run_id"]) == [run_id]
    row = runs.iloc[0]
    assert (row.algorithm, row.dataset, row.status, row.steps, row.seed) == ("meanfit", "toy2d:circle", "completed", 20, 0)
    assert row["config.train.steps"] == 20.0 and row["config.algo.updates_per_step"] == 1.0
    assert json.loads(row.config_json) == cfg.to_dict()
    assert "torch" in json.loads(row.versions_json)
    assert row.wall_time_s >= 0 and row.ended_at >= row.started_at
    metrics = read_metrics(tmp_path)
    train_nll = metrics[(metrics.split == "train") & (metrics.metric == "nll")].sort_values("step")
    # Running training averages at 10 and 20; the final evaluation of the train split has its own split name.
    assert list(train_nll.step) == [10, 20]
    assert row["final.train/nll"] == pytest.approx(train_nll.value.iloc[-1])
    eval_nll = metrics[(metrics.split == "train_eval") & (metrics.metric == "nll")]
    assert list(eval_nll.step) == [20] and row["final.train_eval/nll"] == eval_nll.value.iloc[0]
    assert not metrics.duplicated(["run_id", "step", "split", "metric"]).any()
    assert row["final.test/parzen_sigma"] in cfg.eval.parzen_sigmas
    artifacts = read_artifacts(tmp_path)
    assert set(artifacts.kind) == {"checkpoint", "text"}
    for path in artifacts.path:
        assert (tmp_path / path).is_file()


def test_failed_run_is_recorded_with_reason_and_no_temp_files(toy_algorithm, tmp_path):
    from raygen.algorithms.base import NonFiniteLossError

    with pytest.raises(NonFiniteLossError):
        _run(tmp_path, toy_algorithm, **{"algo.explode_at": 12})
    row = read_runs(tmp_path).iloc[0]
    assert row.status == "failed" and "NonFiniteLossError" in row.error and "nan" in row.error
    assert read_metrics(tmp_path).step.max() == 10  # what was reported before the failure is kept
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written file left behind
    assert not list(tmp_path.glob("*/.pending/*.parquet"))  # the ended run's pieces are folded


def test_new_runs_never_rewrite_old_files_and_mixed_types_concat(toy_algorithm, tmp_path):
    _, first = _run(tmp_path, toy_algorithm, **{"train.lr": 1})
    row_file = tmp_path / "runs" / f"{first}.parquet"
    before, rows_before = row_file.stat().st_mtime_ns, read_metrics(tmp_path)
    _, second = _run(tmp_path, toy_algorithm, **{"train.lr": 0.001, "seed": 3})
    assert row_file.stat().st_mtime_ns == before  # another run's row is never rewritten
    # its metric rows went into the same segment, rewritten with them: every earlier row is still there
    after = read_metrics(tmp_path)
    pd.testing.assert_frame_equal(after[after.run_id == first].reset_index(drop=True), rows_before)
    runs = read_runs(tmp_path)
    assert set(runs.run_id) == {first, second}
    assert runs["config.train.lr"].dtype == float
    assert find_run(tmp_path, second[:-2]) == second
    with pytest.raises(KeyError, match="not found"):
        find_run(tmp_path, "nope")


def test_store_readable_without_raygen(toy_algorithm, tmp_path):
    _run(tmp_path, toy_algorithm)
    code = f"""
import sys, glob
import pandas as pd, pyarrow.dataset as ds
runs = pd.concat(pd.read_parquet(f) for f in glob.glob({str(tmp_path)!r} + '/runs/*.parquet'))
metrics = ds.dataset({str(tmp_path)!r} + '/metrics', format='parquet').to_table().to_pandas()
assert 'raygen' not in sys.modules
print(len(runs), len(metrics), sorted(set(metrics.split)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "1" and "'test'" in out


def test_recorder_rejects_unknown_status(toy_algorithm, tmp_path):
    cfg = build_config(algorithm=toy_algorithm, dataset="digits")
    with pytest.raises(ValueError, match="status"):
        RunRecorder(tmp_path, cfg).write_run("exploded")


def test_metric_time_and_types(toy_algorithm, tmp_path):
    _run(tmp_path, toy_algorithm)
    (segment,) = (tmp_path / "metrics").glob("*.parquet")  # the finished run's pieces, folded
    table = pq.read_table(segment)
    assert str(table.schema.field("value").type) == "double"
    assert str(table.schema.field("step").type) == "int64"
    assert isinstance(read_metrics(tmp_path).time.iloc[0], pd.Timestamp)
