"""Reading a results store for analysis: the same frames as `raygen.results.read_*`, read in bulk.

The `read_*_fast` names are kept for the callers; they are the store's own readers (raygen.results), which
read finished runs' metrics from a few large segments, runs in progress from their pieces, and run rows
through a cache (docs/results.md). The frames have the columns documented in raygen/results/store.py;
nothing here imports Ray.
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

from raygen.results.store import PENDING, read_artifacts, read_bytes, read_metrics, read_runs, remote

log = logging.getLogger(__name__)

SWEEPS_DIR = "sweeps"


def read_runs_fast(root: str | Path) -> pd.DataFrame:
    """One row per run (same columns as `raygen.results.read_runs`, which it is: that reader keeps a cache of
    the run rows and skips unreadable files with a warning)."""
    runs = read_runs(root)
    return runs if not runs.empty else pd.DataFrame({"run_id": pd.Series(dtype=object)})


def read_metrics_fast(root: str | Path, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Long metrics table (run_id, step, split, metric, value, time); optional run filter. The store's own
    reader: it reads the few large segments of finished runs plus the pieces of runs in progress, each row once."""
    return read_metrics(root, run_ids)


def read_artifacts_fast(root: str | Path) -> pd.DataFrame:
    return read_artifacts(root)


def read_sweep_specs(root: str | Path) -> dict[str, dict[str, Any]]:
    """Resolved sweep specs stored as RESULTS/sweeps/<sweep_id>.json (absent for plain runs)."""
    directory = Path(root) / SWEEPS_DIR
    specs: dict[str, dict[str, Any]] = {}
    got = remote(directory)
    if got is not None:  # an object store: list the prefix through the store's client
        import pyarrow.fs as pafs

        infos = got[0].get_file_info(pafs.FileSelector(got[1], allow_not_found=True))
        paths = sorted(directory / i.base_name for i in infos if i.type == pafs.FileType.File)
    elif directory.is_dir():
        paths = sorted(directory.iterdir())
    else:
        return specs
    for path in paths:
        if path.suffix != ".json" or path.name.startswith((".", "_")):
            continue
        try:
            spec = json.loads(read_bytes(path).decode("utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            log.warning("ignoring unreadable sweep spec %s: %s", path, err)
            continue
        if isinstance(spec, dict):
            specs[path.stem] = spec
    return specs


def store_fingerprint(root: str | Path) -> str:
    """Changes whenever a file is added, replaced or removed under the store (the dashboard polls this)."""
    subs = ("runs", "metrics", "artifacts", SWEEPS_DIR, f"metrics/{PENDING}", f"artifacts/{PENDING}")
    got = remote(root)
    if got is not None:  # an object store: one listing per folder, objects' sizes and modification times
        import pyarrow.fs as pafs

        fs, base = got
        stamps = [(info.size or 0, info.mtime_ns or 0)
                  for sub in subs for info in fs.get_file_info(pafs.FileSelector(f"{base}/{sub}", allow_not_found=True))
                  if info.type == pafs.FileType.File and not info.base_name.startswith((".", "_"))]
        return f"{len(stamps)}-{max((m for _, m in stamps), default=0)}-{sum(n for n, _ in stamps)}"
    root = Path(root)
    count, latest = 0, 0
    for sub in subs:
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
    from raygen.results.store import exists, is_remote

    root = Path(root)
    is_dir = exists if is_remote(root) else Path.is_dir  # an object store (s3://...) has prefixes, not folders
    if not is_dir(root):
        raise FileNotFoundError(f"results store {root} does not exist")
    if not any(is_dir(root / sub) for sub in ("runs", "metrics", "artifacts")):
        raise FileNotFoundError(f"{root} is not a raygen results store (no runs/, metrics/ or artifacts/ folder)")
    store = Store(root, read_runs_fast(root), read_artifacts_fast(root), read_sweep_specs(root))
    if metrics:
        store._metrics = read_metrics_fast(root)
    return store
