"""The Parquet results store: one writer (`RunRecorder`) and plain readers.

Layout under the results root (schema in docs/results.md):

    runs/<run_id>.parquet              one row per run, replaced atomically when its status changes
    metrics/<run_id>-<seq>.parquet     long table: run_id, step, split, metric, value, time
    artifacts/<run_id>-<seq>.parquet   index: run_id, step, name, kind, path (relative to the root), time
    files/<run_id>/...                 the artifact files themselves (PNG, text, checkpoints)

Every file is written under a dot-prefixed temporary name and renamed into place, so readers (which
ignore dot files, as pyarrow does) never see half-written data, and a new run never rewrites another
run's files.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

from raygen.config import RunConfig, flatten

METRICS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int64()),
        ("split", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("time", pa.timestamp("us", tz="UTC")),
    ]
)
ARTIFACTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("step", pa.int64()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("path", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
    ]
)
RUN_STATUSES = ("running", "completed", "failed", "stopped")


def now() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id(algorithm: str) -> str:
    return f"{algorithm}-{now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_table(path: Path, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue())


def normalise_value(value: Any) -> Any:
    """Arrow-safe scalar: numbers become float64 (bool stays bool), containers become JSON strings.

    The same config key may be an int in one run and a float in another (1 vs 1.0e-3) and a column must
    keep one type across files, so every number is stored as float64.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


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


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunRecorder:
    """Writes one run into the store. Only rank 0 of a data-parallel run creates one."""

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
        self._pending: list[dict[str, Any]] = []
        self._seq = self._next_seq()
        self.final: dict[str, float] = {}
        self.started_at = now()
        self.steps = 0
        self.node = socket.gethostname()

    def _next_seq(self) -> int:
        """Continue numbering after files an earlier attempt of this run left (resume)."""
        seqs = [
            int(p.stem.rsplit("-", 1)[1])
            for sub in ("metrics", "artifacts")
            for p in (self.root / sub).glob(f"{self.run_id}-*.parquet")
        ]
        return max(seqs, default=-1) + 1

    def _own_parts(self, sub: str) -> list[Path]:
        prefix = f"{self.run_id}-"
        return sorted(
            p for p in (self.root / sub).glob(f"{self.run_id}-*.parquet")
            if p.stem[len(prefix):].isdigit()  # not another run whose id extends this one
        )

    def rewind(self, step: int | None = None, *, after: datetime | None = None) -> dict[str, Any] | None:
        """Reopen this run id after a restart (Ray Train worker restart, Tune trial retry or restore).

        Keeps the first start time. With `step` (the checkpoint the run restarts from; 0 = from scratch) the
        metric and artifact rows logged after it are dropped, because the restarted run logs them again: the
        store never holds a step twice. Final values and the step count are rebuilt from what remains.
        With `after` (when the checkpoint was saved), rows at `step` itself written after it go too: the
        final evaluation reports at the checkpoint's step, and a run killed during it evaluates again.
        Returns the previous run row, or None for a new run.
        """
        previous = None
        path = self.root / "runs" / f"{self.run_id}.parquet"
        if path.is_file():
            previous = pq.read_table(path).to_pylist()[0]
            self.started_at = previous["started_at"]
        for sub in ("metrics", "artifacts"):
            for part in self._own_parts(sub) if step is not None else []:
                table = pq.read_table(part)
                keep = pa.compute.less_equal(table["step"], step)
                if after is not None:
                    later = pa.compute.greater(table["time"], pa.scalar(after, pa.timestamp("us", tz="UTC")))
                    keep = pa.compute.and_(keep, pa.compute.invert(
                        pa.compute.and_(pa.compute.equal(table["step"], step), later)))
                if pa.compute.all(keep).as_py():
                    continue
                kept = table.filter(keep)
                if kept.num_rows:
                    atomic_write_table(part, kept)
                else:
                    part.unlink(missing_ok=True)
        self.final, self.steps = {}, 0
        metrics = read_metrics(self.root, [self.run_id])
        metrics = metrics[metrics["run_id"] == self.run_id]
        for row in metrics.sort_values(["step", "time"]).itertuples():
            self.steps = max(self.steps, int(row.step))
            if math.isfinite(row.value):
                self.final[f"{row.split}/{row.metric}"] = float(row.value)
        return previous

    @property
    def files_dir(self) -> Path:
        return self.root / "files" / self.run_id

    # ------------------------------------------------------------------ run row
    def write_run(self, status: str, *, error: str | None = None) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        ended = now() if status != "running" else None
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
            "node": self.node,
            "started_at": self.started_at,
            "ended_at": ended,
            "wall_time_s": (ended - self.started_at).total_seconds() if ended else None,
            "steps": self.steps,
            # last sign of life: a `running` row whose heartbeat is stale is shown `lost` (raygen.lifecycle)
            "heartbeat_at": now(),
            "heartbeat_step": self.steps,
            "config_json": json.dumps(self.config.to_dict(), sort_keys=True),
            "versions_json": json.dumps(package_versions(), sort_keys=True),
            "git_commit": git_commit(),
        }
        for key, value in flatten(self.config.to_dict()).items():
            row[f"config.{key}"] = normalise_value(value)
        for key, value in sorted(self.final.items()):
            row[f"final.{key}"] = float(value)
        table = pa.Table.from_pylist([row])
        table = table.set_column(
            table.schema.get_field_index("started_at"), "started_at", pa.array([self.started_at], pa.timestamp("us", tz="UTC"))
        )
        table = table.set_column(
            table.schema.get_field_index("ended_at"), "ended_at", pa.array([ended], pa.timestamp("us", tz="UTC"))
        )
        table = table.set_column(
            table.schema.get_field_index("heartbeat_at"), "heartbeat_at",
            pa.array([row["heartbeat_at"]], pa.timestamp("us", tz="UTC")),
        )
        atomic_write_table(self.root / "runs" / f"{self.run_id}.parquet", table)

    def heartbeat(self, step: int) -> None:
        """Rewrite the `running` row with the time and the latest update (called periodically while training)."""
        self.steps = max(self.steps, int(step))
        self.write_run("running")

    # ------------------------------------------------------------------ metrics
    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Buffer metrics named `split/metric` (e.g. `valid/lower_bound`); non-finite values are kept as NaN."""
        t = now()
        self.steps = max(self.steps, step)
        for key, value in metrics.items():
            split, _, metric = key.partition("/")
            if not metric:
                split, metric = "train", key
            value = float(value)
            self._pending.append(
                {"run_id": self.run_id, "step": int(step), "split": split, "metric": metric, "value": value, "time": t}
            )
            if math.isfinite(value):
                self.final[f"{split}/{metric}"] = value

    def flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_pylist(self._pending, schema=METRICS_SCHEMA)
        atomic_write_table(self.root / "metrics" / f"{self.run_id}-{self._seq:06d}.parquet", table)
        self._seq += 1
        self._pending = []

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
        atomic_write_table(
            self.root / "artifacts" / f"{self.run_id}-{self._seq:06d}.parquet",
            pa.Table.from_pylist([row], schema=ARTIFACTS_SCHEMA),
        )
        self._seq += 1
        return path


# ---------------------------------------------------------------------------------------------- readers


def _read_file(path: Path) -> pd.DataFrame:
    # ParquetFile.read without threads is ~2x faster than read_table on the many one-row run files.
    return pq.ParquetFile(path).read(use_threads=False).to_pandas()


def _read_dir(directory: Path, schema: pa.Schema | None = None) -> pd.DataFrame:
    files = sorted(p for p in directory.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        return pd.DataFrame({f.name: pd.Series(dtype=object) for f in schema} if schema else {})
    frames = [_read_file(f) for f in files]
    return pd.concat(frames, ignore_index=True, sort=False)


def read_runs(root: str | Path) -> pd.DataFrame:
    """One row per run; config columns are `config.<section>.<key>`, final metrics `final.<split>/<metric>`."""
    return _read_dir(Path(root) / "runs")


def read_metrics(root: str | Path, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    root = Path(root) / "metrics"
    if run_ids is None:
        return _read_dir(root, METRICS_SCHEMA)
    frames = []
    for run_id in run_ids:
        files = sorted(root.glob(f"{run_id}-*.parquet"))
        frames += [_read_file(f) for f in files if not f.name.startswith(".")]
    if not frames:
        return _read_dir(root / "__none__", METRICS_SCHEMA)
    return pd.concat(frames, ignore_index=True)


def read_artifacts(root: str | Path) -> pd.DataFrame:
    return _read_dir(Path(root) / "artifacts", ARTIFACTS_SCHEMA)


def find_run(root: str | Path, run: str) -> str:
    """Resolve a run id or unique prefix (or `latest`) to a run id present in the store."""
    runs = read_runs(root)
    if runs.empty:
        raise KeyError(f"no runs in results store {root}")
    if run == "latest":
        return str(runs.sort_values("started_at").iloc[-1]["run_id"])
    ids = [r for r in runs["run_id"] if r == run or r.startswith(run)]
    if len(ids) != 1:
        raise KeyError(
            f"run '{run}' {'is ambiguous' if ids else 'not found'} in {root}"
            + (f": {', '.join(ids[:5])}" if ids else "")
        )
    return ids[0]
