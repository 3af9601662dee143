"""How a run's row lives in the store: `running` with a heartbeat, then how it ended; `lost` when it died hard.

A run that is SIGKILLed, loses its node or its driver, or fills the disk cannot write how it ended, so its row
would say `running` forever. While a run trains, a heartbeat thread rewrites its row every
`heartbeat_interval()` seconds with the time and the latest update (`heartbeat_at`, `heartbeat_step`).
Readers call a `running` row whose heartbeat is older than `lost_after()` seconds `lost` (`effective_status`);
`repair` rewrites such rows for good as `failed` with an error that says the run was lost, and
`raygen train --resume RUN` continues a lost, failed or stopped local run from its last checkpoint.

Knobs (environment, so that every process of a run and every reader agree without a config file):
RAYGEN_HEARTBEAT_S (default 30 s) and RAYGEN_LOST_AFTER_S (default 600 s; it must exceed the heartbeat
interval by a wide margin, since a heartbeat is only a file rename but a loaded machine can delay it; one within
the interval is refused, `check_lost_after`, whether it comes from the environment or `raygen runs --lost-after`).

Only one process at a time trains a run: a local run and `raygen train --resume` hold the run's `claim`.

Only pandas and pyarrow here (no torch): analysis code and `raygen runs` import it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from raygen.config import RunConfig
from raygen.results import RunRecorder
from raygen.results.store import run_row  # the one reader of a run row (re-exported for the engines)

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
LOST_AFTER_S = 600.0
RESERVE_BYTES = 4 << 20  # room for the last run row and metric file when the disk fills up
LOST_ERROR = "lost: no heartbeat since {since} (the process was killed, or its node, driver or disk failed)"


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


def heartbeat_interval() -> float:
    return _env_seconds("RAYGEN_HEARTBEAT_S", HEARTBEAT_S)


def check_lost_after(seconds: float, name: str) -> float:
    """The one rule for the lost threshold, wherever it comes from (`name` says where, for the error): positive
    and longer than the heartbeat interval. A live run rewrites its heartbeat only every interval, so a shorter
    threshold calls it lost; `raygen runs --repair` then marks it failed and `train --resume` starts a second
    writer on it (conflicting duplicate metric rows)."""
    if not seconds > 0:
        raise ValueError(f"{name} must be positive (got {seconds:g})")
    interval = heartbeat_interval()
    if seconds <= interval:
        raise ValueError(f"{name} {seconds:g} s is not longer than the heartbeat interval ({interval:g} s, "
                         "$RAYGEN_HEARTBEAT_S): live runs would be shown lost")
    return seconds


def lost_after(after_s: float | None = None) -> float:
    """`after_s` if given, else $RAYGEN_LOST_AFTER_S (default 600 s); checked by `check_lost_after` either way."""
    if after_s is not None:
        return check_lost_after(after_s, "--lost-after")
    seconds = _env_seconds("RAYGEN_LOST_AFTER_S", LOST_AFTER_S)
    source = "RAYGEN_LOST_AFTER_S" if os.environ.get("RAYGEN_LOST_AFTER_S") else "the default lost threshold"
    return check_lost_after(seconds, source)


# ---------------------------------------------------------------------------------------------- readers


def effective_status(runs: pd.DataFrame, *, after_s: float | None = None, now: datetime | None = None) -> pd.Series:
    """Each row's status, with `lost` for a `running` row whose last sign of life (heartbeat, else its start)
    is older than `after_s` seconds (default `lost_after()`)."""
    if runs.empty:
        return pd.Series([], dtype=object, index=runs.index)
    after_s = lost_after(after_s)
    now = now or datetime.now(timezone.utc)
    started = pd.to_datetime(runs["started_at"], utc=True)
    alive = (
        pd.to_datetime(runs["heartbeat_at"], utc=True).fillna(started) if "heartbeat_at" in runs else started
    )
    stale = (pd.Timestamp(now) - alive).dt.total_seconds() > after_s
    status = runs["status"].astype(object).copy()
    status[(status == "running") & stale] = "lost"
    return status


def live_progress(results: str | Path, runs: pd.DataFrame) -> dict[str, tuple[int, datetime]]:
    """{run_id: (update, time)} of the newest metric row of each `running` row: its progress beyond its last
    heartbeat (before its first one, 30 s after the start by default, the row still says update 0). Reads only
    the metric rows of running runs."""
    from raygen.results import read_metrics

    if runs.empty:
        return {}
    ids = runs.loc[runs["status"] == "running", "run_id"].tolist()
    metrics = read_metrics(results, ids) if ids else pd.DataFrame()
    if metrics.empty:
        return {}
    latest = metrics.groupby("run_id").agg(step=("step", "max"), time=("time", "max"))
    return {run_id: (int(r.step), pd.Timestamp(r.time).to_pydatetime()) for run_id, r in latest.iterrows()}


def run_status(results: str | Path, run_id: str) -> tuple[str | None, str | None]:
    """(status, error) of a run row, or (None, None)."""
    row = run_row(results, run_id)
    return (row["status"], row["error"]) if row else (None, None)


def checkpoint_saved_at(results: str | Path, run_id: str, step: int) -> datetime | None:
    """When the run's checkpoint of update `step` was saved (its artifact row), or None."""
    from raygen.results import read_artifacts

    arts = read_artifacts(results)
    mine = arts[(arts["run_id"] == run_id) & (arts["kind"] == "checkpoint") & (arts["step"] == step)]
    return None if mine.empty else pd.Timestamp(mine["time"].max()).to_pydatetime()


