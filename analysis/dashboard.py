"""The sweep dashboard: Plotly figures built in Python, one Jinja2 page, a stdlib HTTP server, an HTML export.

    serve_dashboard("results")                  # http://127.0.0.1:8765, refreshes while a sweep writes
    export_dashboard("results", "sweeps.html")  # the same page, self-contained (data inlined)

Everything works offline: plotly.js is inlined once per page (`plotly.offline.get_plotlyjs()`), there is no
CDN, font or analytics request, and images are embedded as base64 PNG thumbnails. The page is the same in
both modes; in server mode it asks the JSON API below for data and polls `api/version` to refresh while a
sweep is still writing, in export mode it reads the same payloads from a JSON block in the page.

API (GET, JSON unless noted):
    /                                 the page
    /api/index                        sweeps with trial counts, states and best values; store fingerprint
    /api/version                      {"fingerprint"}: changes whenever a store file is added or replaced
    /api/sweep?id=S                   trials table, parameters, figures (parcoords, importance, Pareto, history)
    /api/curves?sweep=S&key=K&runs=a,b  learning-curve figure of metric K for those runs
    /api/images?run=R                 image artifacts of a run as base64 thumbnails
    /api/trials.csv?sweep=S           the trials table as CSV
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd

from analysis.load import Store, load_store, read_metrics_fast, store_fingerprint
from analysis.sweeps import (
    Importance,
    Param,
    SweepInfo,
    completed_mask,
    param_importance,
    pareto_mask,
    ranked,
    sweep_ids,
    sweep_trials,
)

log = logging.getLogger(__name__)

MAX_CURVE_POINTS = 500  # per curve, in figures sent to the page (notes §2.5)
THUMB_SIDE = 320  # px, longest side of an embedded image thumbnail
# A long chain (a strip of many frames, e.g. 30 frames of 28 px) squeezed to 320 px would be 11 px high: strips
# keep their height (short side up to THUMB_SIDE, long side up to STRIP_MAX_SIDE) and the page scrolls them.
STRIP_ASPECT = 3.0  # long side / short side from which an image is a strip
STRIP_MAX_SIDE = 4096  # px, longest side of a strip thumbnail
EXPORT_TOP_K = 20  # trials whose curves and images the export embeds, per sweep
EXPORT_IMAGE_BUDGET = 12_000_000  # bytes of base64 images in one export
POLL_MS = 2000
CURVE_SPLITS = ("valid", "validation", "val", "train_eval", "train")  # a test objective's curve counterpart, in order
IMPORTANCE_MIN_TRIALS = 20  # fewer completed trials than this: importance bars carry a caveat (noisy estimates)
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


# ---------------------------------------------------------------------------------------------- JSON helpers


def _jsonable(value: Any) -> Any:
    """Plain JSON value: NaN/inf/NaT become null, numpy scalars Python ones, timestamps ISO strings."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, dict):
        if "bdata" in value and "dtype" in value:  # plotly's base64 typed array -> a plain list
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
            if value.get("shape"):
                array = array.reshape([int(x) for x in str(value["shape"]).split(",")])
            return _jsonable(array)
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value) if not isinstance(value, str) else value


# Plotly draws text (titles, tick labels, trace names, hover text, parcoords labels) as its own pseudo-HTML:
# <b>, <br>, <a href>, <span style> in a stored name would restyle a chart or add links to it. Plotly shows
# entities literally, so `<`, `>` and `&` of every string are escaped, except the fields the page's own code
# matches on (a trace's `meta` is the run id the trials table refers to).
_PLOTLY_LITERAL_KEYS = frozenset({"meta", "uid", "ids", "customdata"})
_PLOTLY_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def plotly_text_safe(value: Any, key: str | None = None, literal: frozenset[str] = _PLOTLY_LITERAL_KEYS) -> Any:
    """`value` with every string's `<`, `>`, `&` turned into entities (plotly displays them as typed)."""
    if key in literal:
        return value
    if isinstance(value, str):
        return value.translate(_PLOTLY_TEXT_ESCAPES)
    if isinstance(value, dict):
        # Parallel coordinates draw their tick labels as plain text (checked in Chromium: "&gt;" would show
        # as such), so those stay as stored; their axis labels are pseudo-HTML like everything else.
        inner = literal | {"ticktext"} if value.get("type") == "parcoords" else literal
        return {k: plotly_text_safe(v, k, inner) for k, v in value.items()}
    if isinstance(value, list):
        return [plotly_text_safe(v, key, literal) for v in value]
    return value


