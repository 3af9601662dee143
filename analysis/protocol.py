"""Like with like: the data and settings each paper table's "ours" column needs, and which runs meet them.

A published number is only comparable with a run on the same data, preprocessed the same way (binarization,
dequantisation, split), evaluated the same way (test/train sizes, Parzen samples) and with the model settings
the table is about. Each table declares a `Protocol`; `select` sorts the runs of its algorithm(s) into

* `matching`: completed, not smoke, and every requirement met: only these can fill a published row's cell;
* `other`: completed runs that differ (another dataset, another binarization, fewer test examples, ...):
  they are shown only in a separate "ours, other data" table, each row naming how it differs;
* left out with a reason: failed/running/stopped runs and smoke runs (unless `include_smoke`).

`Selection` also records which matching runs a table ended up using (the chosen model config) and why the
others were not, for the report's index.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.common import (
    OK_STATUSES,
    Cell,
    MissingData,
    OurRow,
    _fill_ours,
    final,
    metric_cell,
    require,
    smoke_mask,
)
from analysis.published import published

SMOKE_REASON = "smoke run (excluded from paper tables; `raygen report --include-smoke` shows it)"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _same(value: Any, allowed: Any) -> bool:
    if _missing(allowed):
        return _missing(value)
    if _missing(value):
        return False
    if isinstance(allowed, bool) or isinstance(value, bool):
        if isinstance(value, str):
            value = value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value) == bool(allowed)
    if isinstance(allowed, (int, float)) and not isinstance(value, str):
        try:
            return math.isclose(float(value), float(allowed), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return str(value) == str(allowed)


@dataclass(frozen=True)
class Need:
    """One requirement on a run-row column.

    `allowed`: the accepted values (None stands for "unset"). `default`: the value a run is taken to have
    when neither the column nor its stored config (`config_json`) has the key: runs written before the key
    existed used the then default. `words`: what the paper used, for captions and the index.
    """

    column: str
    allowed: tuple[Any, ...]
    words: str
    default: Any = None

    def values(self, runs: pd.DataFrame) -> pd.Series:
        if self.column in runs.columns:
            values = runs[self.column].astype(object)
        else:
            values = pd.Series(None, index=runs.index, dtype=object)
        missing = values.map(_missing)
        if missing.any():
            values = values.copy()
            for idx in values.index[missing]:
                values.at[idx] = self._from_config_json(runs, idx)
        return values

    def _from_config_json(self, runs: pd.DataFrame, idx: Any) -> Any:
        # A null config value is stored as a null column; config_json says whether the key was set to null
        # (e.g. eval.test_examples=None: all test examples) or did not exist when the run was written.
        if not self.column.startswith("config.") or "config_json" not in runs.columns:
            return self.default
        text = runs.at[idx, "config_json"]
        if not isinstance(text, str):
            return self.default
        try:
            node: Any = json.loads(text)
        except json.JSONDecodeError:
            return self.default
        for part in self.column[len("config."):].split("."):
            if not isinstance(node, dict) or part not in node:
                return self.default
            node = node[part]
        return node

    def mismatch(self, runs: pd.DataFrame) -> pd.Series:
        """Per run, "" when it meets this need, else what it has instead, in words."""
        name = self.column.removeprefix("config.")

        def one(v: Any) -> str:
            if any(_same(v, a) for a in self.allowed):
                return ""
            shown = "none" if _missing(v) else (f"{v:g}" if isinstance(v, float) else str(v))
            return f"{name}={shown} (paper: {self.words})"

        return self.values(runs).map(one)


@dataclass(frozen=True)
class Protocol:
    """The data and settings of one published table. `data` names the paper's data in words (captions)."""

    key: str
    data: str
    needs: tuple[Need, ...]
    notes: tuple[str, ...] = ()  # settings we report but do not require (e.g. the IS sample count k)

    @property
    def datasets(self) -> tuple[str, ...]:
        return next((tuple(str(a) for a in n.allowed) for n in self.needs if n.column == "dataset"), ())

    def mismatches(self, runs: pd.DataFrame) -> pd.Series:
        """Per run, "" when it meets every need, else the deviations joined by "; "."""
        out = pd.Series("", index=runs.index, dtype=object)
        for need in self.needs:
            miss = need.mismatch(runs)
            out = [a + ("; " if a and b else "") + b for a, b in zip(out, miss)]
            out = pd.Series(out, index=runs.index, dtype=object)
        return out

    def describe(self) -> str:
        return self.data + (" — " + "; ".join(n.words for n in self.needs if n.column != "dataset")
                            if len(self.needs) > 1 else "")