def rewind_to_checkpoint(recorder: RunRecorder, step: int) -> dict[str, Any] | None:
    """`recorder.rewind` to the checkpoint a restarted run resumes from: rows after its step go, and rows at its
    step written after it was saved (a final evaluation the run was killed in) go too. The one rewind of every
    restart: Ray Train worker restarts, `raygen train --resume`."""
    after = checkpoint_saved_at(recorder.root, recorder.run_id, step) if step > 0 else None
    return recorder.rewind(step, after=after)


def reopen_run(results: str | Path, run_id: str, *, step: int | None = None) -> RunRecorder | None:
    """A recorder for an existing run row, keeping its node, start time, extras and final values (rebuilt from
    the metric rows); with `step`, the rows after that checkpoint are rewound (`rewind_to_checkpoint`)."""
    row = run_row(results, run_id)
    if row is None:
        return None
    config = RunConfig.model_validate(json.loads(row["config_json"]))
    extra: dict[str, Any] = {"workers": row.get("workers") or 1, "device": row.get("device"),
                             "stopped_early": bool(row.get("stopped_early"))}
    for key in ("sweep_id", "trial_id"):
        if row.get(key) is not None:
            extra[key] = row[key]
    for key in ("params", "resources"):
        if row.get(f"{key}_json"):
            extra[key] = json.loads(row[f"{key}_json"])
    recorder = RunRecorder(results, config, run_id=run_id, extra=extra)
    if step is None:  # written from outside the run (a driver, `repair`): its last heartbeat stays the row's
        recorder.rewind(None)
        recorder.kept_heartbeat = (row.get("heartbeat_at"), row.get("heartbeat_step"))
    else:
        rewind_to_checkpoint(recorder, step)
    recorder.node = row.get("node") or recorder.node
    return recorder


def mark_run(results: str | Path, run_id: str, status: str, *, error: str | None = None,
             stopped_early: bool | None = None, only_if: Sequence[str] | None = None,
             ended_at: datetime | None = None) -> bool:
    """Rewrite a run row's status from outside the run (a driver, `repair`). `ended_at`: when the run really
    ended, if not now (a lost run ended at its last sign of life, not when it was found)."""
    if only_if is not None and run_status(results, run_id)[0] not in only_if:
        return False
    recorder = reopen_run(results, run_id)
    if recorder is None:
        return False
    if stopped_early is not None:
        recorder.extra["stopped_early"] = stopped_early
    recorder.write_run(status, error=error, ended_at=ended_at)
    return True


def _stamp(t: Any) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%d %H:%M:%S UTC")


def last_sign_of_life(results: str | Path, row: dict[str, Any]) -> datetime:
    """The latest of a run row's heartbeat (else its start) and its newest metric row: when a lost run died,
    as near as the store tells."""
    from raygen.results import read_metrics

    since = row.get("heartbeat_at")
    since = row["started_at"] if since is None or pd.isna(since) else since
    times = read_metrics(results, [row["run_id"]])["time"]
    latest = max(pd.Timestamp(since), pd.Timestamp(times.max())) if not times.empty else pd.Timestamp(since)
    return (latest.tz_localize("UTC") if latest.tzinfo is None else latest).to_pydatetime()