def figure_dict(fig: Any) -> dict[str, Any]:
    """A Plotly figure as a plain dict (data + layout) of JSON values: arrays as lists, NaN as null, text
    escaped for plotly's pseudo-HTML (see `plotly_text_safe`).

    (`fig.to_json()` would encode numpy arrays as base64 typed arrays, opaque to tests and other readers.)"""
    return plotly_text_safe(_jsonable(fig.to_plotly_json()))


# Characters that let a string inside an inline <script> change the page: "<" starts "</script>" (ends the
# element) and "<!--" + "<script" (the tokenizer's double-escaped state, where the real "</script>" no longer
# ends it: the page goes blank); ">" and "&" for good measure; U+2028/U+2029 end a line in older JavaScript.
# JSON.parse reads the \u escapes back as the same characters.
_SCRIPT_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                                      "\u2028": "\\u2028", "\u2029": "\\u2029"})


def script_json(value: Any) -> str:
    """JSON text that is safe to inline in a <script> element whatever strings `value` holds."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).translate(_SCRIPT_JSON_ESCAPES)


def _message_figure(text: str, title: str = "") -> dict[str, Any]:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 13})
    fig.update_layout(title=title, xaxis={"visible": False}, yaxis={"visible": False}, height=260,
                      margin={"l": 20, "r": 20, "t": 40, "b": 20})
    return figure_dict(fig)


# ---------------------------------------------------------------------------------------------- figures


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


MAX_LOG_TICKS = 7  # labels on one log axis; more overlap on a 420 px parcoords axis


def _log_label(value: float) -> str:
    """1e-05 -> "1e-5", 0.02 -> "0.02", 3000 -> "3000", 2e+06 -> "2e6": short, no zero-padded exponents."""
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)) + 1e-9)
    if -2 <= exponent <= 3:
        return f"{value:.3g}" if exponent < 2 else f"{value:.0f}"
    mantissa = value / 10 ** exponent
    return (f"{mantissa:.2g}" + "e" if round(mantissa, 2) != 1 else "1e") + str(exponent)


def _log_ticks(lo: float, hi: float, max_ticks: int = MAX_LOG_TICKS) -> tuple[list[float], list[str]]:
    """Tick positions (log10 units) and labels in data units, for an axis plotting log10 values.

    Whole decades when the range holds at least two (every k-th decade when there are more than `max_ticks`),
    else 1-2-5 steps inside the range, else the two ends: never arbitrary values like 0.000316, never more than
    `max_ticks` labels (they overlap)."""
    eps = 1e-9
    decades = [float(v) for v in range(math.floor(lo), math.ceil(hi) + 1) if lo - eps <= v <= hi + eps]
    if len(decades) >= 2:
        step = math.ceil(len(decades) / max_ticks)
        vals = decades[::step]
    else:
        vals = [math.log10(m) + d for d in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)
                if lo - eps <= math.log10(m) + d <= hi + eps]
        if len(vals) < 2:
            vals = [lo, hi] if hi > lo else [lo]
    return vals, [_log_label(10 ** v) for v in vals]


def parcoords_dimension(p: Param, values: pd.Series) -> dict[str, Any] | None:
    """One parcoords dimension: log10 values with data-unit tick labels for log parameters, integer codes with
    their labels for categorical ones, and an "n/a" position below the range for inactive (conditional) trials.
    plotly.js parcoords has no log axes (plotly.js#2292), hence the log10 values."""
    active = values.map(lambda v: not _is_missing(v))
    if not active.any():
        return None
    if p.kind == "categorical" or not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                          for v in values[active]):
        choices = [c for c in p.choices] if p.choices else []
        for v in values[active]:
            if v not in choices and str(v) not in [str(c) for c in choices]:
                choices.append(v)
        code = {str(c): i for i, c in enumerate(choices)}
        coded = [code[str(v)] if a else -1 for v, a in zip(values, active)]
        tickvals, ticktext = list(range(len(choices))), [str(c) for c in choices]
        if not active.all():
            tickvals, ticktext = [-1, *tickvals], ["n/a", *ticktext]
        return {"label": p.name, "values": coded, "tickvals": tickvals, "ticktext": ticktext,
                "range": [min(tickvals), max(max(tickvals), 0)]}
    numeric = pd.to_numeric(values, errors="coerce").astype(float)
    use_log = p.log and bool((numeric[active] > 0).all())
    shown = np.log10(numeric.where(active)) if use_log else numeric.where(active)
    lo, hi = float(shown[active].min()), float(shown[active].max())
    if use_log:
        tickvals, ticktext = _log_ticks(lo, hi)
    else:
        tickvals = list(np.linspace(lo, hi, 5)) if hi > lo else [lo]
        ticktext = [f"{v:.3g}" for v in tickvals]
    span = (hi - lo) or max(abs(hi), 1.0)
    if not active.all():
        na = lo - 0.1 * span
        shown = shown.fillna(na)
        tickvals, ticktext, lo = [na, *tickvals], ["n/a", *ticktext], na
    label = f"{p.name} (log)" if use_log else p.name
    return {"label": label, "values": [float(v) for v in shown], "tickvals": [float(t) for t in tickvals],
            "ticktext": ticktext, "range": [lo, hi if hi > lo else lo + span]}


