"""Sweeps: the trials table of a sweep, its best trial, top-k configurations and the effect of each parameter.

A sweep is the set of runs sharing a `sweep_id`; each run's `params_json` holds the sampled parameters
(inactive conditional parameters are absent or null, never imputed). The objective(s) and the search space
come from the resolved spec stored at RESULTS/sweeps/<sweep_id>.json (`metric: {name, goal}` or
`metrics: [{name, goal}, ...]`, `parameters: {name: {min, max, log, values, q, when, ...}}`); without it
they are inferred from the runs and the inference is said in `SweepInfo.notes`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter

from analysis.common import NON_MODEL_CONFIG, MissingData, final, require
from analysis.figures import metric_label, new_figure
from raygen.config import flatten

log = logging.getLogger(__name__)

NULL = "null"  # how a parameter's chosen null value is shown (inactive parameters are NaN, shown as n/a)
PLAIN = "runs: "  # pseudo-sweep id prefix: the runs of one algorithm that belong to no sweep
# Objective used when a sweep has no stored spec: the metric each paper selects models on.
DEFAULT_OBJECTIVES = {
    "infusion": ("valid/lower_bound", "maximize"),
    "walkback": ("valid/lower_bound", "maximize"),
    "professor": ("valid/bpc", "minimize"),
    "teacher": ("valid/bpc", "minimize"),
    "scheduled": ("valid/bpc", "minimize"),
}
_LOWER_IS_BETTER = re.compile(r"(loss|nll|bpc|bpd|bits|error|distance|time|kl)", re.IGNORECASE)
META_COLUMNS = ("run_id", "trial_id", "status", "stopped_early", "algorithm", "dataset", "seed", "steps",
                "wall_time_s", "started_at")


@dataclass
class Param:
    """One swept parameter: kind is 'float', 'int' or 'categorical'."""

    name: str
    kind: str
    log: bool = False
    low: float | None = None
    high: float | None = None
    choices: list[Any] = field(default_factory=list)
    condition: Any = None  # the spec's `when:`, shown as is

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "log": self.log, "low": self.low, "high": self.high,
                "choices": self.choices, "condition": self.condition}


@dataclass
class Objective:
    metric: str
    goal: str  # "minimize" | "maximize"

    @property
    def sign(self) -> float:
        """Multiplier that turns the objective into a value to minimise."""
        return 1.0 if self.goal == "minimize" else -1.0


@dataclass
class SweepInfo:
    sweep_id: str
    name: str
    objectives: list[Objective]
    params: list[Param]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"sweep_id": self.sweep_id, "name": self.name,
                "objectives": [{"metric": o.metric, "goal": o.goal} for o in self.objectives],
                "params": [p.to_dict() for p in self.params], "notes": self.notes}


# ---------------------------------------------------------------------------------------------- trials


def is_plain(sweep_id: str) -> bool:
    """True for the pseudo-sweep of one algorithm's plain (non-sweep) runs."""
    return sweep_id.startswith(PLAIN)


def sweep_ids(runs: pd.DataFrame, specs: Mapping[str, Any] | None = None) -> list[str]:
    """Sweeps present in the store (runs with a sweep_id, or a stored spec), then one pseudo-sweep
    `runs: <algorithm>` per algorithm with runs outside any sweep (their varying config keys act as params)."""
    ids: list[str] = []
    if not runs.empty and "sweep_id" in runs.columns:
        ids = sorted({str(s) for s in runs["sweep_id"].dropna().unique()})
    for sid in specs or {}:
        if sid not in ids:
            ids.append(sid)
    if not runs.empty and "algorithm" in runs.columns:
        plain = runs[runs["sweep_id"].isna()] if "sweep_id" in runs.columns else runs
        ids += [f"{PLAIN}{a}" for a in sorted(plain["algorithm"].dropna().unique())]
    return ids


