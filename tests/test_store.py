"""The Parquet results store: schema, atomic files, readers without raygen."""

import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from raygen.config import build_config
from raygen.engine.local import run_local
from raygen.results import RunRecorder, final_values, find_run, read_artifacts, read_metrics, read_runs

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


# ---------------------------------------------------------------------------------------------- issue 10


def _config(toy_algorithm):
    return build_config(algorithm=toy_algorithm, dataset="toy2d:circle")


def test_two_writers_on_one_run_never_collide(toy_algorithm, tmp_path):
    """A training recorder and an evaluate-style recorder interleave flushes and files: every row survives."""
    cfg = _config(toy_algorithm)
    train = RunRecorder(tmp_path, cfg, run_id="r")
    train.write_run("running")
    other = RunRecorder(tmp_path, cfg, run_id="r")  # started after the trainer, as `raygen evaluate` is
    for step in range(1, 11):
        train.log(step, {"train/loss": float(step)})
        other.log(step, {"test/parzen_ll": -float(step)})
        first, second = (train, other) if step % 2 else (other, train)
        first.flush()
        second.flush()
        train.save_file(step, "checkpoint.pt", "checkpoint", b"x")
        other.save_file(step, f"sample-{step}.txt", "text", b"y")
    train.write_run("completed")
    metrics = read_metrics(tmp_path)
    assert sorted(metrics[metrics.metric == "loss"].step) == list(range(1, 11))
    assert sorted(metrics[metrics.metric == "parzen_ll"].step) == list(range(1, 11))
    arts = read_artifacts(tmp_path)
    assert len(arts) == 20 and set(arts[arts.kind == "text"].name) == {f"sample-{s}.txt" for s in range(1, 11)}
    # the non-owner's latest value reached the row although only the trainer wrote status rows
    assert read_runs(tmp_path).iloc[0]["final.test/parzen_ll"] == -10.0


def test_latest_value_wins_whoever_wrote_it(toy_algorithm, tmp_path):
    """final.* is each metric's latest finite value by time, across writers and heartbeats."""
    cfg = _config(toy_algorithm)
    train = RunRecorder(tmp_path, cfg, run_id="r")
    train.write_run("running")
    train.log(5, {"test/lower_bound": 1.0})
    train.flush()
    evaluator = RunRecorder(tmp_path, cfg, run_id="r")
    evaluator.log(5, {"test/lower_bound": 2.0, "test/parzen_ll": 3.0})
    evaluator.flush()
    train.heartbeat(6)  # the trainer rewrites its row: the evaluator's newer value stays
    row = read_runs(tmp_path).iloc[0]
    assert (row["final.test/lower_bound"], row["final.test/parzen_ll"], row["heartbeat_step"]) == (2.0, 3.0, 6)
    train.log(7, {"test/lower_bound": 4.0, "test/parzen_ll": float("nan")})  # NaN never becomes the final value
    train.write_run("completed")
    row = read_runs(tmp_path).iloc[0]
    assert (row["final.test/lower_bound"], row["final.test/parzen_ll"]) == (4.0, 3.0)
    derived = final_values(read_metrics(tmp_path)).loc["r"]
    for column, value in derived.items():
        assert row[column] == value


def test_raygen_evaluate_reaches_the_run_row_and_plain_readers(toy_algorithm, tmp_path):
    from typer.testing import CliRunner

    from raygen.cli import app

    _, run_id = _run(tmp_path, toy_algorithm)
    before = read_runs(tmp_path).iloc[0]
    res = CliRunner().invoke(app, ["evaluate", run_id, "eval.parzen_samples=37", "--seed", "5", "--results",
                                   str(tmp_path)])
    assert res.exit_code == 0, res.output
    metrics = read_metrics(tmp_path)
    parzen = metrics[(metrics.split == "test") & (metrics.metric == "parzen_ll")].sort_values("time")
    assert len(parzen) == 2 and parzen.value.iloc[0] != parzen.value.iloc[1]
    row = read_runs(tmp_path).iloc[0]
    assert row["final.test/parzen_ll"] == parzen.value.iloc[-1] != before["final.test/parzen_ll"]
    assert (row.status, row.steps, row.ended_at) == (before.status, before.steps, before.ended_at)
    # the run had ended, so the evaluation's rows were folded at once: plain readers see them too
    assert len(pd.read_parquet(tmp_path / "metrics")) == len(metrics)


