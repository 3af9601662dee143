"""The results store is self-explanatory: plain pandas/pyarrow and DuckDB read it without raygen; and the
bulk readers in analysis.load return what raygen.results' readers return."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from analysis.load import (
    load_store,
    read_artifacts_fast,
    read_metrics_fast,
    read_runs_fast,
    store_fingerprint,
)
from analysis.synthetic import SyntheticRun, demo_store, write_run
from raygen.results import read_artifacts, read_metrics, read_runs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return demo_store(tmp_path_factory.mktemp("store"))


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # Missing values may be None (object columns) or NaN (pandas string columns): compare them as equal.
    frame = frame.sort_values(keys, kind="stable").reset_index(drop=True).astype(object)
    return frame.where(frame.notna(), None)


def test_bulk_readers_equal_raygen_readers(store):
    slow, fast = read_runs(store), read_runs_fast(store)
    assert set(slow.columns) == set(fast.columns)
    pd.testing.assert_frame_equal(_sorted(fast[slow.columns], ["run_id"]), _sorted(slow, ["run_id"]),
                                  check_dtype=False)
    keys = ["run_id", "split", "metric", "step"]
    pd.testing.assert_frame_equal(_sorted(read_metrics_fast(store), keys), _sorted(read_metrics(store), keys))
    pd.testing.assert_frame_equal(_sorted(read_artifacts_fast(store), ["run_id", "name"]),
                                  _sorted(read_artifacts(store), ["run_id", "name"]))
    some = list(slow.run_id[:3])
    pd.testing.assert_frame_equal(_sorted(read_metrics_fast(store, some), keys), _sorted(read_metrics(store, some), keys))


def test_readers_ignore_temporaries_and_fingerprint_changes_on_write(tmp_path):
    write_run(tmp_path, SyntheticRun("r1", "infusion", "mnist", finals={"test/lower_bound": 1.0}))
    (tmp_path / "runs" / ".r2.parquet.abc.tmp").write_bytes(b"half-written")
    before = store_fingerprint(tmp_path)
    assert list(read_runs_fast(tmp_path).run_id) == ["r1"]
    write_run(tmp_path, SyntheticRun("r2", "infusion", "mnist", finals={"test/lower_bound": 2.0}))
    assert store_fingerprint(tmp_path) != before
    assert sorted(load_store(tmp_path).runs.run_id) == ["r1", "r2"]
    with pytest.raises(FileNotFoundError, match="not a raygen results store"):
        load_store(tmp_path / "runs")


SCRIPT = textwrap.dedent(
    """
    import json, sys

    class NoRaygen:
        # Refuse raygen, analysis and ray: the store must be readable without any of them.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("raygen", "analysis", "ray"):
                raise ImportError("not allowed in this test: " + name)
            return None

    sys.meta_path.insert(0, NoRaygen())
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    root = sys.argv[1]
    runs = pd.concat([pd.read_parquet(p) for p in sorted(__import__("glob").glob(root + "/runs/*.parquet"))])
    metrics = ds.dataset(root + "/metrics", format="parquet").to_table().to_pandas()
    con = duckdb.connect()
    q = con.execute(
        "SELECT r.run_id, r.algorithm, r.\\"final.test/lower_bound\\" AS final_lb, m.value AS last_lb "
        "FROM read_parquet(?, union_by_name=true) r "
        "JOIN (SELECT run_id, arg_max(value, step) AS value FROM read_parquet(?) "
        "      WHERE split = 'test' AND metric = 'lower_bound' GROUP BY run_id) m USING (run_id) "
        "ORDER BY r.run_id",
        [root + "/runs/*.parquet", root + "/metrics/*.parquet"],
    ).df()
    arts = con.execute("SELECT count(*) FROM read_parquet(?) WHERE kind = 'image'", [root + "/artifacts/*.parquet"]).fetchone()[0]
    print(json.dumps({
        "runs": len(runs), "metric_rows": len(metrics), "joined": len(q),
        "max_abs_diff": float((q.final_lb - q.last_lb).abs().max()), "images": int(arts),
        "columns": sorted(c for c in runs.columns if c.startswith(("config.algo.", "final.test/"))),
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("raygen", "analysis", "ray")),
    }))
    """
)


def test_store_is_readable_with_pandas_pyarrow_and_duckdb_without_raygen(store):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(store)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    runs = read_runs(store)
    assert out["loaded"] == []
    # Plain readers see an ended run's metric rows (folded into the segments); a running run's rows stay in
    # metrics/.pending/ until it ends, read by raygen only (docs/results.md).
    ended = runs.loc[runs.status != "running", "run_id"]
    assert out["runs"] == len(runs) and out["metric_rows"] == len(read_metrics(store, ended))
    assert out["joined"] == runs["final.test/lower_bound"].notna().sum() > 0
    assert out["max_abs_diff"] == 0.0  # final.* is the last logged value, readable by SQL alone
    assert out["images"] == (read_artifacts(store).kind == "image").sum()
    assert {"config.algo.steps", "config.algo.omega", "final.test/lower_bound"} <= set(out["columns"])


def test_analysis_never_imports_ray_or_torch():
    code = ("import sys, analysis.report, analysis.dashboard, raygen.analysis_cli; "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
