"""The Parquet results store: one writer (`RunRecorder`) and plain readers.

Layout under the results root (schema and guarantees in docs/results.md):

    runs/<run_id>.parquet                       one row per run, replaced atomically when it changes
    metrics/*.parquet                           segments: finished runs' metric rows, many runs per file
    metrics/.pending/<run_id>-<writer>-<seq>.parquet   pieces: rows of runs in progress, one file per flush
    artifacts/*.parquet, artifacts/.pending/... the same for the artifact index
    files/<run_id>/...                          the artifact files themselves (PNG, text, checkpoints)

Why pieces and segments: a plain reader (DuckDB, pandas, pyarrow on `metrics/`) must see each row at most
once and never a half-written file, and thousands of tiny files make every reader slow. So a writer puts
each flush in a piece named by its own random writer id (two writers on one run cannot clash), under
`.pending/`, which plain readers skip (dot folder). When the run ends, its pieces are *folded* into the
current segment: the segment is rewritten with the new rows under a temporary name and renamed over the
old one (readers see the old or the new file, never both), its Parquet metadata lists the folded piece
names (`raygen.sources`), and only then are the pieces deleted. raygen's readers read pieces first and
segments second, and drop a piece a segment lists, so they see runs in progress and count each row once
at every instant; a crash anywhere leaves at worst covered pieces that the next fold deletes.

Run rows stay one file per run (they change while a run lives). `read_runs` keeps a hidden cache of the
rows it has read (runs/.cache/index.parquet, keyed on each file's name, size and mtime, as rsync's quick check) so
that listing ten thousand runs does not open ten thousand files; the files stay the truth.

The root may be an object store (`s3://bucket/prefix`, other pyarrow/fsspec file systems): a rename becomes one
PUT of the final key, and folds write a new segment instead of rewriting one (no locks there); see `remote` and
docs/results.md.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import math
import os
import re
import socket
import subprocess
import threading
import time
import types
import typing
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raygen.config import RunConfig, flatten

log = logging.getLogger(__name__)

TS = pa.timestamp("us", tz="UTC")
METRICS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int64()),
        ("split", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("time", TS),
    ]
)
ARTIFACTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int64()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("path", pa.string()),
        ("time", TS),
    ]
)
TABLES = {"metrics": METRICS_SCHEMA, "artifacts": ARTIFACTS_SCHEMA}
# Fixed columns of a run row, each with one non-null Arrow type in every file (also when all-null), so
# `pd.read_parquet("results/runs")` and `pq.read_table` on the folder never meet two types for one column.
# `config.<key>` columns take their type from the config field (numbers float64, bool, else string) and
# `final.<split>/<metric>` columns are float64.
RUN_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("algorithm", pa.string()),
        ("dataset", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("seed", pa.int64()),
        ("device", pa.string()),
        ("workers", pa.int64()),
        ("sweep_id", pa.string()),
        ("trial_id", pa.string()),
        ("params_json", pa.string()),
        ("resources_json", pa.string()),
        ("stopped_early", pa.bool_()),
        ("smoke", pa.bool_()),
        ("node", pa.string()),
        ("started_at", TS),
        ("ended_at", TS),
        ("wall_time_s", pa.float64()),
        ("steps", pa.int64()),
        ("heartbeat_at", TS),
        ("heartbeat_step", pa.int64()),
        ("config_json", pa.string()),
        ("versions_json", pa.string()),
        ("git_commit", pa.string()),
        ("final_at_json", pa.string()),
    ]
)
RUN_STATUSES = ("running", "completed", "failed", "stopped")
ENDED = ("completed", "failed", "stopped")

PENDING = ".pending"  # pieces of runs in progress; a dot folder, so plain readers skip it
LOCKS = ".locks"  # flock files (root/.locks/): one per run row, one per folded table
RUNS_CACHE = Path(".cache") / "index.parquet"
SOURCES_KEY = b"raygen.sources"
# A segment takes folded pieces until it has this many rows or sources, then a new segment starts: files
# stay large enough to read fast and small enough to rewrite at each fold.
SEGMENT_ROWS = 500_000
SEGMENT_SOURCES = 4_000
SEGMENT_ROW_GROUP = 32_768  # rows of one run stay together: a read of a few runs skips the other groups
PIECE_NAME = re.compile(r"^(?P<run>.+)-(?P<writer>[0-9a-f]{12})-(?P<seq>\d{6})\.parquet$")
OLD_PART_NAME = re.compile(r"^(?P<run>.+)-(?P<seq>\d{6})\.parquet$")  # the layout before pieces (readable)
CACHE_MIN_AGE_S = 2.0  # files younger than this are always read, whatever the cache says (mtime granularity)


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id(algorithm: str) -> str:
    return f"{algorithm}-{now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------------------------------------- files


# A store root may be a URL (`s3://bucket/prefix`, `gs://...`, any fsspec protocol). `Path` keeps it as
# `s3:/bucket/prefix` and every path below it keeps that prefix, so the store's path arithmetic is unchanged
# and each I/O call asks `remote(path)` whether it goes to an object store.
URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]+):/+(?P<rest>.*)$")


@functools.cache
def _filesystem(scheme: str, bucket: str) -> Any:
    import pyarrow.fs as pafs

    if scheme in ("s3", "s3a"):
        # One PUT per small object (allow_delayed_open): an object appears whole or not at all, which is what
        # the local store gets from os.replace. AWS_ENDPOINT_URL (an S3-compatible server) is read by Arrow.
        return pafs.S3FileSystem(allow_delayed_open=True, endpoint_override=os.environ.get("AWS_ENDPOINT_URL"))
    try:
        return pafs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        import fsspec  # any other protocol fsspec knows (memory, gcs, abfs, ...)

        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))


def remote(path: str | Path) -> tuple[Any, str] | None:
    """(pyarrow file system, path in it) for a path under an object-store root; None for a local path."""
    match = URL.match(str(path))
    if match is None or match["scheme"] == "file":
        return None
    return _filesystem(match["scheme"], match["rest"].split("/", 1)[0]), match["rest"].rstrip("/")


def is_remote(path: str | Path) -> bool:
    return remote(path) is not None


def label(path: str | Path) -> str:
    """A store as the user wrote it, for messages: `Path("s3://b/p")` has folded the URL's "//" into "/"."""
    match = URL.match(str(path))
    return f"{match['scheme']}://{match['rest']}" if match is not None and is_remote(path) else str(path)


