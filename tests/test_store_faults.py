"""Crash safety of the store's folds and rewinds: a process stopped at any file operation (every rename and
delete in turn) leaves a store where plain readers see each row at most once and never a partial file, and
raygen's readers see every row exactly once; the next fold or rewind finishes the job."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from raygen.config import build_config
from raygen.results import RunRecorder, compact, read_metrics
from raygen.results import store as store_mod
from raygen.results.store import PENDING, fold

RUNS = ("r0", "r1", "r2")


class Crash(Exception):
    pass


@pytest.fixture()
def crash_at(monkeypatch):
    """crash_at(n): the n-th os.replace/os.unlink from now raises, and so does every later one (the process
    is gone: no cleanup runs). Returns a function telling whether the crash happened."""
    real = {"replace": os.replace, "unlink": os.unlink}

    def arm(n: int):
        state = {"calls": 0, "crashed": False}

        def wrap(name):
            def call(*args, **kwargs):
                state["calls"] += 1
                if state["crashed"] or state["calls"] >= n:
                    state["crashed"] = True
                    raise Crash(f"killed at file operation {state['calls']}")
                return real[name](*args, **kwargs)
            return call

        monkeypatch.setattr(os, "replace", wrap("replace"))
        monkeypatch.setattr(os, "unlink", wrap("unlink"))
        return state

    def disarm():
        monkeypatch.setattr(os, "replace", real["replace"])
        monkeypatch.setattr(os, "unlink", real["unlink"])

    arm.disarm = disarm
    return arm


def _rows(frame) -> Counter:
    return Counter(map(tuple, frame[["run_id", "step", "split", "metric", "value"]].itertuples(index=False)))


def _plain_rows(root) -> Counter:
    files = list((root / "metrics").glob("*.parquet"))
    for path in files:
        pq.read_table(path)  # never a partial file
    if not files:
        return Counter()
    table = ds.dataset(root / "metrics", format="parquet").to_table()
    return _rows(table.to_pandas())


@pytest.fixture()
def template(tmp_path, monkeypatch):
    """Three runs in progress, four flushes each (pieces only), written once and copied for every crash."""
    monkeypatch.setattr(store_mod, "SEGMENT_SOURCES", 5)  # segments fill up: folds roll over to new ones
    root = tmp_path / "template"
    cfg = build_config(algorithm="walkback", dataset="toy2d:swissroll")
    for run in RUNS:
        rec = RunRecorder(root, cfg, run_id=run)
        rec.write_run("running")
        for step in range(1, 5):
            rec.log(step, {"train/loss": step + 0.5, "valid/lower_bound": -step * 1.5})
            rec.flush()
    return root


def _copy(template, tmp_path, n):
    root = tmp_path / f"crash{n}"
    shutil.copytree(template, root)
    return root


def test_fold_crashed_at_every_file_operation_loses_and_doubles_nothing(template, tmp_path, crash_at):
    expected = _rows(read_metrics(template))
    assert sum(expected.values()) == 3 * 4 * 2 and not _plain_rows(template)

    def folds(root):
        fold(root, "metrics", ["r0"])
        fold(root, "metrics", ["r1"])
        fold(root, "metrics", None)

    crashed_somewhere = 0
    for n in range(1, 200):
        root = _copy(template, tmp_path, n)
        state = crash_at(n)
        try:
            folds(root)
        except Crash:
            pass
        crash_at.disarm()
        plain = _plain_rows(root)
        assert max(plain.values(), default=1) == 1 and not plain - expected, f"crash at operation {n}"
        assert _rows(read_metrics(root)) == expected, f"crash at operation {n}"
        if not state["crashed"]:
            break
        crashed_somewhere += 1
        compact(root, running=True)  # the next fold finishes the job
        assert _plain_rows(root) == expected and _rows(read_metrics(root)) == expected
        assert not list((root / "metrics" / PENDING).glob("*.parquet"))
        shutil.rmtree(root)
    assert crashed_somewhere > 10  # the loop really stopped the folds at many points


def test_rewind_crashed_at_every_file_operation_never_doubles_or_drops_kept_rows(template, tmp_path, crash_at):
    fold(template, "metrics", ["r0"])  # r0's rows half in a segment, half in pieces
    RunRecorder(template, build_config(algorithm="walkback", dataset="toy2d:swissroll"), run_id="r0").log(
        5, {"train/loss": 9.0})
    before = read_metrics(template)
    keep = before[(before.run_id != "r0") | (before.step <= 2)]
    cfg = build_config(algorithm="walkback", dataset="toy2d:swissroll")
    for n in range(1, 200):
        root = _copy(template, tmp_path, n)
        state = crash_at(n)
        try:
            RunRecorder(root, cfg, run_id="r0").rewind(2)
        except Crash:
            pass
        crash_at.disarm()
        got = read_metrics(root)
        assert not got.duplicated(["run_id", "step", "split", "metric"]).any(), f"crash at operation {n}"
        assert not _rows(keep) - _rows(got), f"crash at operation {n}"
        assert not _rows(got) - _rows(before)
        plain = _plain_rows(root)
        assert max(plain.values(), default=1) == 1
        if not state["crashed"]:
            break
        RunRecorder(root, cfg, run_id="r0").rewind(2)  # the restart rewinds again
        assert _rows(read_metrics(root)) == _rows(keep)
        shutil.rmtree(root)
    else:
        pytest.fail("the rewind never finished")


def test_a_reader_racing_a_fold_counts_each_row_once(template, monkeypatch):
    """The fold runs after the reader has read the pieces and before it lists the segments."""
    expected = _rows(read_metrics(template))
    real = store_mod._parquet_entries
    fired = []

    def entries(directory):
        if directory == template / "metrics" and not fired:
            fired.append(True)
            fold(template, "metrics", None)
        return real(directory)

    monkeypatch.setattr(store_mod, "_parquet_entries", entries)
    assert _rows(read_metrics(template)) == expected and fired


def test_a_piece_folded_between_listing_and_reading_is_read_from_its_segment(template, monkeypatch):
    expected = _rows(read_metrics(template))
    real = store_mod._read_parquet
    fired = []

    def read(path, **kwargs):
        if PENDING in str(path) and not fired:
            fired.append(True)
            fold(template, "metrics", None)  # the listed piece is gone when the reader opens it
        return real(path, **kwargs)

    monkeypatch.setattr(store_mod, "_read_parquet", read)
    assert _rows(read_metrics(template)) == expected and fired


def test_a_full_disk_leaves_every_file_complete(template, monkeypatch):
    """ENOSPC in the middle of writing a file (half of it written): the write fails naming the disk error, the
    file it would have replaced is intact, no temporary file is left, and no row is lost or doubled."""
    import errno
    from pathlib import Path

    expected = _rows(read_metrics(template))
    row_before = pq.read_table(template / "runs" / "r0.parquet").to_pylist()
    real_write = Path.write_bytes

    def full(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    cfg = build_config(algorithm="walkback", dataset="toy2d:swissroll")
    rec = RunRecorder(template, cfg, run_id="r0")
    rec.log(9, {"train/loss": 1.0})
    with pytest.raises(OSError, match="No space"):
        rec.flush()
    with pytest.raises(OSError, match="No space"):
        rec.write_run("completed")
    with pytest.raises(OSError, match="No space"):
        fold(template, "metrics", None)
    monkeypatch.setattr(Path, "write_bytes", real_write)
    assert pq.read_table(template / "runs" / "r0.parquet").to_pylist() == row_before
    assert not list(template.rglob("*.tmp"))
    assert _rows(read_metrics(template)) == expected and not _plain_rows(template)


def test_an_ended_run_is_recorded_even_when_its_last_metrics_cannot_be(template, monkeypatch):
    """The disk fills while flushing the last metrics: the row still says how the run ended, and its final.*
    holds only values that were stored (one source of truth: the metrics table)."""
    import errno
    from pathlib import Path

    real_write = Path.write_bytes

    def full_for_pieces(self, data):
        if PENDING in str(self):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    cfg = build_config(algorithm="walkback", dataset="toy2d:swissroll")
    rec = RunRecorder(template, cfg, run_id="r1")
    rec.rewind(None)
    rec.log(9, {"train/loss": 123.0})
    monkeypatch.setattr(Path, "write_bytes", full_for_pieces)
    rec.write_run("failed", error="OSError: disk full")
    monkeypatch.setattr(Path, "write_bytes", real_write)
    row = pq.read_table(template / "runs" / "r1.parquet").to_pylist()[0]
    assert row["status"] == "failed" and row["final.train/loss"] == 4.5  # the last stored value, not 123


CHILD = """
import sys
from raygen.config import build_config
from raygen.results import RunRecorder
cfg = build_config(algorithm="walkback", dataset="toy2d:swissroll")
print("ready", flush=True)
for r in range(100000):
    rec = RunRecorder(sys.argv[1], cfg, run_id=f"k{r:05d}")
    rec.write_run("running")
    for step in range(1, 6):
        rec.log(step, {"train/loss": float(step)})
        rec.flush()
    rec.write_run("completed")  # and its fold
"""


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_sigkill_of_a_writer_at_any_moment(tmp_path, delay):
    """A real process writing and folding runs, SIGKILLed at an arbitrary moment (the delay only spreads the
    moments): no row doubled for either reader, no partial file, completed runs whole; compact finishes."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    keys = ["run_id", "step", "split", "metric"]
    plain = _plain_rows(tmp_path)
    got = read_metrics(tmp_path)
    assert max(plain.values(), default=1) == 1 and not got.duplicated(keys).any()
    assert not plain - _rows(got)
    from raygen.results import read_runs

    runs = read_runs(tmp_path)
    done = set(runs.loc[runs.status == "completed", "run_id"]) if not runs.empty else set()
    counts = got.groupby("run_id").size()
    assert all(counts.get(r, 0) == 5 for r in done)
    compact(tmp_path, running=True)
    assert _plain_rows(tmp_path) == _rows(read_metrics(tmp_path)) == _rows(got)