def dataset_need(names: Sequence[str], words: str) -> Need:
    return Need("dataset", tuple(names), words)


# The paper's preprocessing, in run-row columns (raygen's defaults are the papers' values, so default runs
# match; a quick run with data.max_train or fewer test examples does not).
REAL_VALUED = Need("config.data.binarize", ("none", "auto"), "real-valued pixels in [0,1], no binarization",
                   default="auto")
OFFICIAL_MNIST = Need("config.data.mnist_split", ("official",), "official split (50k train / 10k valid / 10k test)",
                      default="official")
FULL_TRAIN = Need("config.data.max_train", (None,), "the full training set", default=None)
DEQUANTIZED = Need("config.eval.dequantize", (True,), "U(0,1/256) noise added to scaled test points",
                   default=True)


INCEPTION_SAMPLES = Need("config.eval.inception_samples", (50_000,), "50 000 samples", default=50_000)


def inception_cell(runs: pd.DataFrame) -> Cell:
    """Inception score cell: the standard error where a run logged one (`_se`), else its std over the
    eval.inception_splits splits (`_std`, as raygen's evaluation reports it)."""
    if final(runs, "test/inception_score_se").notna().any():
        return metric_cell(runs, "test/inception_score", std_metric="test/inception_score_se", inner_kind="se")
    return metric_cell(runs, "test/inception_score", std_metric="test/inception_score_std", inner_kind="splits",
                       repeats_key="eval.inception_splits")


def eval_sizes(test: int | None, train: int | None) -> tuple[Need, ...]:
    return (Need("config.eval.test_examples", (test,), f"{test} test examples", default=1000),
            Need("config.eval.train_examples", (train,), f"{train} train examples", default=100))


@dataclass(eq=False)
class Selection:
    """Which runs one table or figure used, which it could not use, and why (for the report's index)."""

    item: str
    protocol: Protocol | None
    matching: pd.DataFrame
    other: pd.DataFrame
    reasons: dict[str, str] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    datasets: dict[str, str] = field(default_factory=dict)
    other_table: pd.DataFrame | None = None  # the "ours, other data" rows, when there are any
    notes: list[str] = field(default_factory=list)  # e.g. which IS sample count k each number used
    smoke: set[str] = field(default_factory=set)  # smoke runs among the candidates (`--include-smoke` only)

    def __deepcopy__(self, memo: dict[int, Any]) -> Selection:
        # pandas deep-copies a frame's attrs on every derived frame; the selection is shared, not copied.
        return self

    def use(self, runs: pd.DataFrame | Iterable[str]) -> None:
        ids = runs["run_id"] if isinstance(runs, pd.DataFrame) else runs
        for r in ids:
            self.used.add(str(r))
            self.reasons.pop(str(r), None)

    def leave(self, runs: pd.DataFrame | Iterable[str], reason: str) -> None:
        ids = runs["run_id"] if isinstance(runs, pd.DataFrame) else runs
        for r in ids:
            if str(r) not in self.used:
                self.reasons.setdefault(str(r), reason)

    def ledger(self, default_reason: str = "matches the protocol; not the chosen model config") -> pd.DataFrame:
        """run_id, dataset, smoke, used, why: one row per run the table considered."""
        rows = []
        for run_id, dataset in self.datasets.items():
            used = run_id in self.used
            why = "" if used else self.reasons.get(run_id, default_reason)
            rows.append({"run_id": run_id, "dataset": dataset, "smoke": run_id in self.smoke, "used": used,
                         "why": why})
        return pd.DataFrame(rows, columns=["run_id", "dataset", "smoke", "used", "why"])


