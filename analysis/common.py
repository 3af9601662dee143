"""Shared pieces of the table and figure builders: run selection, cells with ±, and the comparison layout.

A comparison table is a DataFrame with label columns (`model`, ...) and, for each quantity `q` of the paper
table, the columns `q published`, `q published ±`, [`q published mark`], `q ours`, `q ours ±`, `q ± over`
and `q n`. `ours` is the mean over the n runs in the cell; `±` is the standard deviation over those runs
when n ≥ 2, and the run's own standard deviation over repeated evaluations when n = 1 and the run logged
one (`<metric>_std`, as Infusion TAB 3.1 does); `± over` says which, in words. The frame's
`attrs` carry `title`, `caption`, `labels` and `quantities` for the renderers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.published import published

# Config columns that never distinguish two models (what a seed-group ignores).
NON_MODEL_CONFIG = (
    "config.seed",
    "config.device",
    "config.train.progress",
    "config.train.checkpoint_every",
    "config.train.log_every",
    "config.data.root",
    "config.data.download",
)
OK_STATUSES = ("completed",)
SMOKE = "smoke"  # run-row column: a smoke run (pipeline check, tiny budget), never in a paper table by default


class MissingData(LookupError):
    """A table or figure cannot be built from this store. `needs` tells the user which runs would fix it."""

    def __init__(self, reason: str, needs: str) -> None:
        super().__init__(f"{reason} (needs: {needs})")
        self.reason = reason
        self.needs = needs


@dataclass(frozen=True)
class Cell:
    mean: float = math.nan
    pm: float = math.nan
    n: int = 0
    pm_kind: str = ""  # "seeds": std over the n runs; "evals"/"splits"/"se": one run's own std or standard error
    repeats: int = 0  # with pm_kind "evals": how many evaluations the run's std is over (0: not recorded)

    @property
    def spread(self) -> str:
        """What the ± is over, in words ("" for no ±): the `± over` column of the tables."""
        if not math.isfinite(self.pm):
            return ""
        if self.pm_kind == "seeds":
            return f"std over {self.n} runs (seeds)"
        if self.pm_kind == "evals":
            return f"std over {self.repeats} evaluations of 1 run" if self.repeats else "std over repeated evaluations of 1 run"
        if self.pm_kind == "se":
            return "standard error (1 run)"
        if self.pm_kind == "splits":
            return f"std over {self.repeats} splits of the samples of 1 run" if self.repeats else "std over splits of 1 run"
        return ""


def cell(values: Iterable[float], inner_std: Iterable[float] | None = None, inner_kind: str = "evals",
         repeats: Iterable[float] | None = None) -> Cell:
    """Mean ± std of one table cell (see the module docstring for which std).

    `inner_std` is each run's own uncertainty, used only when the cell has one run; `inner_kind` names it
    ("evals": std over repeated evaluations, `repeats` of them; "se": a standard error over test points).
    A single run with no own uncertainty (or an std over fewer than 2 evaluations) gets no ±: the table
    says n = 1 instead of printing "± 0".
    """
    vals = np.asarray(list(values), dtype=float)
    keep = np.isfinite(vals)
    vals = vals[keep]
    if vals.size == 0:
        return Cell()
    if vals.size >= 2:
        return Cell(float(vals.mean()), float(vals.std(ddof=1)), int(vals.size), "seeds")
    if inner_std is not None:
        inner = np.asarray(list(inner_std), dtype=float)[keep]
        reps = np.asarray(list(repeats), dtype=float)[keep] if repeats is not None else np.array([np.nan])
        r = int(reps[0]) if reps.size and np.isfinite(reps[0]) else 0
        too_few = inner_kind == "evals" and 0 < r < 2
        if inner.size and np.isfinite(inner[0]) and not too_few:
            return Cell(float(vals[0]), float(inner[0]), 1, inner_kind, r if inner_kind in ("evals", "splits") else 0)
    return Cell(float(vals[0]), math.nan, 1, "")


def final(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Final value of `split/metric` per run (NaN where the run did not log it)."""
    column = f"final.{metric}"
    if column not in runs.columns:
        return pd.Series(np.nan, index=runs.index, dtype=float)
    return pd.to_numeric(runs[column], errors="coerce").astype(float)


def train_metric(runs: pd.DataFrame, metric: str) -> str:
    """Key of the final evaluation's training-split `metric`: `train_eval/<metric>` (its own split name, so it
    never clashes with the training loop's `train/` rows), or `train/<metric>` in stores written before."""
    key = f"train_eval/{metric}"
    return key if has_metric(runs, key) else f"train/{metric}"