def store_problem(root: str | Path) -> str | None:
    """Why `root` cannot be read as a results store (one line for the CLI), or None when it can. A store is a
    folder holding a runs/ folder, which every writer creates first."""
    try:
        found = exists(Path(root) / "runs") if is_remote(root) else (Path(root) / "runs").is_dir()
    except OSError as err:  # an object store that cannot be reached (endpoint, network): its error
        return f"cannot read results store {label(root)}: {' '.join(str(err).split())}"
    if found:
        return None
    path = Path(root)
    what = ("does not exist" if is_remote(root) or not path.exists()
            else "is a file, not a results store directory" if not path.is_dir()
            else "is not a raygen results store (no runs/ folder)")
    return f"results store {label(root)} {what}"


def read_bytes(path: str | Path) -> bytes:
    got = remote(path)
    if got is None:
        return Path(path).read_bytes()
    with got[0].open_input_stream(got[1]) as f:
        return f.read()


def delete_file(path: str | Path) -> None:
    got = remote(path)
    if got is None:
        Path(path).unlink(missing_ok=True)
        return
    with contextlib.suppress(FileNotFoundError):
        got[0].delete_file(got[1])


def exists(path: str | Path) -> bool:
    """A file or folder (on an object store: an object or a prefix with objects under it) is there."""
    got = remote(path)
    if got is None:
        return Path(path).exists()
    import pyarrow.fs as pafs

    return got[0].get_file_info(got[1]).type != pafs.FileType.NotFound


_TORN_READ_TRIES = 5


