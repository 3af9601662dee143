"""Reading a results store for analysis: the same frames as `raygen.results.read_*`, read in bulk.

`raygen.results` reads one file at a time with pandas, which is fine for a few runs. A sweep of a thousand
trials has thousands of small metric files, so here the metric and artifact tables (one fixed schema) are
read as one `pyarrow.dataset` scan, and the run rows (whose config columns differ between algorithms) are
read with pyarrow and concatenated once with schema promotion. The frames have the columns documented in
raygen/results/store.py; nothing here imports Ray.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from raygen.results.store import ARTIFACTS_SCHEMA, METRICS_SCHEMA

log = logging.getLogger(__name__)

SWEEPS_DIR = "sweeps"


def _parquet_files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    # Dot and underscore files are temporaries of the atomic writer (see raygen/results/store.py).
    return sorted(
        e.path for e in os.scandir(directory) if e.name.endswith(".parquet") and not e.name.startswith((".", "_"))
    )


def _empty(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def _read_one(path: str) -> pa.Table | None:
    try:
        # ParquetFile.read skips the dataset machinery of pq.read_table: ~2x faster on one-row files.
        return pq.ParquetFile(path).read(use_threads=False)
    except FileNotFoundError:  # replaced between listing and reading (a run row changing status)
        return None


def read_runs_fast(root: str | Path) -> pd.DataFrame:
    """One row per run (same columns as `raygen.results.read_runs`)."""
    files = _parquet_files(Path(root) / "runs")
    if not files:
        return pd.DataFrame({"run_id": pd.Series(dtype=object)})
    tables = [t for t in map(_read_one, files) if t is not None]
    # Columns differ between algorithms and a column that is all-null in one file is typed null there;
    # permissive promotion unifies both (null -> string, int -> float) instead of failing.
    table = pa.concat_tables(tables, promote_options="permissive")
    return table.to_pandas()


def _scan(directory: Path, schema: pa.Schema, files: list[str] | None = None) -> pd.DataFrame:
    files = _parquet_files(directory) if files is None else files
    if not files:
        return _empty(schema)
    dataset = ds.dataset(files, format="parquet", schema=schema)
    try:
        return dataset.to_table().to_pandas()
    except FileNotFoundError:  # a file vanished mid-scan (a writer's rename): read what is there now
        return _scan(directory, schema)


def read_metrics_fast(root: str | Path, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Long metrics table (run_id, step, split, metric, value, time) in one scan; optional run filter."""
    directory = Path(root) / "metrics"
    files = None
    if run_ids is not None:
        wanted = set(run_ids)
        # Files are named <run_id>-<seq>.parquet; run ids may themselves contain dashes.
        files = [f for f in _parquet_files(directory) if Path(f).stem.rsplit("-", 1)[0] in wanted]
    return _scan(directory, METRICS_SCHEMA, files)


def read_artifacts_fast(root: str | Path) -> pd.DataFrame:
    return _scan(Path(root) / "artifacts", ARTIFACTS_SCHEMA)


def read_sweep_specs(root: str | Path) -> dict[str, dict[str, Any]]:
    """Resolved sweep specs stored as RESULTS/sweeps/<sweep_id>.json (absent for plain runs)."""
    directory = Path(root) / SWEEPS_DIR
    specs: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return specs
    for path in sorted(directory.glob("*.json")):
        if path.name.startswith((".", "_")):
            continue
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            log.warning("ignoring unreadable sweep spec %s: %s", path, err)
            continue
        if isinstance(spec, dict):
            specs[path.stem] = spec
    return specs


def store_fingerprint(root: str | Path) -> str:
    """Changes whenever a file is added, replaced or removed under the store (the dashboard polls this)."""
    root = Path(root)
    count, latest = 0, 0
    for sub in ("runs", "metrics", "artifacts", SWEEPS_DIR):
        directory = root / sub
        if not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            if entry.name.startswith((".", "_")):
                continue
            count += 1
            latest = max(latest, entry.stat().st_mtime_ns)
    return f"{count}-{latest}"


@dataclass
class Store:
    """The frames of one results store; metrics are read on first use (they are the big table)."""

    root: Path
    runs: pd.DataFrame
    artifacts: pd.DataFrame
    sweeps: dict[str, dict[str, Any]] = field(default_factory=dict)
    _metrics: pd.DataFrame | None = None

    @property
    def metrics(self) -> pd.DataFrame:
        if self._metrics is None:
            self._metrics = read_metrics_fast(self.root)
        return self._metrics


def load_store(root: str | Path, *, metrics: bool = False) -> Store:
    """Read a results store. Raises FileNotFoundError naming the path when it is not a store."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results store {root} does not exist")
    if not any((root / sub).is_dir() for sub in ("runs", "metrics", "artifacts")):
        raise FileNotFoundError(f"{root} is not a raygen results store (no runs/, metrics/ or artifacts/ folder)")
    store = Store(root, read_runs_fast(root), read_artifacts_fast(root), read_sweep_specs(root))
    if metrics:
        store._metrics = read_metrics_fast(root)
    return store