def _corrupt(path, data=b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_unreadable_files_are_skipped_with_a_warning_naming_them(toy_algorithm, tmp_path, caplog):
    from typer.testing import CliRunner

    from analysis.load import load_store
    from raygen.cli import app

    cfg = _config(toy_algorithm)
    for run_id, status in (("done", "completed"), ("live", "running")):
        rec = RunRecorder(tmp_path, cfg, run_id=run_id)
        rec.write_run("running")
        rec.log(1, {"train/loss": 1.0})
        rec.flush()
        rec.save_file(1, "a.txt", "text", b"a")
        rec.write_run(status)
    good = (len(read_runs(tmp_path)), len(read_metrics(tmp_path)), len(read_artifacts(tmp_path)))
    half = (tmp_path / "runs" / "done.parquet").read_bytes()[:40]
    bad = [
        _corrupt(tmp_path / "runs" / "empty.parquet"),
        _corrupt(tmp_path / "runs" / "cut.parquet", half),
        _corrupt(tmp_path / "metrics" / "seg-000000000000.parquet"),
        _corrupt(tmp_path / "metrics" / ".pending" / "live-0123456789ab-000000.parquet", half),
        _corrupt(tmp_path / "artifacts" / "old-000001.parquet", b"PAR1garbage"),
    ]
    with caplog.at_level("WARNING"):
        assert (len(read_runs(tmp_path)), len(read_metrics(tmp_path)), len(read_artifacts(tmp_path))) == good
        store = load_store(tmp_path, metrics=True)
    assert len(store.runs) == 2 and len(store.metrics) == good[1]
    for path in bad:
        assert str(path) in caplog.text
    res = CliRunner().invoke(app, ["runs", "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "done" in res.output and "live" in res.output
    RunRecorder(tmp_path, cfg, run_id="live").fold()  # a fold steps over the unreadable piece too
    assert len(read_metrics(tmp_path)) == good[1]


def test_plain_pandas_pyarrow_and_duckdb_read_the_folders(toy_algorithm, tmp_path):
    """Every column has one non-null type in every file, also where all values are null (issue 10 item 6)."""
    import duckdb
    import pyarrow.dataset as ds

    from analysis.synthetic import demo_store

    demo_store(tmp_path)  # failed runs (error), sweeps (sweep_id, params), a running trial
    _run(tmp_path, toy_algorithm)  # a real run: None config fields (grad_clip, patience, ...), no sweep
    rec = RunRecorder(tmp_path, _config(toy_algorithm), extra={"sweep_id": "s", "trial_id": "1", "smoke": True})
    rec.write_run("failed", error="boom")
    runs = read_runs(tmp_path)
    for read in (pd.read_parquet, lambda p: pq.read_table(p).to_pandas()):
        assert sorted(read(tmp_path / "runs").run_id) == sorted(runs.run_id)
    table = pq.read_table(tmp_path / "runs")
    for column, kind in [("error", "string"), ("sweep_id", "string"), ("ended_at", "timestamp[us, tz=UTC]"),
                         ("wall_time_s", "double"), ("heartbeat_step", "int64"), ("smoke", "bool")]:
        assert str(table.schema.field(column).type) == kind
    ended = runs.loc[runs.status != "running", "run_id"]
    assert len(pd.read_parquet(tmp_path / "metrics")) == len(read_metrics(tmp_path, ended))
    assert len(pq.read_table(tmp_path / "artifacts")) == len(read_artifacts(tmp_path).query("run_id in @ended"))
    assert ds.dataset(tmp_path / "metrics").to_table().num_rows == len(read_metrics(tmp_path, ended))
    con = duckdb.connect()
    n, smoke = con.execute("SELECT count(*), sum(smoke::int) FROM read_parquet(?, union_by_name = true)",
                           [str(tmp_path / "runs" / "*.parquet")]).fetchone()
    assert (n, smoke) == (len(runs), 1)
    n = con.execute("SELECT count(*) FROM read_parquet(?)", [str(tmp_path / "metrics" / "*.parquet")]).fetchone()[0]
    assert n == len(read_metrics(tmp_path, ended))


def test_config_columns_have_one_type_across_algorithms():
    """The same `config.<key>` column gets the same Arrow type whichever algorithm wrote the row."""
    from raygen.algorithms import _ALGORITHMS
    from raygen.results.store import config_types

    seen: dict[str, tuple[str, str]] = {}
    for name in sorted(_ALGORITHMS):
        try:
            cfg = build_config(algorithm=name, dataset="toy2d:circle")
        except Exception:  # noqa: BLE001 - an algorithm that does not take this dataset: its defaults
            cfg = build_config(algorithm=name, dataset="mnist")
        for key, kind in config_types(cfg).items():
            first = seen.setdefault(key, (str(kind), name))
            assert first[0] == str(kind), f"config.{key}: {first[0]} in {first[1]}, {kind} in {name}"


def test_heartbeat_and_smoke_columns(toy_algorithm, tmp_path):
    rec = RunRecorder(tmp_path, _config(toy_algorithm), run_id="h", extra={"smoke": True})
    rec.write_run("running")
    first = read_runs(tmp_path).iloc[0]
    rec.heartbeat(7)
    row = read_runs(tmp_path).iloc[0]
    assert (row.status, row.heartbeat_step, bool(row.smoke)) == ("running", 7, True)
    assert row.heartbeat_at > first.heartbeat_at and row.started_at == first.started_at
    plain = RunRecorder(tmp_path, _config(toy_algorithm), run_id="p")
    plain.write_run("completed")
    assert read_runs(tmp_path).set_index("run_id").loc["p", "smoke"] == False


def test_run_row_cache_never_hides_a_change(toy_algorithm, tmp_path, caplog):
    import os

    cfg = _config(toy_algorithm)
    for i in range(40):
        RunRecorder(tmp_path, cfg, run_id=f"r{i:02d}").write_run("running")
    for path in (tmp_path / "runs").glob("*.parquet"):
        os.utime(path, ns=(path.stat().st_mtime_ns - 10**10,) * 2)  # older than the cache's freshness window
    assert len(read_runs(tmp_path)) == 40
    cache = tmp_path / "runs" / ".cache" / "index.parquet"
    assert cache.is_file() and len(pd.read_parquet(tmp_path / "runs")) == 40  # plain readers skip the cache
    RunRecorder(tmp_path, cfg, run_id="r07").write_run("completed")  # changed after the cache was written
    (tmp_path / "runs" / "r08.parquet").unlink()
    runs = read_runs(tmp_path).set_index("run_id")
    assert len(runs) == 39 and runs.loc["r07", "status"] == "completed" and "r08" not in runs.index
    _corrupt(cache, b"not parquet")
    with caplog.at_level("WARNING"):
        assert len(read_runs(tmp_path)) == 39
    assert str(cache) in caplog.text


def test_a_store_copied_with_its_times_reads_from_the_run_row_cache(toy_algorithm, tmp_path, monkeypatch):
    """A store rsync'd from a cluster (new inodes, same sizes and mtimes) must not open every run file again."""
    import os
    import shutil

    from raygen.results import store

    cfg = _config(toy_algorithm)
    for i in range(40):
        RunRecorder(tmp_path / "a", cfg, run_id=f"r{i:02d}").write_run("completed")
    for path in (tmp_path / "a" / "runs").glob("*.parquet"):
        os.utime(path, ns=(path.stat().st_mtime_ns - 10**10,) * 2)
    assert len(read_runs(tmp_path / "a")) == 40  # writes the cache
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copy2: times kept, inodes new
    opened = []
    real = store._read_parquet
    monkeypatch.setattr(store, "_read_parquet", lambda path, *a, **k: opened.append(str(path)) or real(path, *a, **k))
    runs = read_runs(tmp_path / "b")
    assert len(runs) == 40 and set(runs.status) == {"completed"}
    assert [os.path.basename(p) for p in opened] == ["index.parquet"]


def test_stores_of_the_previous_layout_still_read(tmp_path):
    """Visible `<run_id>-<seq>.parquet` metric files and null-typed run columns (before issue 10)."""
    import pyarrow as pa

    from raygen.results.store import METRICS_SCHEMA

    (tmp_path / "runs").mkdir()
    (tmp_path / "metrics").mkdir()
    pq.write_table(pa.Table.from_pylist([{"run_id": "old", "status": "completed", "error": None,
                                          "started_at": pd.Timestamp("2025-01-01", tz="UTC"),
                                          "final.test/nll": 1.0}]), tmp_path / "runs" / "old.parquet")
    rows = [{"run_id": "old", "step": s, "split": "test", "metric": "nll", "value": 1.0,
             "time": pd.Timestamp("2025-01-01", tz="UTC")} for s in (1, 2)]
    pq.write_table(pa.Table.from_pylist(rows, schema=METRICS_SCHEMA), tmp_path / "metrics" / "old-000000.parquet")
    assert read_runs(tmp_path).iloc[0]["final.test/nll"] == 1.0
    assert list(read_metrics(tmp_path, ["old"]).step) == [1, 2]


def test_raygen_compact_folds_what_a_kill_left(tmp_path):
    """A run killed after its row said `failed` but before its fold: `raygen compact` finishes the fold."""
    from typer.testing import CliRunner

    from analysis.synthetic import SyntheticRun, write_run
    from raygen.cli import app

    run = SyntheticRun("k", "infusion", "mnist", status="failed", curves={"valid/lower_bound": ([1, 2], [3.0, 4.0])})
    write_run(tmp_path, run, fold=False)
    live = SyntheticRun("l", "infusion", "mnist", status="running", curves={"train/loss": ([1], [1.0])})
    write_run(tmp_path, live)
    assert len(read_metrics(tmp_path)) == 3 and not list((tmp_path / "metrics").glob("*.parquet"))
    res = CliRunner().invoke(app, ["compact", "--results", str(tmp_path)])
    assert res.exit_code == 0 and "folded 2 metric" in res.output, res.output
    assert sorted(pd.read_parquet(tmp_path / "metrics").run_id) == ["k", "k"]  # the running run stays pending
    assert len(read_metrics(tmp_path)) == 3


def test_raygen_runs_lists_a_sweep_worth_of_runs_as_plain_columns(tmp_path):
    from datetime import timedelta

    from typer.testing import CliRunner

    from analysis.synthetic import T0, SyntheticRun, write_run
    from raygen.cli import app

    for i in range(201):
        write_run(tmp_path, SyntheticRun(f"run-{i:03d}", "infusion", "mnist", status="failed",
                                         started=T0 + timedelta(minutes=i)), fold=False)
    res = CliRunner().invoke(app, ["runs", "--results", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:4] == ["run_id", "algorithm", "dataset", "status"]
    assert [line.split()[0] for line in lines[1:]] == [f"run-{i:03d}" for i in range(201)]
    assert lines[1].split()[1:4] == ["infusion", "mnist", "failed"]
