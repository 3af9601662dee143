"""Parquet results store: `RunRecorder` writes, `read_*` read (pandas only; Ray is never needed)."""

from raygen.results.store import (
    RunRecorder,
    find_run,
    new_run_id,
    read_artifacts,
    read_metrics,
    read_runs,
)

__all__ = ["RunRecorder", "find_run", "new_run_id", "read_artifacts", "read_metrics", "read_runs"]