def select(runs: pd.DataFrame, algorithms: str | Sequence[str], protocol: Protocol | None, *, item: str = "",
           include_smoke: bool = False) -> Selection:
    """Sort the runs of `algorithms` for one table (see the module docstring)."""
    names = [algorithms] if isinstance(algorithms, str) else list(algorithms)
    if runs.empty or "algorithm" not in runs.columns:
        empty = runs.iloc[0:0]
        return Selection(item, protocol, empty, empty)
    mine = runs[runs["algorithm"].isin(names)]
    sel = Selection(item, protocol, mine.iloc[0:0], mine.iloc[0:0])
    sel.datasets = dict(zip(mine["run_id"].astype(str), mine.get("dataset", pd.Series("", index=mine.index))
                            .astype(object).fillna("").astype(str)))
    status = mine["status"] if "status" in mine.columns else pd.Series("completed", index=mine.index)
    done = status.isin(OK_STATUSES)
    for run_id, st in zip(mine.loc[~done, "run_id"], status[~done]):
        sel.reasons[str(run_id)] = f"status {st}"
    smoke = smoke_mask(mine) & done
    # every smoke run is named so in the ledger's `smoke` column (the .runs.csv), left out or let in
    sel.smoke = set(mine.loc[smoke_mask(mine), "run_id"].astype(str))
    if not include_smoke:
        sel.leave(mine.loc[smoke, "run_id"].astype(str), SMOKE_REASON)
        candidates = mine[done & ~smoke]
    else:
        candidates = mine[done]
    if protocol is None:
        sel.matching = candidates
        return sel
    deviations = protocol.mismatches(candidates)
    sel.matching = candidates[deviations == ""]
    sel.other = candidates[deviations != ""].assign(_deviation=deviations[deviations != ""],
                                                    _smoke=smoke_mask(candidates)[deviations != ""])
    for run_id, dev in zip(sel.other["run_id"], sel.other["_deviation"]):
        sel.reasons[str(run_id)] = f"other data or settings: {dev} (in the 'ours, other data' table)"
    return sel


def require_runs(sel: Selection, what: str, needs: str) -> None:
    """MissingData when no run is left for a table, saying so truly: no completed runs of `what` at all, or
    only smoke runs (left out unless `--include-smoke`)."""
    if not sel.matching.empty or not sel.other.empty:
        return
    smoke = sum(1 for why in sel.reasons.values() if why == SMOKE_REASON)
    if smoke:
        raise MissingData(f"only smoke runs of {what} ({smoke}; `raygen report --include-smoke` lets them in)", needs)
    states = pd.Series([w.removeprefix("status ") for w in sel.reasons.values() if w.startswith("status ")])
    found = ", ".join(f"{n} {state}" for state, n in states.value_counts().sort_index().items())
    raise MissingData(f"no completed {what} runs" + (f" ({found})" if found else ""), needs)


OTHER_LABEL = "data and settings"


def short_deviation(dataset: str, deviation: str) -> str:
    """"digits; data.max_train=500" from the index's long form (the paper's values are in the main table)."""
    parts = [re.sub(r" \(paper: .*\)$", "", p) for p in deviation.split("; ")]
    return "; ".join([dataset] + [p for p in parts if not p.startswith("dataset=")])


def other_data_table(sel: Selection, rows: Callable[[pd.DataFrame], list[OurRow]], published_key: str,
                     quantities: Sequence[str] | None = None) -> pd.DataFrame | None:
    """The "ours, other data" table of one published table: `rows` (the builder's own row maker) applied to
    each group of non-matching runs that share a dataset and the same deviations. Its caption names no
    dataset of the paper's: every row says what its runs were trained and evaluated on instead."""
    if sel.other.empty:
        return None
    pub = published(published_key)
    qs = list(quantities or pub["columns"])
    out: list[dict[str, Any]] = []
    for (dataset, deviation, is_smoke), group in sel.other.groupby(["dataset", "_deviation", "_smoke"], sort=True):
        try:
            ours = rows(group)
        except MissingData as missing:
            # Replaces select's "(in the 'ours, other data' table)": these runs are in no table at all.
            for run_id in group["run_id"].astype(str):
                sel.reasons[run_id] = f"other data or settings: {deviation}; {missing.reason} (in no table)"
            continue
        shown = [o for o in ours if any(c.n for c in o.cells.values())]
        if not shown:
            for run_id in group["run_id"].astype(str):
                sel.reasons[run_id] = (f"other data or settings: {deviation}; logged none of the table's "
                                       "quantities (in no table)")
        for o in shown:
            # Smoke runs (only with --include-smoke) say so: never mistaken for a real run on that data.
            label = short_deviation(str(dataset), str(deviation)) + ("; smoke run" if is_smoke else "")
            row: dict[str, Any] = {OTHER_LABEL: label, "model": o.label}
            _fill_ours(row, qs, o)
            out.append(row)
    if not out:
        return None
    quantity_cols = [c for q in qs for c in (f"{q} ours", f"{q} ours ±", f"{q} ± over", f"{q} n")]
    extras = list(dict.fromkeys(k for row in out for k in row if k not in quantity_cols and k not in (OTHER_LABEL, "model")))
    frame = pd.DataFrame(out).reindex(columns=[OTHER_LABEL, "model", *extras, *quantity_cols])
    for q in qs:
        frame[f"{q} n"] = frame[f"{q} n"].fillna(0).astype(int)
        frame[f"{q} ± over"] = frame[f"{q} ± over"].astype(object).fillna("")
    frame.attrs.update(
        title=f"{pub['id']}, ours on other data or settings (not comparable with the published numbers)",
        caption=("Our runs whose data or settings differ from what the published table used; each row names "
                 "the data it was trained and evaluated on and each difference. They never fill a published cell."),
        labels=[OTHER_LABEL, "model", *extras],
        quantities=qs,
        ours_only=True,
        unit=pub.get("unit", ""),
    )
    return frame