def parcoords_figure(trials: pd.DataFrame, info: SweepInfo) -> dict[str, Any]:
    """Parallel coordinates of the finished trials: every parameter, then each objective (lines coloured by the
    first objective)."""
    import plotly.graph_objects as go

    if not info.objectives:
        return _message_figure("no objective known for this sweep", "Parallel coordinates")
    done = trials[completed_mask(trials, info)]
    if done.empty:
        return _message_figure("no finished trial yet", "Parallel coordinates")
    dims = [d for p in info.params if (d := parcoords_dimension(p, done[p.name])) is not None]
    for o in info.objectives:
        v = pd.to_numeric(done[o.metric], errors="coerce").astype(float)
        dims.append({"label": f"{o.metric} ({o.goal[:3]})", "values": list(v),
                     "range": [float(v.min()), float(v.max()) if v.max() > v.min() else float(v.min()) + 1]})
    color = pd.to_numeric(done[info.objectives[0].metric], errors="coerce").astype(float)
    fig = go.Figure(go.Parcoords(
        dimensions=dims,
        line={"color": list(color), "colorscale": "Viridis", "showscale": True,
              "reversescale": info.objectives[0].goal == "minimize",
              "colorbar": {"title": {"text": info.objectives[0].metric}}},
    ))
    dropped = len(trials) - len(done)
    fig.update_layout(title=f"Parallel coordinates: {len(done)} finished trials"
                      + (f" ({dropped} unfinished not shown)" if dropped else ""),
                      margin={"l": 80, "r": 80, "t": 80, "b": 30}, height=420)
    return figure_dict(fig)