def repair(results: str | Path, *, after_s: float | None = None) -> list[str]:
    """Mark every lost run `failed` (error: lost since its last heartbeat, and when the repair found it).
    Its `ended_at` (and wall time) is its last sign of life (`last_sign_of_life`), not the repair time.
    Returns their run ids."""
    from raygen.results import read_runs

    runs = read_runs(results)
    if runs.empty:
        return []
    lost = runs[effective_status(runs, after_s=after_s) == "lost"]
    repaired = []
    for row in lost.itertuples():
        fresh = run_row(results, row.run_id)  # a heartbeat since the listing: alive after all, left alone
        if fresh is None or effective_status(pd.DataFrame([fresh]), after_s=after_s).iloc[0] != "lost":
            continue
        since = fresh.get("heartbeat_at") or fresh["started_at"]
        error = (LOST_ERROR.format(since=_stamp(since))
                 + f"; marked failed by repair at {_stamp(datetime.now(timezone.utc))}")
        ended = last_sign_of_life(results, fresh)
        if mark_run(results, row.run_id, "failed", error=error, only_if=("running",), ended_at=ended):
            Reserve(results, row.run_id).release()
            repaired.append(row.run_id)
    return repaired


# ---------------------------------------------------------------------------------------------- writers


@contextlib.contextmanager
def claim(results: str | Path, run_id: str) -> Iterator[bool]:
    """An exclusive claim on training `run_id`, held for the body: yields False when another process holds it.

    A non-blocking flock on a lock file in the store (root/.locks/claim-RUN.lock): the kernel drops it when its
    process dies however it dies, so a killed run never leaves a stale claim, and two `raygen train --resume
    RUN` started together cannot both train (each would rewind and write the same steps: duplicate metric
    keys). The heartbeat alone cannot tell: both resumes see the same `failed`/lost row before either writes.
    An object store (s3://) has no locks: there the claim always succeeds and only the heartbeat protects a
    run, so resume a run of an object store from one place at a time."""
    import fcntl

    from raygen.results.store import LOCKS, is_remote

    if is_remote(results):
        yield True
        return
    path = Path(results) / LOCKS / f"claim-{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Heartbeat:
    """Rewrites the run row (`RunRecorder.heartbeat`) every `interval` seconds from a thread, so a run busy in
    a long evaluation, between two reports, still looks alive. `beat(step)` only records the latest update."""

    def __init__(self, recorder: RunRecorder, interval: float | None = None) -> None:
        self.recorder = recorder
        self.interval = heartbeat_interval() if interval is None else interval
        self.step = recorder.steps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{recorder.run_id}", daemon=True)

    def beat(self, step: int) -> None:
        self.step = max(self.step, int(step))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.recorder.heartbeat(self.step) is False:
                    return  # the run's row says how it ended
            except Exception as err:  # noqa: BLE001 - a missed heartbeat must not kill the run
                log.warning("heartbeat of %s not written: %s", self.recorder.run_id, err)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class Reserve:
    """A dot file of RESERVE_BYTES written when a run starts and deleted when it ends: if the disk fills up,
    deleting it first leaves room to write the run's last metrics and its `failed` row (which would otherwise
    stay `running`). Readers skip dot files."""

    def __init__(self, root: str | Path, run_id: str) -> None:
        # One name per run: the file a killed run left behind is taken over by its resume, or deleted by repair.
        from raygen.results.store import is_remote

        # An object store does not fill up like a disk: nothing to reserve there.
        self.path = None if is_remote(root) else Path(root) / "runs" / f".{run_id}.reserve"

    def take(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)  # real blocks (a sparse file would free nothing)
        except OSError as err:
            self.release()
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.warning("no space reserved for the end of the run: %s", err)

    def release(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def error_text(err: BaseException, limit: int = 4000) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= limit else text[:limit] + " ..."


@contextlib.contextmanager
def recorded(recorder: RunRecorder, *, heartbeat: float | None = None) -> Iterator[Heartbeat]:
    """Mark the run `running`, keep its heartbeat while the body runs, and record how it ended: `completed`,
    `stopped` (KeyboardInterrupt, SIGTERM via the CLI) or `failed` with the error. Yields the Heartbeat, whose
    `beat(step)` the caller feeds with the latest update."""
    reserve = Reserve(recorder.root, recorder.run_id)
    reserve.take()
    try:
        recorder.write_run("running")
    except BaseException:
        reserve.release()
        raise
    beat = Heartbeat(recorder, heartbeat).start()
    try:
        yield beat
    except BaseException as err:
        beat.stop()
        reserve.release()  # first: on a full disk this is the room the lines below need
        try:
            recorder.flush()
        except OSError as flush_err:
            log.error("run %s: metrics not written: %s", recorder.run_id, flush_err)
        if isinstance(err, KeyboardInterrupt):
            recorder.write_run("stopped", error="interrupted by the user")
        else:
            recorder.write_run("failed", error=error_text(err))
        raise
    beat.stop()
    reserve.release()
    recorder.flush()
    recorder.write_run("completed")