def estimator_k(runs: pd.DataFrame, split: str = "test") -> pd.Series:
    """Importance samples k per example behind each run's IS numbers: the logged `<split>/importance_k`,
    else the config's eval.likelihood_samples."""
    logged = final(runs, f"{split}/importance_k")
    return logged.fillna(pd.to_numeric(config(runs, "eval.likelihood_samples"), errors="coerce"))


def k_text(runs: pd.DataFrame) -> str:
    """The k of a cell's runs in words ("20", "20, 100" when they differ, "" when unknown)."""
    ks = sorted({int(k) for k in estimator_k(runs).dropna()})
    return ", ".join(str(k) for k in ks)


def has_metric(runs: pd.DataFrame, metric: str) -> bool:
    return bool(final(runs, metric).notna().any())


def metric_cell(runs: pd.DataFrame, metric: str, *, std_metric: str | None = None, inner_kind: str = "evals",
                repeats_key: str = "eval.repeats") -> Cell:
    """Cell of `metric` over `runs`; `std_metric` (default `<metric>_std`) is the per-run evaluation std, over
    `repeats_key` repeated evaluations (Infusion TAB 3.1: eval.repeats = 10; IS: eval.inception_splits)."""
    std_metric = std_metric or f"{metric}_std"
    repeats = pd.to_numeric(config(runs, repeats_key), errors="coerce")
    return cell(final(runs, metric), final(runs, std_metric), inner_kind, repeats)


def config(runs: pd.DataFrame, key: str) -> pd.Series:
    """Config value `section.key` per run (NaN/None where absent)."""
    column = f"config.{key}"
    if column not in runs.columns:
        return pd.Series(np.nan, index=runs.index, dtype=object)
    return runs[column]


def truthy(series: pd.Series) -> pd.Series:
    """Boolean view of a config column that may be bool, 0/1 float, "true" strings or missing (False)."""

    def one(v: Any) -> bool:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return False
        if isinstance(v, str):
            return v.strip().lower() in ("1", "true", "yes", "on")
        return bool(v)

    return series.map(one).astype(bool)


def smoke_mask(runs: pd.DataFrame) -> pd.Series:
    """True for runs marked as smoke runs (`raygen sweep --smoke`); stores written before the column existed
    have none."""
    if SMOKE not in runs.columns:
        return pd.Series(False, index=runs.index, dtype=bool)
    return truthy(runs[SMOKE])


def runs_of(runs: pd.DataFrame, algorithms: str | Sequence[str], *, statuses: Sequence[str] = OK_STATUSES) -> pd.DataFrame:
    """Completed runs of the given algorithm(s)."""
    if runs.empty or "algorithm" not in runs.columns:
        return runs.iloc[0:0]
    names = [algorithms] if isinstance(algorithms, str) else list(algorithms)
    mask = runs["algorithm"].isin(names)
    if "status" in runs.columns:
        mask &= runs["status"].isin(statuses)
    return runs[mask]


def pick_dataset(runs: pd.DataFrame, hint: str | None, metric: str | None = None) -> str | None:
    """The dataset a paper table is built on: the paper's own (`hint` substring) when present, else the one
    with the most runs that logged `metric`."""
    if runs.empty or "dataset" not in runs.columns:
        return None
    usable = runs if metric is None else runs[final(runs, metric).notna()]
    if usable.empty:
        usable = runs
    counts = usable["dataset"].value_counts()
    if hint:
        preferred = [d for d in counts.index if hint.lower() in str(d).lower()]
        if preferred:
            return str(preferred[0])
    return str(counts.index[0]) if len(counts) else None


def model_key(runs: pd.DataFrame) -> pd.Series:
    """A label per run that is equal for runs of the same model config (seeds and bookkeeping ignored)."""
    # A smoke run is never averaged with a real run of the same config (TAB A.1 must not mix them).
    cols = sorted(c for c in runs.columns if (c.startswith("config.") and c not in NON_MODEL_CONFIG) or c == SMOKE)
    if not cols:
        return pd.Series(0, index=runs.index, dtype="uint64")
    # A vectorised hash of the stringified config row (missing -> "<NA>"): one pass over a thousand runs.
    frame = runs[cols].astype(object).where(runs[cols].notna(), "<NA>").astype(str)
    return pd.util.hash_pandas_object(frame, index=False)


def best_model(runs: pd.DataFrame, metrics: Sequence[str], goal: str = "max", keys: pd.Series | None = None
               ) -> pd.DataFrame:
    """The runs of the model config with the best mean of the first of `metrics` that any run logged.

    Papers report their best model, chosen on validation data; so the first metric should be a validation
    one and the test metric only a fallback (the caption of each table says which one picked the model).
    """
    if runs.empty:
        return runs
    for metric in metrics:
        values = choice_values(runs, metric)
        if values.notna().any():
            # `keys`: model_key of a larger frame computed once by a caller that picks per group.
            keys = model_key(runs) if keys is None else keys.loc[runs.index]
            means = values.groupby(keys).mean().dropna()
            best = means.idxmax() if goal == "max" else means.idxmin()
            return runs[keys == best]
    return runs