def _members(runs: pd.DataFrame, sweep_id: str) -> pd.DataFrame:
    if runs.empty:
        return runs
    if is_plain(sweep_id):
        plain = runs[runs["sweep_id"].isna()] if "sweep_id" in runs.columns else runs
        return plain[plain["algorithm"] == sweep_id[len(PLAIN):]]
    if "sweep_id" not in runs.columns:
        return runs.iloc[0:0]
    return runs[runs["sweep_id"].astype(object) == sweep_id]


def _params_frame(members: pd.DataFrame, sweep_id: str) -> pd.DataFrame:
    """One column per sampled parameter (NaN where a trial did not sample it)."""
    if is_plain(sweep_id) or "params_json" not in members.columns or members["params_json"].isna().all():
        # Plain runs: the config keys that differ between them act as their parameters.
        cols = [c for c in members.columns
                if c.startswith("config.") and c not in (*NON_MODEL_CONFIG, "config.algorithm")]
        varying = [c for c in cols if members[c].astype(str).nunique(dropna=False) > 1]
        return members[varying].rename(columns=lambda c: c[len("config."):]).reset_index(drop=True)
    rows = []
    for text in members["params_json"]:
        try:
            values = flatten(json.loads(text)) if isinstance(text, str) and text else {}
        except json.JSONDecodeError:
            values = {}
        # A chosen null is the level "null"; an inactive parameter is absent from params_json and stays NaN.
        rows.append({k: NULL if v is None else v for k, v in values.items()})
    return pd.DataFrame(rows, index=range(len(rows)))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _param_from_spec(name: str, spec: Any, observed: pd.Series) -> Param | None:
    if isinstance(spec, Mapping):
        if "value" in spec and not any(k in spec for k in ("values", "min", "max")):
            return None  # a constant
        condition = spec.get("when")
        distribution = str(spec.get("distribution", "") or spec.get("type", "") or spec.get("kind", "")).lower()
        if "values" in spec or "choice" in distribution or "categorical" in distribution:
            choices = [NULL if c is None else c for c in spec.get("values") or spec.get("choices") or []]
            return Param(name, "categorical", choices=choices, condition=condition)
        if "min" in spec or "max" in spec or "low" in spec or "high" in spec:
            low = spec.get("min", spec.get("low"))
            high = spec.get("max", spec.get("high"))
            log_scale = bool(spec.get("log")) or "log" in distribution
            # W&B rule: integer bounds mean int_uniform unless a float distribution is named explicitly.
            integer = "int" in distribution or (
                isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool)
                and not any(word in distribution for word in ("uniform", "normal", "float"))
            )
            return Param(name, "int" if integer else "float", log=log_scale,
                         low=float(low) if low is not None else None, high=float(high) if high is not None else None,
                         condition=condition)
    return _param_from_data(name, observed)