def attach(result: Any, sel: Selection) -> Any:
    """Hang the selection on a table (frame attrs) or figure (an attribute) for the report's index."""
    if isinstance(result, pd.DataFrame):
        result.attrs["selection"] = sel
    else:
        result.raygen_selection = sel
    return result


def selection_of(result: Any) -> Selection | None:
    if isinstance(result, pd.DataFrame):
        return result.attrs.get("selection")
    return getattr(result, "raygen_selection", None)


def figure_runs(sel: Selection, needs: str) -> tuple[pd.DataFrame, str]:
    """Runs a figure of our own curves draws, and the words naming their data for its title.

    The runs that match the paper's protocol when there are any (title: the paper's data); otherwise the
    dataset with the most other runs, named as such ("digits, not the paper's data"), never the paper's."""
    if not sel.matching.empty:
        sel.use(sel.matching)
        return sel.matching, (sel.protocol.data if sel.protocol else "") + _smoke_words(sel, sel.matching)
    require(not sel.other.empty, "no completed runs to draw", needs)
    dataset = str(sel.other["dataset"].value_counts().index[0])
    runs = sel.other[sel.other["dataset"] == dataset]
    deviations = sorted(set(runs["_deviation"]))
    sel.use(runs)
    # Overwrite select's reason: a figure has no "ours, other data" table for these runs to be in.
    rest = sel.other[sel.other["dataset"] != dataset]
    for run_id, dev in zip(rest["run_id"].astype(str), rest["_deviation"]):
        sel.reasons[run_id] = f"other data or settings: {dev}; the figure draws {dataset}, the dataset with the most runs"
    words = f"{dataset}, not the paper's data or settings"
    if len(deviations) == 1:
        # The short form (no "(paper: ...)": the index has it) on a line of its own, so the title fits.
        short = short_deviation(dataset, deviations[0]).removeprefix(dataset).lstrip("; ")
        words += f"\n({short})" if short else ""
    return runs, words + _smoke_words(sel, runs)


def _smoke_words(sel: Selection, runs: pd.DataFrame) -> str:
    """"; with smoke runs" when a figure draws some (only with --include-smoke): its title says so."""
    return "; with smoke runs" if sel.smoke & set(runs["run_id"].astype(str)) else ""


def finish_table(frame: pd.DataFrame, sel: Selection, rows: Callable[[pd.DataFrame], list[OurRow]],
                 published_key: str, needs: str, quantities: Sequence[str] | None = None) -> pd.DataFrame:
    """Attach the selection and the "ours, other data" table to a published table. A table that would show
    no number of ours at all (no matching run filled a cell and no other run gave one) is not built: it
    raises MissingData with the most common reason the runs were left out."""
    sel.other_table = other_data_table(sel, rows, published_key, quantities)
    qs = list(quantities or frame.attrs.get("quantities", []))
    filled = any(int(frame[f"{q} n"].sum()) > 0 for q in qs if f"{q} n" in frame.columns)
    if not filled and sel.other_table is None:
        reasons = pd.Series([r for r in sel.reasons.values() if r])
        reason = reasons.value_counts().index[0] if len(reasons) else "no run fills a cell"
        raise MissingData(f"no run of ours fills it ({reason})", needs)
    return attach(frame, sel)