def importance_figure(result: Importance) -> dict[str, Any]:
    import plotly.graph_objects as go

    if not result.values:
        return _message_figure(result.message or "no importance", "Parameter importance (PED-ANOVA)")
    fig = go.Figure()
    names = list(next(iter(result.values.values())).keys())[::-1]
    for metric, imp in result.values.items():
        fig.add_trace(go.Bar(x=[imp.get(n, 0.0) for n in names], y=names, orientation="h", name=metric))
    # Excluded (conditional/constant) parameters are listed under the chart by the page, from the payload.
    caveat = importance_caveat(result)
    fig.update_layout(title="Parameter importance (PED-ANOVA)", barmode="group", height=140 + 40 * len(names)
                      + (30 if caveat else 0),
                      xaxis={"title": {"text": "importance (normalised)"}},
                      margin={"l": 160, "r": 20, "t": 80 if caveat else 50, "b": 50})
    if caveat:  # on the chart itself, so a screenshot or an export keeps it
        # Short enough for a half-width panel; the page prints the whole caveat under the chart.
        fig.add_annotation(text=f"⚠ rough: only {result.completed} completed trials (fewer than {IMPORTANCE_MIN_TRIALS})",
                           showarrow=False, x=0, y=1.02, xref="paper", yref="paper",
                           xanchor="left", yanchor="bottom", font={"size": 12, "color": "#9a6700"})
    return figure_dict(fig)


def importance_caveat(result: Importance, min_trials: int = IMPORTANCE_MIN_TRIALS) -> str:
    """A warning when importances rest on fewer than `min_trials` completed trials ("" otherwise): PED-ANOVA
    compares the top quantile of trials with all of them, and with a handful of trials that top set is one or two
    trials, so the bars mostly show noise."""
    if not result.values or result.completed >= min_trials:
        return ""
    return (f"only {result.completed} completed trials (fewer than {min_trials}): "
            "these importances are rough and may change as trials finish")


def pareto_figure(trials: pd.DataFrame, info: SweepInfo) -> dict[str, Any] | None:
    """Finished trials in the plane of the first two objectives, the Pareto front highlighted (None for one
    objective)."""
    import plotly.graph_objects as go

    if len(info.objectives) < 2:
        return None
    done = trials[completed_mask(trials, info)]
    a, b = info.objectives[0], info.objectives[1]
    if done.empty:
        return _message_figure("no finished trial yet", "Pareto front")
    values = done[[o.metric for o in info.objectives]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    front = pareto_mask(values, [o.sign for o in info.objectives])
    labels = done["trial_id"].fillna(done["run_id"]).astype(str) if "trial_id" in done else done["run_id"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=values[~front, 0], y=values[~front, 1], mode="markers", name="dominated",
                             marker={"color": "#9aa0a6"}, text=list(labels[~front])))
    order = np.argsort(values[front, 0])
    fig.add_trace(go.Scatter(x=values[front, 0][order], y=values[front, 1][order], mode="lines+markers",
                             name=f"Pareto front ({int(front.sum())})", marker={"color": "#d62728", "size": 9},
                             text=list(labels[front].iloc[order])))
    extra = f" (objectives beyond the first two: {', '.join(o.metric for o in info.objectives[2:])})" \
        if len(info.objectives) > 2 else ""
    fig.update_layout(title="Pareto front" + extra, height=420,
                      xaxis={"title": {"text": f"{a.metric} ({a.goal})"}},
                      yaxis={"title": {"text": f"{b.metric} ({b.goal})"}})
    return figure_dict(fig)


def history_figure(trials: pd.DataFrame, info: SweepInfo) -> dict[str, Any]:
    """Objective of each finished trial in start order, with the best-so-far line."""
    import plotly.graph_objects as go

    if not info.objectives:
        return _message_figure("no objective known for this sweep", "Optimization history")
    o = info.objectives[0]
    done = trials[completed_mask(trials, info)]
    if "started_at" in done.columns:
        done = done.sort_values("started_at", kind="stable")
    y = pd.to_numeric(done[o.metric], errors="coerce").to_numpy(float)
    best = np.minimum.accumulate(y * o.sign) * o.sign if len(y) else y
    x = list(range(1, len(y) + 1))
    labels = list(done["trial_id"].fillna(done["run_id"]).astype(str)) if "trial_id" in done else list(done["run_id"])
    fig = go.Figure([
        go.Scatter(x=x, y=y, mode="markers", name=o.metric, text=labels),
        go.Scatter(x=x, y=best, mode="lines", name="best so far"),
    ])
    fig.update_layout(title=f"Optimization history ({o.metric}, {o.goal})", height=320,
                      xaxis={"title": {"text": "finished trial (start order)"}})
    return figure_dict(fig)