def open_input(path: str | Path) -> Any:
    """A path, or an object's bytes in memory, for pyarrow.parquet; FileNotFoundError when it is gone.

    pyarrow reads an object as a size (HEAD) and then ranged GETs, so an object replaced in between (a heartbeat
    rewrites a run row every 30 s) comes back torn: a prefix of the new version, or the old one cut short. Every
    file of the store is Parquet, which starts and ends with b"PAR1": bytes that do not are read again, and
    only bytes that stay so are handed on (to be skipped as corrupt), as a local rename never tears."""
    got = remote(path)
    if got is None:
        return path
    for _ in range(_TORN_READ_TRIES):
        with got[0].open_input_stream(got[1]) as f:
            data = f.read()
        if len(data) >= 8 and data[:4] == data[-4:] == b"PAR1":
            break
    return pa.BufferReader(data)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write under a dot-prefixed temporary name in the same folder, then rename into place. On an object
    store: one PUT of the final key, which readers see whole or not at all."""
    got = remote(path)
    if got is not None:
        with got[0].open_output_stream(got[1]) as f:
            f.write(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_table(path: Path, table: pa.Table, sources: Iterable[str] | None = None) -> None:
    if sources is not None:
        meta = dict(table.schema.metadata or {})
        meta[SOURCES_KEY] = json.dumps(sorted(set(sources))).encode()
        table = table.replace_schema_metadata(meta)
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=SEGMENT_ROW_GROUP)
    atomic_write_bytes(path, sink.getvalue())


_THREAD_LOCKS: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def locked(root: Path, name: str) -> Iterator[None]:
    """An exclusive advisory lock (flock) named `name` in the store: serialises the read-modify-write of a
    run row and the folds of a table, between threads and processes (on NFS only if it supports locks)."""
    import fcntl

    if is_remote(root):
        # Object stores have no locks: within a process a thread lock; between processes folds never
        # rewrite a segment there (see `fold`), and a run row has one writer at a time.
        with _THREAD_LOCKS.setdefault(f"{root}/{name}", threading.Lock()):
            yield
        return
    path = Path(root) / LOCKS / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _parquet_entries(directory: Path) -> list[os.DirEntry]:
    """The Parquet files of a folder, skipping dot and underscore names (temporaries, caches)."""
    got = remote(directory)
    if got is not None:
        return _remote_entries(directory, *got)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    return sorted(
        (e for e in entries if e.name.endswith(".parquet") and not e.name.startswith((".", "_")) and e.is_file()),
        key=lambda e: e.name,
    )


class _RemoteEntry:
    """What the store uses of an os.DirEntry, for an object (no inode: the cache keys on size and mtime)."""

    def __init__(self, path: str, size: int, mtime_ns: int) -> None:
        self.path, self.name = path, path.rsplit("/", 1)[-1]
        self._stat = types.SimpleNamespace(st_size=size, st_mtime_ns=mtime_ns)

    def is_file(self) -> bool:
        return True

    def stat(self) -> types.SimpleNamespace:
        return self._stat


def _remote_entries(directory: Path, fs: Any, base: str) -> list[_RemoteEntry]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    out = []
    for info in infos:
        name = info.base_name
        if info.type == pafs.FileType.File and name.endswith(".parquet") and not name.startswith((".", "_")):
            mtime = int(info.mtime.timestamp() * 1e9) if info.mtime is not None else 0
            out.append(_RemoteEntry(f"{directory}/{name}", info.size or 0, mtime))
    return sorted(out, key=lambda e: e.name)


class _Vanished(Exception):
    """A listed file was gone when read (renamed or deleted by a fold): the read starts again."""


def is_request_failure(err: BaseException) -> bool:
    """An object store's failed request (denied, unreachable, throttled): pyarrow's S3 errors carry no errno
    and name themselves "AWS Error" (its text says which)."""
    return isinstance(err, OSError) and err.errno is None and "AWS Error" in str(err)


def _reraise_request_failure(path: Path | str, err: BaseException) -> None:
    """A failed request says nothing about the file: reading on as if it were corrupt would show a store with
    its rows missing (every row, without credentials). A corrupt object (or another file system's) is skipped."""
    if is_remote(path) and is_request_failure(err):
        raise err


def _read_parquet(path: Path | str, *, columns: list[str] | None = None,
                  run_ids: list[str] | None = None) -> tuple[pa.Table, list[str]] | None:
    """(table, sources) of one file, or None (with a warning naming it) when it cannot be read. With
    `run_ids`, only the row groups whose run_id range may hold one of them are read (segments keep runs
    together in row groups of SEGMENT_ROW_GROUP rows)."""
    try:
        # ParquetFile.read skips the dataset machinery of pq.read_table: ~2x faster on small files.
        f = pq.ParquetFile(open_input(path))
        meta = f.schema_arrow.metadata or {}
        if run_ids is None:
            table = f.read(columns=columns, use_threads=False)
        else:
            index = f.schema_arrow.get_field_index("run_id")
            groups = []
            for i in range(f.metadata.num_row_groups):
                stats = f.metadata.row_group(i).column(index).statistics if index >= 0 else None
                if stats is None or not stats.has_min_max or any(stats.min <= r <= stats.max for r in run_ids):
                    groups.append(i)
            table = f.read_row_groups(groups, columns=columns, use_threads=False)
    except FileNotFoundError:
        raise _Vanished(str(path)) from None
    except (pa.ArrowException, OSError, ValueError) as err:
        _reraise_request_failure(path, err)
        log.warning("skipping unreadable results file %s: %s", path, err)
        return None
    sources = json.loads(meta[SOURCES_KEY]) if SOURCES_KEY in meta else []
    return table, sources


# ---------------------------------------------------------------------------------------------- row typing


def _field_type(annotation: Any) -> pa.DataType:
    """The Arrow type of a config field: numbers float64 (1 and 1e-3 share a column), bool, else string."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _field_type(args[0])
    if annotation is bool:
        return pa.bool_()
    if annotation in (int, float):
        return pa.float64()
    return pa.string()


def config_types(model: Any, prefix: str = "") -> dict[str, pa.DataType]:
    """`section.key` -> Arrow type for every field of a config (model instance), from its annotations."""
    from pydantic import BaseModel

    out: dict[str, pa.DataType] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.update(config_types(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = _field_type(field.annotation)
    return out


def _value_type(value: Any) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, (int, float)):
        return pa.float64()
    return pa.string()


def normalise_value(value: Any, kind: pa.DataType | None = None) -> Any:
    """A config value as its column's type: float64 numbers, bool, or string (containers as JSON)."""
    kind = kind or _value_type(value)
    if value is None:
        return None
    if pa.types.is_boolean(kind):
        return bool(value)
    if pa.types.is_floating(kind):
        return float(value)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def run_row_table(row: Mapping[str, Any], config_kinds: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """One run row with fixed types: RUN_SCHEMA columns, `config.*` by field type, `final.*` float64."""
    fields, values = [], []
    for field in RUN_SCHEMA:
        fields.append(field)
        values.append(row.get(field.name))
    for key in sorted(k for k in row if k.startswith("config.")):
        kind = (config_kinds or {}).get(key[len("config."):]) or _value_type(row[key])
        fields.append(pa.field(key, kind))
        values.append(normalise_value(row[key], kind))
    for key in sorted(k for k in row if k.startswith("final.")):
        fields.append(pa.field(key, pa.float64()))
        values.append(None if row[key] is None else float(row[key]))
    return pa.Table.from_arrays([pa.array([v], f.type) for f, v in zip(fields, values)], schema=pa.schema(fields))


@functools.cache
def _versions() -> str:
    return json.dumps(package_versions(), sort_keys=True)


def package_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("raygen", "torch", "ray", "optuna", "numpy", "pandas", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


_GIT: list[str | None] = []


def git_commit() -> str | None:
    if _GIT:  # once per process: the heartbeat rewrites the row every few seconds
        return _GIT[0]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
        commit = out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    _GIT.append(commit)
    return commit


# ---------------------------------------------------------------------------------------------- latest values


def _iso(t: datetime | pd.Timestamp) -> str:
    return pd.Timestamp(t).tz_convert("UTC").isoformat() if pd.Timestamp(t).tzinfo else pd.Timestamp(t).isoformat()


def latest_values(metrics: pd.DataFrame) -> dict[str, dict[str, tuple[float, datetime]]]:
    """run_id -> {"split/metric": (value, time)}: each metric's latest finite value, by `time` (then step).

    This is the one definition of "the final value": the run row's `final.*` columns hold exactly this,
    kept up to date by every writer (training, `raygen evaluate`), and readers may recompute it from the
    metrics table with this function.
    """
    out: dict[str, dict[str, tuple[float, datetime]]] = {}
    if metrics.empty:
        return out
    finite = metrics[pd.Series(pd.to_numeric(metrics["value"], errors="coerce")).map(math.isfinite).astype(bool)]
    ordered = finite.sort_values(["time", "step"], kind="stable")
    last = ordered.drop_duplicates(["run_id", "split", "metric"], keep="last")
    for row in last.itertuples(index=False):
        out.setdefault(row.run_id, {})[f"{row.split}/{row.metric}"] = (float(row.value), row.time)
    return out


def final_values(metrics: pd.DataFrame) -> pd.DataFrame:
    """`final.<split>/<metric>` columns per run (index run_id), recomputed from a metrics table."""
    latest = latest_values(metrics)
    return pd.DataFrame.from_dict(
        {run: {f"final.{k}": v for k, (v, _) in values.items()} for run, values in latest.items()}, orient="index"
    )


def _merge_latest(*sources: Mapping[str, tuple[float, Any]]) -> dict[str, tuple[float, Any]]:
    """Per key the value with the latest time; a value without a time (older stores) loses to any with one."""
    out: dict[str, tuple[float, Any]] = {}
    for values in sources:
        for key, (value, at) in values.items():
            at = pd.Timestamp(at) if at is not None else None
            if key not in out or (at is not None and (out[key][1] is None or at >= out[key][1])):
                out[key] = (value, at)
    return out


def _row_finals(row: Mapping[str, Any] | None) -> dict[str, tuple[float, Any]]:
    if not row:
        return {}
    times = json.loads(row.get("final_at_json") or "{}")
    out = {}
    for key, value in row.items():
        if key.startswith("final.") and value is not None and math.isfinite(value):
            name = key[len("final."):]
            out[name] = (float(value), times.get(name))
    return out


def _read_row(path: Path) -> dict[str, Any] | None:
    """The one reader of a single run row (the writers' read-modify-write, `run_row`): None when the file is
    missing, or unreadable (0 bytes, truncated: skipped with a warning naming it, as every reader skips such a
    file; a writer then writes it anew). One open file (a row replaced meanwhile is read whole, old or new)
    and no scanner threads: `pq.read_table` here crashed (SIGSEGV in Scanner.from_dataset) in a busy Tune driver."""
    try:
        with pq.ParquetFile(open_input(path)) as f:
            return f.read(use_threads=False).to_pylist()[0]
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError, ValueError, IndexError) as err:
        _reraise_request_failure(path, err)
        log.warning("skipping unreadable run row %s: %s", path, err)
        return None


def run_row(root: str | Path, run_id: str) -> dict[str, Any] | None:
    """The row of run `run_id` as a dict, or None when it is missing or unreadable (`_read_row`)."""
    return _read_row(Path(root) / "runs" / f"{run_id}.parquet")


# ---------------------------------------------------------------------------------------------- the writer


class RunRecorder:
    """Writes one run into the store. Only rank 0 of a data-parallel run creates one.

    The recorder that calls `write_run` owns the run row (training); any other recorder on the same run id
    (`raygen evaluate`, `raygen sample`) only adds metric and artifact rows, and its `flush` brings the row's
    `final.*` values up to date. Each recorder names its files with its own random writer id, so two
    recorders on one run never overwrite each other's files, whatever the timing. Thread-safe (the
    heartbeat thread rewrites the row while the training thread logs).
    """

    def __init__(
        self,
        root: str | Path,
        config: RunConfig,
        *,
        run_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.config = config
        self.run_id = run_id or new_run_id(config.algorithm)
        self.extra = dict(extra or {})
        self.writer = uuid.uuid4().hex[:12]
        self._seq = 0
        self._pending: list[dict[str, Any]] = []
        self.final: dict[str, float] = {}
        self.final_at: dict[str, datetime] = {}
        self._stored: dict[str, tuple[float, datetime]] = {}  # final values of the rows written to disk
        self._replace_finals = False
        self._owner = False
        self._ended = False  # this recorder wrote how the run ended (heartbeat: see there)
        self._lock = threading.RLock()
        self.started_at = now()
        # A restarted run (rewind to a checkpoint): the active seconds of its earlier lives and when this one
        # began, so that wall_time_s counts training time, not the hours it lay dead before the restart.
        self._earlier_wall_s = 0.0
        self._session_start: datetime | None = None
        self.steps = 0
        self.heartbeat_at: datetime | None = None
        # (heartbeat_at, heartbeat_step) to keep in the row: set when this recorder writes the row from outside
        # the run (a driver, `repair`: raygen.lifecycle.reopen_run), whose writes are no sign of the run's life
        self.kept_heartbeat: tuple[datetime | None, int | None] | None = None
        self.node = socket.gethostname()

    @property
    def files_dir(self) -> Path:
        return self.root / "files" / self.run_id

    @property
    def row_path(self) -> Path:
        return self.root / "runs" / f"{self.run_id}.parquet"

    def _piece(self, table: str) -> Path:
        path = self.root / table / PENDING / f"{self.run_id}-{self.writer}-{self._seq:06d}.parquet"
        self._seq += 1
        return path

    # ------------------------------------------------------------------ restart
    def rewind(self, step: int | None = None, *, after: datetime | None = None) -> dict[str, Any] | None:
        """Reopen this run id after a restart (Ray Train worker restart, Tune trial retry, `train --resume`).

        Keeps the first start time. With `step` (the checkpoint the run restarts from; 0 = from scratch) the
        metric and artifact rows logged after it are dropped, because the restarted run logs them again: the
        store never holds a step twice. With `after` (when the checkpoint was saved), rows at `step` itself
        written after it go too: the final evaluation reports at the checkpoint's step, and a run killed
        during it evaluates again. Final values and the step count are rebuilt from what remains (rows of
        other writers such as `raygen evaluate` included). Returns the previous run row, or None.
        """
        with self._lock:
            previous = _read_row(self.row_path)
            if previous is not None and previous.get("started_at") is not None:
                self.started_at = previous["started_at"]
                if step is not None:  # a restart: the earlier lives ended at their end or last heartbeat
                    last = previous.get("ended_at") or previous.get("heartbeat_at") or self.started_at
                    self._earlier_wall_s = max(0.0, (last - self.started_at).total_seconds()) \
                        if previous.get("wall_time_s") is None else float(previous["wall_time_s"])
                    self._session_start = now()
            if step is not None:
                for table in TABLES:
                    _drop_rows(self.root, table, self.run_id, step, after, self)
            metrics = read_metrics(self.root, [self.run_id])
            latest = latest_values(metrics).get(self.run_id, {})
            self.final = {k: v for k, (v, _) in latest.items()}
            self.final_at = {k: t for k, (_, t) in latest.items()}
            self._stored = dict(latest)
            self.steps = int(metrics["step"].max()) if not metrics.empty else 0
            self._replace_finals = True  # the row's final.* may hold rows just dropped
            return previous

    # ------------------------------------------------------------------ run row
    def write_run(self, status: str, *, error: str | None = None, ended_at: datetime | None = None) -> None:
        """Write the run row (this recorder becomes its owner) after flushing buffered metrics; an ended run's
        pieces are then folded into the segments. `ended_at`: when an ended run really ended, if not now (a
        lost run marked failed later by `raygen.lifecycle.repair`: its last sign of life)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        with self._lock:
            self._owner = True
            self._ended = status in ENDED
            try:
                self.flush()  # buffered rows are stored first; final.* only ever holds stored rows
            except OSError as err:
                if status == "running":
                    raise
                # a full disk must not keep an ended run `running`: its row is written without those rows
                log.error("run %s: %d metric rows not written: %s", self.run_id, len(self._pending), err)
            with locked(self.root, f"run-{self.run_id}"):
                self._write_row_locked(status, error, ended_at)
        if status in ENDED:
            self.fold()

    def heartbeat(self, step: int) -> bool:
        """Rewrite the `running` row with `heartbeat_at` = now and `heartbeat_step` = the latest update.

        Called periodically while training (raygen.lifecycle.Heartbeat); cheap: one small file rename. Once
        this recorder has written how the run ended it writes nothing and returns False (a late heartbeat
        never reopens an ended run; the heartbeat thread then stops).
        """
        with self._lock:
            if self._ended:
                return False
            self.steps = max(self.steps, int(step))
            self.write_run("running")
            return True

    def _wall_s(self, ended: datetime) -> float:
        if self._session_start is None:
            return (ended - self.started_at).total_seconds()
        return self._earlier_wall_s + max(0.0, (ended - self._session_start).total_seconds())

    def _write_row_locked(self, status: str, error: str | None, ended_at: datetime | None = None) -> None:
        t = now() if ended_at is None or status == "running" else ended_at
        ended = t if status != "running" else None
        mine = dict(self._stored)
        if self._replace_finals:
            finals = mine
            self._replace_finals = False
        else:
            finals = _merge_latest(_row_finals(_read_row(self.row_path)), mine)
        beat_at, beat_step = self.kept_heartbeat or (t, self.steps)
        self.heartbeat_at = beat_at
        row: dict[str, Any] = {
            "run_id": self.run_id,
            "algorithm": self.config.algorithm,
            "dataset": self.config.dataset,
            "status": status,
            "error": error,
            "seed": self.config.seed,
            "device": self.extra.get("device", self.config.device),
            "workers": int(self.extra.get("workers", 1)),
            "sweep_id": self.extra.get("sweep_id"),
            "trial_id": self.extra.get("trial_id"),
            "params_json": json.dumps(self.extra["params"], sort_keys=True) if "params" in self.extra else None,
            "resources_json": json.dumps(self.extra["resources"], sort_keys=True)
            if "resources" in self.extra
            else None,
            "stopped_early": bool(self.extra.get("stopped_early", False)),
            "smoke": bool(self.extra.get("smoke", False)),
            "node": self.node,
            "started_at": self.started_at,
            "ended_at": ended,
            "wall_time_s": self._wall_s(ended) if ended else None,
            "steps": self.steps,
            # last sign of life: a `running` row whose heartbeat is stale is shown `lost` (raygen.lifecycle)
            "heartbeat_at": beat_at,
            "heartbeat_step": beat_step,
            "config_json": json.dumps(self.config.to_dict(), sort_keys=True),
            "versions_json": _versions(),  # once per process: the heartbeat rewrites the row often
            "git_commit": git_commit(),
            "final_at_json": json.dumps({k: _iso(at) for k, (_, at) in sorted(finals.items()) if at is not None}),
        }
        for key, value in flatten(self.config.to_dict()).items():
            row[f"config.{key}"] = value
        for key, (value, _) in sorted(finals.items()):
            row[f"final.{key}"] = value
        atomic_write_table(self.row_path, run_row_table(row, config_types(self.config)))

    def _publish(self) -> None:
        """Not the row's owner (`raygen evaluate`): bring the row's final.* up to date with what this recorder
        logged (latest time wins), keeping everything else; fold at once if the run has ended."""
        ended = False
        with locked(self.root, f"run-{self.run_id}"):
            row = _read_row(self.row_path)
            if row is None:
                return
            finals = _merge_latest(_row_finals(row), self._stored)
            for key in [k for k in row if k.startswith("final.")]:
                del row[key]
            row.update({f"final.{k}": v for k, (v, _) in finals.items()})
            row["final_at_json"] = json.dumps({k: _iso(at) for k, (_, at) in sorted(finals.items()) if at is not None})
            kinds = {f.name[len("config."):]: f.type for f in pq.read_schema(open_input(self.row_path))
                     if f.name.startswith("config.")}
            atomic_write_table(self.row_path, run_row_table(row, kinds))
            ended = row.get("status") in ENDED
        if ended:
            self.fold()

    def fold(self) -> None:
        """Fold this run's pieces into segments (normally when the run ends). Failing to fold loses nothing:
        raygen's readers read the pieces; `raygen compact` folds them later."""
        for table in TABLES:
            try:
                fold(self.root, table, [self.run_id])
            except OSError as err:
                log.warning("could not fold the %s of run %s (raygen compact will): %s", table, self.run_id, err)

    # ------------------------------------------------------------------ metrics
    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Buffer metrics named `split/metric` (e.g. `valid/lower_bound`); non-finite values are kept as NaN."""
        t = now()
        with self._lock:
            self.steps = max(self.steps, step)
            for key, value in metrics.items():
                split, _, metric = key.partition("/")
                if not metric:
                    split, metric = "train", key
                value = float(value)
                self._pending.append(
                    {"run_id": self.run_id, "step": int(step), "split": split, "metric": metric, "value": value,
                     "time": t}
                )
                if math.isfinite(value):
                    self.final[f"{split}/{metric}"] = value
                    self.final_at[f"{split}/{metric}"] = t

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            table = pa.Table.from_pylist(self._pending, schema=METRICS_SCHEMA)
            atomic_write_table(self._piece("metrics"), table)
            for row in self._pending:
                if math.isfinite(row["value"]):
                    self._stored[f"{row['split']}/{row['metric']}"] = (row["value"], row["time"])
            self._pending = []
            if not self._owner:
                self._publish()

    # ------------------------------------------------------------------ files
    def save_file(self, step: int, name: str, kind: str, data: bytes) -> Path:
        path = self.files_dir / name
        atomic_write_bytes(path, data)
        row = {
            "run_id": self.run_id,
            "step": int(step),
            "name": name,
            "kind": kind,
            "path": str(path.relative_to(self.root)),
            "time": now(),
        }
        with self._lock:
            atomic_write_table(self._piece("artifacts"), pa.Table.from_pylist([row], schema=ARTIFACTS_SCHEMA))
        if not self._owner:
            status = (_read_row(self.row_path) or {}).get("status")
            if status in ENDED:
                with contextlib.suppress(OSError):
                    fold(self.root, "artifacts", [self.run_id])
        return path


# ---------------------------------------------------------------------------------------------- folding


def _pieces(root: Path, table: str, run_ids: Iterable[str] | None = None) -> list[Path]:
    wanted = None if run_ids is None else set(run_ids)
    out = []
    for entry in _parquet_entries(Path(root) / table / PENDING):
        match = PIECE_NAME.match(entry.name)
        if match and (wanted is None or match["run"] in wanted):
            out.append(Path(entry.path))
    return out


def _tail(root: Path, table: str) -> tuple[Path | None, list[str], int]:
    """The segment named in the dot file beside the segments (the last one folded into): path, the piece
    names it lists and its row count; (None, [], 0) when there is none yet."""
    try:
        name = read_bytes(root / table / ".tail").decode().strip()
    except OSError:
        return None, [], 0
    path = root / table / name
    try:
        meta = pq.read_metadata(open_input(path))
    except FileNotFoundError:  # named before it was written, and the fold stopped in between
        return None, [], 0
    except (OSError, pa.ArrowException, ValueError) as err:
        _reraise_request_failure(path, err)
        log.warning("skipping unreadable results file %s: %s", path, err)
        return None, [], 0
    return path, json.loads((meta.metadata or {}).get(SOURCES_KEY, b"[]")), meta.num_rows


def fold(root: str | Path, table: str, run_ids: Iterable[str] | None = None) -> int:
    """Move the pieces of `run_ids` (all runs when None) into the tail segment. Returns the pieces folded.

    Order, so that no reader ever sees a row twice or misses one, whatever instant a crash stops it:
    (1) delete every piece the tail segment already lists (left by a fold that stopped before deleting
    them); (2) write the tail segment with its old rows + the pieces' rows, its metadata listing the
    pieces, under a temporary name, and rename it over the old tail; when the tail is full, first name a
    new segment in `.tail`, then write it; (3) delete the pieces. Plain readers see the segment before or
    after (2), never both, and never a piece; raygen's readers drop a piece once a segment lists it.
    Only the tail can list a live piece: (1) runs before the tail changes, so older segments list none.
    """
    root = Path(root)
    schema = TABLES[table]
    wanted = None if run_ids is None else set(run_ids)
    with locked(root, f"fold-{table}"):
        pieces = _pieces(root, table)
        if not pieces:
            return 0
        tail, tail_sources, tail_rows = _tail(root, table)
        listed = set(tail_sources)
        fresh = []
        for piece in pieces:
            if piece.name in listed:
                delete_file(piece)
            elif wanted is None or PIECE_NAME.match(piece.name)["run"] in wanted:
                try:
                    got = _read_parquet(piece)
                except _Vanished:
                    continue
                if got is not None:  # an unreadable piece stays where it is, skipped by readers
                    fresh.append((piece, *got))
        # a piece rewritten by a rewind lists the piece it replaced: keep only the newer one
        replaced = {s for _, _, sources in fresh for s in sources}
        for piece in [p for p, _, _ in fresh if p.name in replaced]:
            delete_file(piece)
        fresh = [(p, t) for p, t, _ in fresh if p.name not in replaced]
        if not fresh:
            return 0
        tables, sources = [], [p.name for p, _ in fresh]
        # On an object store there is no lock between processes: each fold writes a new segment (named by
        # the pieces it holds, so two folds of the same pieces write the same object) and never rewrites one,
        # so two processes folding at once cannot lose each other's rows.
        if is_remote(root):
            tail = None
        if tail is not None and tail_rows < SEGMENT_ROWS and len(tail_sources) < SEGMENT_SOURCES:
            try:
                got = _read_parquet(tail)
            except _Vanished:
                got = None
            if got is None:
                tail = None
            else:
                tables.append(got[0].select(schema.names).cast(schema))
                sources += got[1]
        else:
            tail = None
        if tail is None and is_remote(root):
            import hashlib

            digest = hashlib.sha256("\n".join(sorted(sources)).encode()).hexdigest()[:12]
            tail = root / table / f"seg-{digest}.parquet"
        elif tail is None:
            tail = root / table / f"seg-{uuid.uuid4().hex[:12]}.parquet"
            atomic_write_bytes(root / table / ".tail", tail.name.encode())
        tables += [t.select(schema.names).cast(schema) for _, t in fresh]
        atomic_write_table(tail, pa.concat_tables(tables), sources)
        for piece, _ in fresh:
            delete_file(piece)
        return len(fresh)


def _drop_rows(root: Path, table: str, run_id: str, step: int, after: datetime | None, recorder: RunRecorder) -> None:
    """Drop a run's rows after `step` (and at `step` after `after`) from its pieces and from segments."""

    def drop_mask(t: pa.Table) -> pa.Array:
        mine = pc.equal(t["run_id"], run_id)
        late = pc.greater(t["step"], step)
        if after is not None:
            at_step_later = pc.and_(pc.equal(t["step"], step), pc.greater(t["time"], pa.scalar(after, TS)))
            late = pc.or_(late, at_step_later)
        return pc.and_(mine, late)

    with locked(root, f"fold-{table}"):
        for piece in _pieces(root, table, [run_id]):
            try:
                got = _read_parquet(piece)
            except _Vanished:
                continue
            if got is None:
                continue
            drop = drop_mask(got[0])
            if not pc.any(drop).as_py():
                continue
            kept = got[0].filter(pc.invert(drop))
            if kept.num_rows:
                # a new name covering the old one: a reader holding both counts the rows once
                with recorder._lock:
                    atomic_write_table(recorder._piece(table), kept, [piece.name, *got[1]])
            delete_file(piece)
        for entry in _parquet_entries(root / table):
            try:
                got = _read_parquet(entry.path, columns=["run_id", "step", "time"])
            except _Vanished:
                continue
            if got is None or not pc.any(drop_mask(got[0])).as_py():
                continue
            full = _read_parquet(entry.path)
            if full is None:
                continue
            # rewritten under the same name: a reader sees it before or after the drop, never both
            atomic_write_table(Path(entry.path), full[0].filter(pc.invert(drop_mask(full[0]))),
                               full[1] if full[1] else None)


def compact(root: str | Path, *, running: bool = False) -> dict[str, int]:
    """Fold the pieces of every run that is not running (all runs with `running`), delete covered pieces
    and refresh the run-row cache. Safe at any time, also while runs write; returns pieces folded per table."""
    root = Path(root)
    runs = read_runs(root, refresh_cache=True)
    live = set() if running or runs.empty else set(runs.loc[runs["status"] == "running", "run_id"])
    out = {}
    for table in TABLES:
        ids = {m["run"] for p in _pieces(root, table) if (m := PIECE_NAME.match(p.name))} - live
        out[table] = fold(root, table, sorted(ids)) if ids else 0
    return out


# ---------------------------------------------------------------------------------------------- readers


def _read_table(root: Path, table: str, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Segments plus the pieces no segment lists yet: every row once, runs in progress included."""
    schema = TABLES[table]
    wanted = None if run_ids is None else sorted(set(run_ids))
    directory = Path(root) / table
    parts: dict[str, tuple[pa.Table, list[str]]] = {}

    def read_pieces() -> None:
        for path in _pieces(root, table, wanted):
            if path.name in parts:
                continue
            try:
                got = _read_parquet(path)
            except _Vanished:  # folded meanwhile (its rows are in the segment read next) or replaced by a rewind
                continue
            if got is not None:
                parts[path.name] = got

    for attempt in range(20):
        # Pieces first, segments second: a piece folded meanwhile is then found in its segment and dropped as
        # covered, never missed; pieces listed again last bring those written meanwhile (a rewind's too).
        read_pieces()
        try:
            segments = []
            for entry in _parquet_entries(directory):
                got = _read_parquet(entry.path, run_ids=wanted)
                if got is not None:
                    segments.append(got)
        except _Vanished:  # segments are replaced by rename, never deleted: only by hand. Read them again
            time.sleep(0.01 * attempt)
            continue
        read_pieces()
        break
    else:
        raise RuntimeError(f"{directory} kept changing while being read")
    parts_list = [(name, t, sources) for name, (t, sources) in parts.items()]
    covered = {s for _, _, sources in parts_list for s in sources} | {s for _, sources in segments for s in sources}
    tables = [t for t, _ in segments] + [t for name, t, _ in parts_list if name not in covered]
    tables = [t.select(schema.names).cast(schema) for t in tables]
    if wanted is not None:
        tables = [t.filter(pc.is_in(t["run_id"], pa.array(wanted, pa.string()))) for t in tables]
    if not tables:
        return schema.empty_table().to_pandas()
    return pa.concat_tables(tables).to_pandas()


def read_metrics(root: str | Path, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Long table: run_id, step, split, metric, value, time (runs in progress included)."""
    return _read_table(Path(root), "metrics", run_ids)


def read_artifacts(root: str | Path) -> pd.DataFrame:
    return _read_table(Path(root), "artifacts")


def _read_run_tables(root: Path, refresh_cache: bool) -> list[pa.Table]:
    directory = root / "runs"
    entries = _parquet_entries(directory)
    cache_path = directory / RUNS_CACHE
    cached: dict[str, tuple[tuple[int, int], int]] = {}
    cache = None
    # On an object store the cache is off: an object's mtime has one-second resolution and no inode, so a
    # row rewritten within a second at the same size would look unchanged. Every row file is read.
    got = None
    if not is_remote(root) and cache_path.is_file():
        got = _read_parquet(cache_path)
        if got is not None:
            cache = got[0]
            keys = zip(cache["_file"].to_pylist(), cache["_size"].to_pylist(), cache["_mtime_ns"].to_pylist())
            cached = {name: ((size, mtime), i) for i, (name, size, mtime) in enumerate(keys)}
    young = time.time_ns() - int(CACHE_MIN_AGE_S * 1e9)
    hit, fresh, stats = [], [], {}
    for entry in entries:
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        # No inode in the key: a copy that keeps modification times (cp -a, rsync -a) keeps the cache valid.
        # A rewrite always changes the mtime, since a file is only trusted once older than CACHE_MIN_AGE_S.
        key = (st.st_size, st.st_mtime_ns)
        stats[entry.name] = key
        if entry.name in cached and cached[entry.name][0] == key and st.st_mtime_ns < young:
            hit.append(cached[entry.name][1])
        else:
            fresh.append(entry)
    tables = []
    if hit and cache is not None:
        internal = [c for c in cache.column_names if c in ("_file", "_size", "_mtime_ns", "_ino")]  # _ino: old caches
        tables.append(cache.take(pa.array(hit, pa.int64())).drop_columns(internal))
    new = []
    for entry in fresh:
        try:
            got = _read_parquet(entry.path)
        except _Vanished:
            continue
        if got is not None and got[0].num_rows:
            new.append((entry.name, got[0]))
    tables += [t for _, t in new]
    old_enough = [(n, t) for n, t in new if stats[n][1] < young]
    if not is_remote(root) and (refresh_cache or len(old_enough) >= 32):
        _write_runs_cache(cache_path, tables, [n for n, _ in new], stats, cache, hit)
    return tables


def _write_runs_cache(path: Path, tables: list[pa.Table], new_names: list[str], stats: dict, cache: pa.Table | None,
                      hit: list[int]) -> None:
    """Best effort (a read-only store just stays uncached): the rows read, keyed on their files' identity."""
    names = (cache["_file"].take(pa.array(hit, pa.int64())).to_pylist() if hit and cache is not None else []) + new_names
    if not names:
        return
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
        table = table.append_column("_file", pa.array(names, pa.string()))
        for i, column in enumerate(("_size", "_mtime_ns")):
            table = table.append_column(column, pa.array([stats[n][i] for n in names], pa.int64()))
        atomic_write_table(path, table)
    except (OSError, pa.ArrowException) as err:
        log.debug("run-row cache not written: %s", err)


def read_runs(root: str | Path, *, refresh_cache: bool = False) -> pd.DataFrame:
    """One row per run; config columns are `config.<section>.<key>`, final metrics `final.<split>/<metric>`
    (each metric's latest finite value, `latest_values`). Unreadable run files are skipped with a warning."""
    tables = _read_run_tables(Path(root), refresh_cache)
    if not tables:
        return RUN_SCHEMA.empty_table().to_pandas()
    # Older stores typed all-null columns as null and ints as int64: permissive promotion unifies them.
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def find_run(root: str | Path, run: str) -> str:
    """Resolve a run id or unique prefix (or `latest`) to a run id present in the store."""
    runs = read_runs(root)
    if runs.empty:
        raise KeyError(f"no runs in results store {root}")
    if run == "latest":
        return str(runs.sort_values("started_at").iloc[-1]["run_id"])
    ids = [r for r in runs["run_id"] if r == run or r.startswith(run)]
    if run in ids:
        return run
    if len(ids) != 1:
        raise KeyError(
            f"run '{run}' {'is ambiguous' if ids else 'not found'} in {root}"
            + (f": {', '.join(ids[:5])}" if ids else "")
        )
    return ids[0]