def _param_from_data(name: str, observed: pd.Series) -> Param | None:
    values = [v for v in observed if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None
    numbers = [v for v in values if v != NULL]
    # Numbers and nulls: a number-valued parameter whose nulls are inactive trials (see sweep_trials).
    if numbers and all(_is_number(v) for v in numbers):
        arr = np.asarray(numbers, dtype=float)
        integer = bool(np.all(arr == np.round(arr)))
        # Without a spec a parameter spanning two or more decades is taken as log-sampled.
        log_scale = bool(arr.min() > 0 and arr.max() / arr.min() >= 100)
        return Param(name, "int" if integer else "float", log=log_scale, low=float(arr.min()), high=float(arr.max()))
    choices = sorted({v if isinstance(v, (str, bool, int, float)) else json.dumps(v) for v in values}, key=str)
    return Param(name, "categorical", choices=choices)


def _objectives(spec: Mapping[str, Any] | None, members: pd.DataFrame, notes: list[str]) -> list[Objective]:
    entries: list[Any] = []
    if spec:
        metric = spec.get("metrics", spec.get("metric"))
        entries = metric if isinstance(metric, list) else [metric] if metric else []
    out = []
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("name"):
            goal = str(entry.get("goal", entry.get("mode", "minimize"))).lower()
            out.append(Objective(str(entry["name"]), "maximize" if goal.startswith("max") else "minimize"))
        elif isinstance(entry, str):
            out.append(Objective(entry, "minimize"))
    if out:
        return out
    algos = members["algorithm"].dropna().unique() if "algorithm" in members.columns else []
    for algo in algos:
        if algo in DEFAULT_OBJECTIVES:
            metric, goal = DEFAULT_OBJECTIVES[algo]
            if algo in ("professor", "teacher", "scheduled") and not final(members, metric).notna().any():
                metric = "valid/nll"
            notes.append(f"objective inferred: {metric} ({goal}) is what the {algo} papers select models on")
            return [Objective(metric, goal)]
    finals = [c[len("final."):] for c in members.columns if c.startswith("final.valid/")] or [
        c[len("final."):] for c in members.columns if c.startswith("final.")]
    if finals:
        goal = "minimize" if _LOWER_IS_BETTER.search(finals[0]) else "maximize"
        notes.append(f"objective inferred: {finals[0]} ({goal}); no sweep spec stored")
        return [Objective(finals[0], goal)]
    return []


def sweep_trials(runs: pd.DataFrame, sweep_id: str, specs: Mapping[str, Any] | None = None
                 ) -> tuple[pd.DataFrame, SweepInfo]:
    """The trials table of one sweep (meta columns, one column per parameter, one per objective) and its
    description. Objective values are the trials' final values of the objective metrics."""
    spec = (specs or {}).get(sweep_id)
    members = _members(runs, sweep_id).reset_index(drop=True)
    notes: list[str] = []
    params_frame = _params_frame(members, sweep_id) if not members.empty else pd.DataFrame()
    space = dict((spec or {}).get("parameters") or {})
    params: list[Param] = []
    for name in list(space) + [c for c in params_frame.columns if c not in space]:
        observed = params_frame[name] if name in params_frame.columns else pd.Series([], dtype=object)
        p = _param_from_spec(name, space.get(name), observed)
        if p is not None:
            params.append(p)
    objectives = _objectives(spec, members, notes) if not members.empty or spec else []
    meta = [c for c in META_COLUMNS if c in members.columns]
    trials = members[meta].copy()
    for p in params:
        trials[p.name] = params_frame[p.name].values if p.name in params_frame.columns else np.nan
        if p.kind != "categorical":
            # A number-valued parameter cannot be chosen as null: a null there is an inactive (conditional)
            # parameter written as null by older stores, so it is NaN ("n/a") like an absent one.
            trials[p.name] = trials[p.name].astype(object).where(trials[p.name].astype(object) != NULL, np.nan)
    for o in objectives:
        trials[o.metric] = final(members, o.metric).values
    # a --smoke sweep is labelled with its own id (its spec's name is the real sweep's)
    name = str(sweep_id if (spec or {}).get("smoke") else (spec or {}).get("name") or sweep_id)
    if spec is None and not is_plain(sweep_id):
        notes.append("no stored sweep spec: parameter kinds and log scales inferred from the values")
    return trials, SweepInfo(sweep_id, name, objectives, params, notes)


def completed_mask(trials: pd.DataFrame, info: SweepInfo) -> pd.Series:
    """Trials that may be ranked: completed (their whole budget, then evaluated) with every objective finite.
    Trials stopped early hold half-trained values (Optuna is told PRUNED); `raygen sweep` uses the same rule."""
    from raygen.engine.sweep_spec import rankable

    return rankable(trials, [o.metric for o in info.objectives])


def ranked(trials: pd.DataFrame, info: SweepInfo, objective: int = 0) -> pd.DataFrame:
    """Finished trials sorted best-first on objective `objective`."""
    require(bool(info.objectives), f"sweep {info.sweep_id} has no objective", "a sweep spec with `metric:`")
    o = info.objectives[objective]
    done = trials[completed_mask(trials, info)]
    key = pd.to_numeric(done[o.metric], errors="coerce") * o.sign
    return done.assign(_key=key.values).sort_values("_key", kind="stable").drop(columns="_key")


def _fmt_params(row: pd.Series, params: Sequence[Param]) -> str:
    parts = []
    for p in params:
        v = row.get(p.name)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        parts.append(f"{p.name}={v:.4g}" if _is_number(v) else f"{p.name}={v}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------- tables


def best_trials(runs: pd.DataFrame, specs: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per (sweep, objective): trial counts by state and the best finished trial."""
    rows = []
    for sid in sweep_ids(runs, specs):
        if is_plain(sid):
            continue
        trials, info = sweep_trials(runs, sid, specs)
        states = trials["status"].value_counts() if "status" in trials.columns else pd.Series(dtype=int)
        early = int(trials["stopped_early"].fillna(False).astype(bool).sum()) if "stopped_early" in trials else 0
        for i, o in enumerate(info.objectives or [Objective("", "")]):
            row = {"sweep": sid, "name": info.name, "objective": o.metric, "goal": o.goal, "trials": len(trials),
                   "completed": int(states.get("completed", 0)), "failed": int(states.get("failed", 0)),
                   "running": int(states.get("running", 0)), "stopped early": early,
                   "best trial": "", "best run": "", "best value": math.nan, "best params": ""}
            if o.metric:
                order = ranked(trials, info, i)
                if not order.empty:
                    best = order.iloc[0]
                    row.update({"best trial": str(best.get("trial_id") or ""), "best run": best["run_id"],
                                "best value": float(best[o.metric]), "best params": _fmt_params(best, info.params)})
            rows.append(row)
    require(bool(rows), "no sweeps in the store", "runs started by `raygen sweep SPEC.yaml` (they carry a sweep_id)")
    frame = pd.DataFrame(rows)
    frame.attrs.update(title="Best trial per sweep", caption="best value = final value of the objective metric "
                       "of the best completed trial (trials stopped early are not ranked: their values are "
                       "half-trained).")
    return frame


def top_k(runs: pd.DataFrame, sweep_id: str, specs: Mapping[str, Any] | None = None, k: int = 10) -> pd.DataFrame:
    """The k best finished trials of a sweep with their parameters (first objective)."""
    trials, info = sweep_trials(runs, sweep_id, specs)
    require(not trials.empty, f"sweep {sweep_id} has no trials", f"trials of sweep {sweep_id}")
    order = ranked(trials, info)
    require(not order.empty, f"sweep {sweep_id} has no finished trial with a finite {info.objectives[0].metric}",
            f"completed trials of sweep {sweep_id} that logged {info.objectives[0].metric}")
    cols = ["trial_id", "run_id", "status"] + [o.metric for o in info.objectives] + [p.name for p in info.params]
    out = order.head(k)[[c for c in cols if c in order.columns]].reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    o = info.objectives[0]
    out.attrs.update(title=f"Top {len(out)} configurations of sweep {info.name}",
                     caption=f"ranked by final {o.metric} ({o.goal}); {len(order)} finished trials. "
                     + " ".join(info.notes))
    return out


def _levels(values: pd.Series, p: Param, max_levels: int = 6) -> pd.Series:
    """Discrete levels of a parameter: its own values when few, else (log-)quantile bins."""
    active = values.notna()
    if p.kind == "categorical" or values[active].nunique() <= max_levels:
        return values.map(lambda v: v if not _is_number(v) else float(v))
    numeric = pd.to_numeric(values, errors="coerce")
    bins = pd.qcut(np.log10(numeric) if p.log and (numeric[active] > 0).all() else numeric, q=max_levels,
                   duplicates="drop")
    labels = bins.map(lambda b: (f"{10 ** b.left:.3g}–{10 ** b.right:.3g}" if p.log else f"{b.left:.3g}–{b.right:.3g}")
                      if isinstance(b, pd.Interval) else None)
    return labels.astype(object)


def param_effects(runs: pd.DataFrame, sweep_id: str, specs: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """For each parameter and each of its levels: n finished trials, mean/std/best of the objective."""
    trials, info = sweep_trials(runs, sweep_id, specs)
    require(bool(info.params), f"sweep {sweep_id} has no varying parameter", f"trials of sweep {sweep_id} with params")
    done = ranked(trials, info)
    require(not done.empty, f"sweep {sweep_id} has no finished trial", f"completed trials of sweep {sweep_id}")
    o = info.objectives[0]
    rows = []
    for p in info.params:
        levels = _levels(done[p.name], p).astype(object).fillna("n/a (inactive)")
        for level, group in done.groupby(levels, sort=False):
            values = pd.to_numeric(group[o.metric], errors="coerce")
            best = values.min() if o.goal == "minimize" else values.max()
            rows.append({"parameter": p.name, "level": level, "n": len(group), f"{o.metric} mean": values.mean(),
                         f"{o.metric} std": values.std(ddof=1), f"{o.metric} best": best})
    frame = pd.DataFrame(rows)
    frame = (
        frame.assign(_num=pd.to_numeric(frame["level"], errors="coerce"), _str=frame["level"].astype(str))
        .sort_values(["parameter", "_num", "_str"], kind="stable")
        .drop(columns=["_num", "_str"])
        .reset_index(drop=True)
    )
    frame.attrs.update(title=f"Effect of each parameter, sweep {info.name}",
                       caption=f"objective {o.metric} ({o.goal}); continuous parameters binned by quantiles.")
    return frame


def param_interactions(runs: pd.DataFrame, sweep_id: str, specs: Mapping[str, Any] | None = None,
                       max_levels: int = 12) -> pd.DataFrame:
    """For each discrete parameter B and each other parameter A: the best A at each level of B.

    This is the question sweeps such as Infusion TAB A.1 answer ("the optimal infusion rate decreases as
    the number of steps grows"): read down `best value` for A = algo.omega, B = algo.steps.
    """
    trials, info = sweep_trials(runs, sweep_id, specs)
    done = ranked(trials, info)
    require(not done.empty, f"sweep {sweep_id} has no finished trial", f"completed trials of sweep {sweep_id}")
    o = info.objectives[0]
    rows = []
    for b in info.params:
        # Only discrete parameters make readable rows ("for each number of steps, the best rate").
        if b.kind == "float" or not 2 <= done[b.name].nunique() <= max_levels:
            continue
        for level, group in done.groupby(done[b.name].astype(object), sort=True):
            best = group.iloc[0]  # `done` is sorted best-first
            for a in info.params:
                if a.name == b.name:
                    continue
                rows.append({"by": b.name, "by value": level, "parameter": a.name, "best value": best[a.name],
                             o.metric: float(best[o.metric]), "n": len(group), "best trial": best.get("trial_id")})
    require(bool(rows), f"sweep {sweep_id} has no discrete parameter with 2-{max_levels} levels",
            "a sweep over at least two parameters, one of them with a few discrete values")
    frame = pd.DataFrame(rows)
    frame.attrs.update(title=f"Best setting of each parameter per level of another, sweep {info.name}",
                       caption=f"objective {o.metric} ({o.goal}); e.g. the best algo.omega for each algo.steps.")
    return frame


def effects_figure(runs: pd.DataFrame, sweep_id: str, specs: Mapping[str, Any] | None = None) -> Figure:
    """Objective against each parameter (one panel each; log x for log-sampled ones), best trial marked."""
    trials, info = sweep_trials(runs, sweep_id, specs)
    require(bool(info.params), f"sweep {sweep_id} has no varying parameter", f"trials of sweep {sweep_id} with params")
    done = ranked(trials, info)
    require(not done.empty, f"sweep {sweep_id} has no finished trial", f"completed trials of sweep {sweep_id}")
    o = info.objectives[0]
    # A conditional parameter inactive (NaN) in every finished trial would be an empty panel: left out, named.
    drawn = [p for p in info.params
             if done[p.name].map(lambda v: not (isinstance(v, float) and math.isnan(v))).any()]
    unused = [p.name for p in info.params if p not in drawn]
    require(bool(drawn), f"sweep {sweep_id}: every parameter is inactive in its finished trials",
            f"completed trials of sweep {sweep_id}")
    params = drawn[:12]
    ncols = min(3, len(params))
    fig, axes = new_figure(-(-len(params) // ncols), ncols, width=2.4, height=2.1)
    for ax in axes.flat[len(params):]:
        ax.remove()
    y = pd.to_numeric(done[o.metric], errors="coerce")
    for ax, p in zip(axes.flat, params):
        col = done[p.name]
        if p.kind == "categorical" or not all(_is_number(v) for v in col.dropna()):
            cats = [c for c in (p.choices or sorted(col.dropna().astype(str).unique())) if c is not None]
            code = {str(c): i for i, c in enumerate(cats)}
            x = col.map(lambda v, code=code: code.get(str(v), np.nan))
            ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=30 if len(cats) > 3 else 0)
        else:
            x = pd.to_numeric(col, errors="coerce")
            if p.log and (x.dropna() > 0).all():
                ax.set_xscale("log")
                # Decade ticks only: minor-tick labels of a narrow log range overlap one another.
                ax.xaxis.set_major_locator(LogLocator(base=10, numticks=5))
                ax.xaxis.set_minor_formatter(NullFormatter())
            else:
                ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.scatter(x, y, s=8, alpha=0.6, label="trial")
        ax.scatter(x.iloc[:1], y.iloc[:1], s=40, marker="*", color="tab:red", label="best trial")
        ax.set_xlabel(p.name)
        ax.set_ylabel(metric_label(o.metric))  # in words, with its unit
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2)
    title = f"Sweep {info.name}: {o.metric} ({o.goal}) per parameter, {len(done)} finished trials"
    if unused:
        title += f"\n(inactive in every finished trial, not drawn: {', '.join(unused)})"
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------- multi-objective


def pareto_mask(values: np.ndarray, signs: Sequence[float]) -> np.ndarray:
    """Non-dominated rows of `values` (n, m); `signs` turn each objective into one to minimise."""
    v = np.asarray(values, dtype=float) * np.asarray(signs, dtype=float)
    n = len(v)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not mask[i]:
            continue
        dominated = np.all(v <= v[i], axis=1) & np.any(v < v[i], axis=1)
        if dominated.any():
            mask[i] = False
    return mask


# ---------------------------------------------------------------------------------------------- importance


@dataclass
class Importance:
    """Importances per objective (name -> {param: importance}), excluded params with reasons, a message."""

    values: dict[str, dict[str, float]]
    excluded: dict[str, str]
    message: str = ""
    completed: int = 0


def _distribution(p: Param, observed: pd.Series):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.kind == "categorical":
        choices = list(p.choices) or sorted(observed.astype(str).unique())
        extra = [v for v in observed.unique() if v not in choices]
        return CategoricalDistribution(tuple(choices + extra))
    numeric = pd.to_numeric(observed, errors="coerce").dropna()
    low = min(x for x in (p.low, numeric.min()) if x is not None and np.isfinite(x))
    high = max(x for x in (p.high, numeric.max()) if x is not None and np.isfinite(x))
    log_scale = p.log and low > 0
    if p.kind == "int":
        return IntDistribution(math.floor(low), math.ceil(high), log=log_scale)
    return FloatDistribution(float(low), float(high), log=log_scale)


def study_from_trials(trials: pd.DataFrame, info: SweepInfo, params: Sequence[Param]):
    """An in-memory Optuna study holding the sweep's trials (finished ones COMPLETE, the rest FAIL)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    done = completed_mask(trials, info)
    dists = {p.name: _distribution(p, trials.loc[done, p.name].dropna()) for p in params}
    study = optuna.create_study(directions=[o.goal for o in info.objectives])
    for idx, row in trials.iterrows():
        values, finished = None, bool(done.loc[idx])
        sampled: dict[str, Any] = {}
        for p in params:
            v = row[p.name]
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            dist = dists[p.name]
            if p.kind == "int":
                v = round(float(v))
            elif p.kind == "float":
                v = float(v)
            if not dist._contains(dist.to_internal_repr(v)):
                continue
            sampled[p.name] = v
        if finished:
            values = [float(row[o.metric]) for o in info.objectives]
        study.add_trial(create_trial(
            params=sampled, distributions={k: dists[k] for k in sampled},
            values=values, state=TrialState.COMPLETE if finished else TrialState.FAIL,
        ))
    return study


def param_importance(trials: pd.DataFrame, info: SweepInfo, *, evaluator: str = "ped_anova",
                     seed: int = 0) -> Importance:
    """Hyperparameter importance with Optuna's evaluators on a study rebuilt from the trials table.

    PED-ANOVA is the default (no scikit-learn, fast at thousands of trials; it assumes lower is better, so
    maximised objectives are negated in `target`). Optuna uses only parameters present in every completed
    trial, so conditional parameters are listed in `excluded` rather than silently dropped; with fewer than
    two completed trials there is nothing to compare and `message` says so.
    """
    import warnings

    import optuna
    from optuna.importance import (
        FanovaImportanceEvaluator,
        MeanDecreaseImpurityImportanceEvaluator,
        PedAnovaImportanceEvaluator,
        get_param_importances,
    )

    done = completed_mask(trials, info)
    n = int(done.sum())
    excluded: dict[str, str] = {}
    if not info.objectives:
        return Importance({}, {}, "no objective: store the sweep spec (metric: {name, goal})", n)
    if n < 2:
        return Importance({}, {}, f"importance needs at least 2 completed trials (this sweep has {n})", n)
    usable = []
    for p in info.params:
        col = trials.loc[done, p.name]
        missing = int(col.isna().sum())
        if missing:
            excluded[p.name] = f"conditional: inactive in {missing} of {n} completed trials"
        elif col.astype(str).nunique() < 2:
            excluded[p.name] = "constant over the completed trials"
        else:
            usable.append(p)
    if not usable:
        return Importance({}, excluded, "no parameter varies over all completed trials", n)
    makers = {
        "ped_anova": lambda: PedAnovaImportanceEvaluator(),
        "fanova": lambda: FanovaImportanceEvaluator(seed=seed),
        "mean_decrease_impurity": lambda: MeanDecreaseImpurityImportanceEvaluator(seed=seed),
    }
    if evaluator not in makers:
        raise ValueError(f"unknown importance evaluator '{evaluator}' (known: {', '.join(makers)})")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    messages: list[str] = []
    try:
        study = study_from_trials(trials, info, usable)
        values: dict[str, dict[str, float]] = {}
        for i, o in enumerate(info.objectives):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sign = o.sign
                result = get_param_importances(
                    study, evaluator=makers[evaluator](), params=[p.name for p in usable],
                    target=lambda t, i=i, sign=sign: sign * t.values[i],
                )
            values[o.metric] = {k: float(v) for k, v in result.items()}
            messages += sorted({str(w.message).split(". ")[0] for w in caught
                                if "target" not in str(w.message).lower()})
    except (ValueError, RuntimeError, ImportError) as err:
        return Importance({}, excluded, f"importance failed: {err}", n)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return Importance(values, excluded, "; ".join(dict.fromkeys(messages)), n)


def importance_table(runs: pd.DataFrame, sweep_id: str, specs: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """PED-ANOVA importance of each parameter per objective (excluded parameters listed with the reason)."""
    trials, info = sweep_trials(runs, sweep_id, specs)
    result = param_importance(trials, info)
    if not result.values:
        raise MissingData(f"sweep {sweep_id}: {result.message}", f"more completed trials of sweep {sweep_id}")
    rows = [{"objective": metric, "parameter": name, "importance": value}
            for metric, imp in result.values.items() for name, value in imp.items()]
    rows += [{"objective": "", "parameter": name, "importance": math.nan, "note": reason}
             for name, reason in result.excluded.items()]
    frame = pd.DataFrame(rows)
    frame.attrs.update(title=f"Parameter importance (PED-ANOVA), sweep {info.name}",
                       caption=f"{result.completed} completed trials. {result.message}".strip())
    return frame