def choice_values(runs: pd.DataFrame, metric: str) -> pd.Series:
    """The value a model is chosen on. For a validation metric, the run's own model selection
    (`selection/<metric>`: the best validation value, whose state the final evaluation scored) where it
    logged one, else the last logged value."""
    values = final(runs, metric)
    if metric.startswith("valid/"):
        values = final(runs, f"selection/{metric}").fillna(values)
    return values


def selection_note(runs: pd.DataFrame, metrics: Sequence[str]) -> str:
    for metric in metrics:
        if has_metric(runs, metric):
            return f"model config chosen by mean final {metric}"
    return "all runs"


@dataclass
class OurRow:
    """One row of our results: a label, the tags of published rows it sits beside, and its cells."""

    label: str
    cells: dict[str, Cell]
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def quantity_columns(q: str, marks: bool = False) -> list[str]:
    cols = [f"{q} published", f"{q} published ±"]
    if marks:
        cols.append(f"{q} published mark")
    return cols + [f"{q} ours", f"{q} ours ±", f"{q} ± over", f"{q} n"]


def _fill_ours(row: dict[str, Any], quantities: Sequence[str], ours: OurRow | None) -> None:
    for q in quantities:
        c = ours.cells.get(q, Cell()) if ours else Cell()
        row[f"{q} ours"] = c.mean
        row[f"{q} ours ±"] = c.pm
        row[f"{q} ± over"] = c.spread
        row[f"{q} n"] = c.n
    if ours:
        row.update(ours.extra)


def compare_table(
    published_key: str,
    ours: Sequence[OurRow],
    *,
    caption: str = "",
    quantities: Sequence[str] | None = None,
    extra_labels: Sequence[str] = (),
) -> pd.DataFrame:
    """Published rows of `published_key` with our matching rows beside them; our other rows appended."""
    pub = published(published_key)
    qs = list(quantities or pub["columns"])
    marks = any(f"{q}_mark" in r for r in pub["rows"] for q in qs)
    rows: list[dict[str, Any]] = []
    used: set[int] = set()
    for prow in pub["rows"]:
        row: dict[str, Any] = {"model": prow["model"]}
        for q in qs:
            row[f"{q} published"] = float(prow[q]) if q in prow else math.nan
            row[f"{q} published ±"] = float(prow[f"{q}_pm"]) if f"{q}_pm" in prow else math.nan
            if marks:
                row[f"{q} published mark"] = prow.get(f"{q}_mark", "")
        match = None
        if prow.get("ours"):
            for i, o in enumerate(ours):
                if i not in used and prow["ours"] in o.tags:
                    match = o
                    used.add(i)
                    break
        _fill_ours(row, qs, match)
        rows.append(row)
    for i, o in enumerate(ours):
        if i in used:
            continue
        row = {"model": o.label}
        for q in qs:
            row[f"{q} published"] = math.nan
            row[f"{q} published ±"] = math.nan
            if marks:
                row[f"{q} published mark"] = ""
        _fill_ours(row, qs, o)
        rows.append(row)
    return comparison_frame(rows, ["model", *extra_labels], qs, pub, caption=caption, marks=marks)


def comparison_frame(
    rows: list[dict[str, Any]],
    labels: Sequence[str],
    quantities: Sequence[str],
    pub: dict[str, Any],
    *,
    caption: str = "",
    marks: bool = False,
    extra: Sequence[str] = (),
) -> pd.DataFrame:
    """Rows (dicts keyed by the comparison columns) as a frame with the renderers' attrs set."""
    columns = list(labels) + list(extra) + [c for q in quantities for c in quantity_columns(q, marks)]
    frame = pd.DataFrame(rows).reindex(columns=columns)
    for q in quantities:
        frame[f"{q} n"] = frame[f"{q} n"].fillna(0).astype(int)
        frame[f"{q} ± over"] = frame[f"{q} ± over"].astype(object).fillna("")
    frame.attrs.update(
        title=f"{pub['id']}: {pub['title']}",
        caption=caption,
        labels=list(labels),
        quantities=list(quantities),
        source=str(pub["paper"]),  # the paper, as a reader cites it (`source` names our transcription's text file)
        unit=pub.get("unit", ""),
    )
    return frame


def require(condition: bool, reason: str, needs: str) -> None:
    if not condition:
        raise MissingData(reason, needs)