def _downsample(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    if len(steps) <= max_points:
        return steps, values
    idx = np.unique(np.linspace(0, len(steps) - 1, max_points).round().astype(int))
    return steps[idx], values[idx]


def curves_figure(metrics: pd.DataFrame, trials: pd.DataFrame, key: str, run_ids: list[str],
                  max_points: int = MAX_CURVE_POINTS) -> dict[str, Any]:
    """Learning curves of metric `key` ("split/metric") for the given runs; each trace's `meta` is its run id
    (the page shows the traces of the selected trials). Early-stopped trials are dashed."""
    import plotly.graph_objects as go

    split, _, metric = key.partition("/")
    rows = metrics[(metrics["run_id"].isin(run_ids)) & (metrics["split"] == split) & (metrics["metric"] == metric)]
    info = trials.set_index("run_id") if not trials.empty else trials
    fig = go.Figure()
    for run_id in run_ids:
        r = rows[rows["run_id"] == run_id].sort_values("step")
        r = r[np.isfinite(r["value"].to_numpy(float))]
        if r.empty:
            continue
        steps, values = _downsample(r["step"].to_numpy(), r["value"].to_numpy(float), max_points)
        label = run_id
        dash = "solid"
        if run_id in info.index:
            row = info.loc[run_id]
            if "trial_id" in info.columns and not _is_missing(row.get("trial_id")):
                label = f"trial {row['trial_id']}"
            if bool(row.get("stopped_early")) and not _is_missing(row.get("stopped_early")):
                dash = "dash"
                label += " (stopped early)"
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=label, meta=run_id, line={"dash": dash}))
    fig.update_layout(title=f"{key}", height=380, xaxis={"title": {"text": "step"}},
                      yaxis={"title": {"text": key}}, legend={"font": {"size": 10}})
    return figure_dict(fig)


# ---------------------------------------------------------------------------------------------- payloads


def _trial_label_columns(trials: pd.DataFrame, info: SweepInfo) -> list[str]:
    meta = [c for c in ("trial_id", "run_id", "status", "stopped_early") if c in trials.columns]
    rest = [c for c in ("algorithm", "dataset", "seed", "steps", "wall_time_s") if c in trials.columns]
    return meta + [o.metric for o in info.objectives] + [p.name for p in info.params] + rest


def sweep_summary(trials: pd.DataFrame, info: SweepInfo) -> dict[str, Any]:
    states = trials["status"].value_counts().to_dict() if "status" in trials.columns else {}
    objectives = []
    for i, o in enumerate(info.objectives):
        order = ranked(trials, info, i)
        objectives.append({"metric": o.metric, "goal": o.goal,
                           "best": _jsonable(order[o.metric].iloc[0]) if not order.empty else None,
                           "best_trial": _jsonable(order["trial_id"].iloc[0]) if not order.empty and
                           "trial_id" in order.columns else None})
    return {"id": info.sweep_id, "name": info.name, "trials": len(trials),
            "states": {str(k): int(v) for k, v in states.items()}, "objectives": objectives,
            "multi_objective": len(info.objectives) > 1}


