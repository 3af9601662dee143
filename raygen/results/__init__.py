"""Parquet results store: `RunRecorder` writes, `read_*` read (pandas only; Ray is never needed)."""

from raygen.results.store import (
    RunRecorder,
    compact,
    final_values,
    find_run,
    latest_values,
    new_run_id,
    read_artifacts,
    read_metrics,
    read_runs,
)

__all__ = [
    "RunRecorder",
    "compact",
    "final_values",
    "find_run",
    "latest_values",
    "new_run_id",
    "read_artifacts",
    "read_metrics",
    "read_runs",
]
