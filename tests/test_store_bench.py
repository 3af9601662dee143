"""The benchmark's shortcut is honest: writing the folded end state directly (BulkWriter) gives the same store
as writing every piece and folding it, as the runs themselves do."""

import pyarrow.parquet as pq

from analysis.synthetic import benchmark_store
from raygen.results import read_artifacts, read_metrics, read_runs
from raygen.results import store as store_mod


def _segments(root, table):
    out = []
    for path in (root / table).glob("*.parquet"):
        meta = pq.read_metadata(path)
        out.append((meta.num_rows, tuple(sorted(__import__("json").loads(meta.metadata[store_mod.SOURCES_KEY])))))
    return sorted(out)


def test_bulk_store_equals_the_folded_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "SEGMENT_SOURCES", 12)  # several segments per table
    monkeypatch.setattr(store_mod, "SEGMENT_ROW_GROUP", 25)  # and several row groups per segment
    real, bulk = tmp_path / "real", tmp_path / "bulk"
    benchmark_store(real, trials=6, metric_rows=40, metric_files=7)
    benchmark_store(bulk, trials=6, metric_rows=40, metric_files=7, bulk=True)
    assert not list(real.glob("*/.pending/*.parquet"))
    for table in ("metrics", "artifacts"):
        assert len(_segments(real, table)) > 1 and _segments(real, table) == _segments(bulk, table)
    for read in (read_metrics, read_artifacts, read_runs):
        a, b = read(real), read(bulk)
        assert a.sort_values(list(a.columns[:3])).reset_index(drop=True).equals(
            b.sort_values(list(b.columns[:3])).reset_index(drop=True))
    # the real layout: a run file and up to 7 metric pieces (cut at report steps) and 6 artifact pieces per run
    names = [s for _, sources in _segments(real, "metrics") for s in sources]
    assert 6 * 4 <= len(names) <= 6 * 7 and len(set(names)) == len(names)
    # a read of some runs skips row groups by their run_id range and returns exactly those runs' rows
    every = read_metrics(real)
    some = ["bench-00001", "bench-00004"]
    got = read_metrics(real, some).sort_values(["run_id", "step", "split", "metric"]).reset_index(drop=True)
    want = every[every.run_id.isin(some)].sort_values(["run_id", "step", "split", "metric"]).reset_index(drop=True)
    assert len(got) == 2 * 40 and got.equals(want)
    assert pq.ParquetFile(next((real / "metrics").glob("*.parquet"))).metadata.num_row_groups > 1