@dataclass
class DashboardData:
    """The store as the dashboard sees it, rebuilt when the store's fingerprint changes."""

    store: Store
    fingerprint: str

    def sweeps(self) -> list[str]:
        return sweep_ids(self.store.runs, self.store.sweeps)

    def trials(self, sweep_id: str) -> tuple[pd.DataFrame, SweepInfo]:
        if sweep_id not in self.sweeps():
            raise KeyError(f"unknown sweep '{sweep_id}'")
        return sweep_trials(self.store.runs, sweep_id, self.store.sweeps)

    def index(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "root": str(self.store.root),
                "sweeps": [sweep_summary(*self.trials(s)) for s in self.sweeps()]}

    def metric_keys(self, run_ids: list[str]) -> list[str]:
        m = self.store.metrics
        rows = m[m["run_id"].isin(run_ids)]
        return sorted(set(rows["split"] + "/" + rows["metric"])) if not rows.empty else []

    def default_curve_key(self, run_ids: list[str], keys: list[str], objective: str | None) -> str | None:
        """The metric the learning-curve panel opens on: the objective if it has a curve (several steps in some
        trial), else the same metric in the split that is logged during training (a test-set objective is written
        once, at the end: one point per trial, an empty plot), else the metric with the most steps."""
        if not keys:
            return None
        m = self.store.metrics
        rows = m[m["run_id"].isin(run_ids)]
        steps = (rows.groupby(["split", "metric", "run_id"])["step"].nunique().groupby(["split", "metric"]).max())
        length = {f"{split}/{metric}": int(n) for (split, metric), n in steps.items()}
        if objective in keys and length.get(objective, 0) > 1:
            return objective
        if objective:
            name = objective.partition("/")[2]
            for split in CURVE_SPLITS:
                if length.get(f"{split}/{name}", 0) > 1:
                    return f"{split}/{name}"
        return max(keys, key=lambda k: (length.get(k, 0), k == objective))

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        trials, info = self.trials(sweep_id)
        columns = _trial_label_columns(trials, info)
        rows = [[_jsonable(v) for v in row] for row in trials[columns].itertuples(index=False)]
        order = ranked(trials, info) if info.objectives else trials.iloc[0:0]
        importance = param_importance(trials, info)
        run_ids = list(trials["run_id"])
        arts = self.store.artifacts
        image_runs = sorted(set(arts[(arts["kind"] == "image") & arts["run_id"].isin(run_ids)]["run_id"])) \
            if not arts.empty else []
        keys = self.metric_keys(run_ids)
        objective = info.objectives[0].metric if info.objectives else None
        return {
            "summary": sweep_summary(trials, info),
            "info": info.to_dict(),
            "table": {"columns": columns, "rows": rows,
                      "numeric": [bool(pd.api.types.is_numeric_dtype(trials[c])) or c in
                                  [o.metric for o in info.objectives] for c in columns]},
            "ranking": list(order["run_id"]),
            "figures": {
                "parcoords": parcoords_figure(trials, info),
                "importance": importance_figure(importance),
                "pareto": pareto_figure(trials, info),
                "history": history_figure(trials, info),
            },
            "importance": {"values": importance.values, "excluded": importance.excluded,
                           "message": importance.message, "completed": importance.completed,
                           "caveat": importance_caveat(importance), "min_trials": IMPORTANCE_MIN_TRIALS},
            "metric_keys": keys,
            "default_key": self.default_curve_key(run_ids, keys, objective),
            "image_runs": image_runs,
        }

    def curves(self, sweep_id: str, key: str, run_ids: list[str]) -> dict[str, Any]:
        trials, _ = self.trials(sweep_id)
        run_ids = [r for r in run_ids if r in set(trials["run_id"])]
        return curves_figure(self.store.metrics, trials, key, run_ids)

    def images(self, run_id: str, budget: int | None = None) -> list[dict[str, Any]]:
        return image_thumbnails(self.store, run_id, budget=budget)

    def trials_csv(self, sweep_id: str) -> str:
        trials, info = self.trials(sweep_id)
        return trials[_trial_label_columns(trials, info)].to_csv(index=False)


