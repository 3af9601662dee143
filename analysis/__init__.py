"""Analysis of a raygen results store: the papers' tables and figures, sweep summaries, and the dashboard.

Everything here reads the Parquet store only (never Ray), so results copied off a cluster can be analysed
on a laptop. Each paper table/figure is one plain function over the store's DataFrames:

    from analysis import load_store, infusion
    store = load_store("results", metrics=True)
    table = infusion.tab_a1(store.runs)                     # a DataFrame: published beside ours
    fig = infusion.fig_a1(store.runs, store.metrics)        # a matplotlib Figure

`build_report(results, out)` writes all of them (`filters=ReportFilter(...)` restricts the runs; only runs on
each paper's data and settings fill its published cells, see analysis/protocol.py); `serve_dashboard` /
`export_dashboard` show sweeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from analysis.common import MissingData
from analysis.load import Store, load_store

__all__ = [
    "MissingData",
    "ReportFilter",
    "ReportSummary",
    "Store",
    "build_report",
    "export_dashboard",
    "load_store",
    "serve_dashboard",
]

if TYPE_CHECKING:
    from analysis.dashboard import export_dashboard, serve_dashboard
    from analysis.report import ReportFilter, ReportSummary, build_report


def __getattr__(name: str) -> Any:
    # The report pulls in matplotlib and the dashboard plotly/optuna: import them only when asked for.
    if name in ("build_report", "ReportFilter", "ReportSummary"):
        from analysis import report

        return getattr(report, name)
    if name in ("serve_dashboard", "export_dashboard"):
        from analysis import dashboard

        return getattr(dashboard, name)
    raise AttributeError(f"module 'analysis' has no attribute '{name}'")