def load_dashboard_data(root: str | Path) -> DashboardData:
    fingerprint = store_fingerprint(root)
    store = load_store(root)
    store._metrics = read_metrics_fast(root)
    return DashboardData(store, fingerprint)


def image_thumbnails(store: Store, run_id: str, *, side: int = THUMB_SIDE, budget: int | None = None
                     ) -> list[dict[str, Any]]:
    """The run's image artifacts (latest of each name) as base64 PNG thumbnails, at most `side` px wide/high, or
    for strips (long chains) at most `side` px across and STRIP_MAX_SIDE px along, with their size and a `strip`
    flag for the page. Paths come from the artifact index only, never from the request."""
    from PIL import Image

    arts = store.artifacts
    if arts.empty:
        return []
    rows = arts[(arts["run_id"] == run_id) & (arts["kind"] == "image")].sort_values("step")
    rows = rows.drop_duplicates("name", keep="last").sort_values("name")
    out, used = [], 0
    for _, row in rows.iterrows():
        path = store.root / row["path"]
        try:
            with Image.open(path) as img:
                w, h = img.size
                strip = max(w, h) >= STRIP_ASPECT * max(min(w, h), 1)
                if strip:
                    long_side = min(STRIP_MAX_SIDE, round(max(w, h) * side / max(min(w, h), 1)))
                    img.thumbnail((long_side, side) if w >= h else (side, long_side))
                else:
                    img.thumbnail((side, side))
                size = img.size
                buf = io.BytesIO()
                img.save(buf, format="PNG", optimize=True)
        except (OSError, ValueError) as err:
            log.warning("cannot read image artifact %s: %s", path, err)
            continue
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        if budget is not None and used + len(data) > budget:
            break
        used += len(data)
        out.append({"name": row["name"], "step": int(row["step"]), "width": size[0], "height": size[1],
                    "strip": strip, "src": f"data:image/png;base64,{data}"})
    return out


# ---------------------------------------------------------------------------------------------- page


def render_page(mode: str, data: dict[str, Any] | None = None, *, poll_ms: int = POLL_MS, title: str = "raygen sweeps") -> str:
    """The dashboard HTML: plotly.js inlined once, data (export mode) inlined as JSON."""
    import jinja2
    from plotly.offline import get_plotlyjs

    env = jinja2.Environment(loader=jinja2.PackageLoader("analysis", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    template = env.get_template("dashboard.html.j2")
    return template.render(title=title, mode=mode, poll_ms=poll_ms, plotly_js=jinja2.utils.markupsafe.Markup(get_plotlyjs()),
                           data_json=jinja2.utils.markupsafe.Markup(script_json(data or {})),
                           plot_config=jinja2.utils.markupsafe.Markup(script_json(PLOT_CONFIG)))


def export_payload(data: DashboardData, *, top_k: int = EXPORT_TOP_K, image_budget: int = EXPORT_IMAGE_BUDGET
                   ) -> dict[str, Any]:
    """Everything the page needs, for the self-contained export: each sweep's payload, the curves of every
    metric for its top-k trials, and thumbnails of those trials within an overall byte budget."""
    out: dict[str, Any] = {"index": data.index(), "sweeps": {}, "curves": {}, "images": {}, "top_k": top_k}
    remaining = image_budget
    for sid in data.sweeps():
        payload = data.sweep(sid)
        out["sweeps"][sid] = payload
        top = (payload["ranking"] or [r[payload["table"]["columns"].index("run_id")] for r in payload["table"]["rows"]])[:top_k]
        out["curves"][sid] = {key: data.curves(sid, key, top) for key in payload["metric_keys"]}
        for run_id in top:
            if run_id in payload["image_runs"] and run_id not in out["images"] and remaining > 0:
                images = data.images(run_id, budget=remaining)
                remaining -= sum(len(i["src"]) for i in images)
                out["images"][run_id] = images
    return out


def export_dashboard(results_dir: str | Path, out_html: str | Path, *, top_k: int = EXPORT_TOP_K) -> Path:
    """Write the dashboard as one self-contained HTML file (no server, no network needed to open it)."""
    data = load_dashboard_data(results_dir)
    html = render_page("static", export_payload(data, top_k=top_k), title=f"raygen sweeps: {Path(results_dir).name}")
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    log.info("dashboard exported to %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out


# ---------------------------------------------------------------------------------------------- server


class DashboardApp:
    """Request handling without sockets: `handle(path_with_query) -> (status, content type, body)`.

    The store is re-read when its fingerprint changes (a sweep still writing), at most once per request."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        load_store(self.root)  # fail now, naming the path, if it is not a store
        self._lock = threading.Lock()
        self._data: DashboardData | None = None
        self._sweep_cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._page: bytes | None = None

    def data(self) -> DashboardData:
        fingerprint = store_fingerprint(self.root)
        with self._lock:
            if self._data is None or self._data.fingerprint != fingerprint:
                self._data = load_dashboard_data(self.root)
                self._sweep_cache.clear()
            return self._data

    def page(self) -> bytes:
        if self._page is None:
            self._page = render_page("server", {}, title=f"raygen sweeps: {self.root.name}").encode()
        return self._page

    def _json(self, value: Any, status: int = 200) -> tuple[int, str, bytes]:
        return status, "application/json", json.dumps(value, allow_nan=False).encode()

    def handle(self, target: str) -> tuple[int, str, bytes]:
        url = urlparse(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/") or "/"
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/": lambda: (200, "text/html; charset=utf-8", self.page()),
            "/index.html": lambda: (200, "text/html; charset=utf-8", self.page()),
            "/api/version": lambda: self._json({"fingerprint": store_fingerprint(self.root)}),
            "/api/index": lambda: self._json(self.data().index()),
            "/api/sweep": lambda: self._json(self._sweep(query["id"])),
            "/api/curves": lambda: self._json(self.data().curves(
                query["sweep"], query["key"], [r for r in query.get("runs", "").split(",") if r])),
            "/api/images": lambda: self._json({"run_id": query["run"], "images": self.data().images(query["run"])}),
            "/api/trials.csv": lambda: (200, "text/csv; charset=utf-8", self.data().trials_csv(query["sweep"]).encode()),
        }
        if path not in routes:
            return self._json({"error": f"not found: {path}"}, 404)
        try:
            return routes[path]()
        except KeyError as err:
            return self._json({"error": f"missing or unknown parameter: {err.args[0]}"}, 400)

    def _sweep(self, sweep_id: str) -> dict[str, Any]:
        data = self.data()
        key = (data.fingerprint, sweep_id)
        if key not in self._sweep_cache:
            self._sweep_cache[key] = data.sweep(sweep_id)
        return self._sweep_cache[key]


def make_server(results_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A ready HTTP server for the dashboard (port 0 picks a free one: `server.server_address[1]`)."""
    app = DashboardApp(results_dir)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                status, ctype, body = app.handle(self.path)
            except Exception as err:
                log.exception("dashboard request %s failed", self.path)
                status, ctype, body = 500, "application/json", json.dumps({"error": str(err)}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the page was closed mid-answer
                log.debug("dashboard client went away during %s", self.path)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dashboard: " + format, *args)

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("dashboard listening on %s: anyone who can reach this address can read the results", host)
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_dashboard(results_dir: str | Path, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the dashboard until interrupted (Ctrl-C)."""
    server = make_server(results_dir, host, port)
    url_host = host if ":" not in host else f"[{host}]"
    log.info("dashboard on http://%s:%d/ (Ctrl-C to stop)", url_host, server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("dashboard stopped")
    finally:
        server.server_close()


__all__ = [
    "DashboardApp",
    "curves_figure",
    "export_dashboard",
    "importance_figure",
    "make_server",
    "parcoords_figure",
    "pareto_figure",
    "render_page",
    "serve_dashboard",
]
