"""Infusion Training (Bordes 2017 M.Sc. thesis, ch.3 and appendix A): its tables and figures.

Each function takes the frames of a results store (`runs`, `metrics`, `artifacts` as read by
`raygen.results.read_*` or `analysis.load`) and returns a DataFrame (see analysis/common.py for the layout)
or a matplotlib Figure. A function raises `MissingData` naming the runs it needs when the store lacks them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from analysis.common import (
    Cell,
    MissingData,
    OurRow,
    best_model,
    compare_table,
    comparison_frame,
    config,
    final,
    has_metric,
    k_text,
    metric_cell,
    model_key,
    require,
    selection_note,
    train_metric,
)
from analysis.figures import (
    best_run_panels,
    mean_curve,
    mean_of_rows,
    new_figure,
    plot_mean_curve,
    select_curve,
)
from analysis.protocol import (
    DEQUANTIZED,
    FULL_TRAIN,
    INCEPTION_SAMPLES,
    OFFICIAL_MNIST,
    REAL_VALUED,
    Need,
    Protocol,
    Selection,
    attach,
    dataset_need,
    eval_sizes,
    figure_runs,
    finish_table,
    inception_cell,
    require_runs,
    select,
)
from analysis.published import published

ALGORITHM = "infusion"
STEPS = "algo.steps"  # number of infusion steps T
SCHEDULE = "algo.schedule"  # "increasing" (alpha_t = alpha_{t-1} + omega) or "constant"
ALPHA0 = "algo.alpha0"  # alpha^(0): the rate of TAB A.1 (A), 1 step
OMEGA = "algo.omega"  # omega: the rate of TAB A.1 (B)-(D)
MODEL_CHOICE = ("valid/lower_bound", "test/lower_bound")  # papers pick the best model on validation
NEEDS = f"completed '{ALGORITHM}' runs"
MAX_RATES = 20  # rows per TAB A.1 block before our rates are binned
RATE_CMAP = colormaps["viridis"]


# The papers' protocols (Bordes 2017 §3.5): MNIST scaled to [0,1], official split, U(0,1/256) noise on the
# scaled test points at evaluation, 1000 test / 100 train examples for TAB 3.1, 10 000 samples for Parzen.
_MNIST = (dataset_need(("mnist",), "MNIST"), REAL_VALUED, OFFICIAL_MNIST, FULL_TRAIN)
PROTOCOLS = {
    "it_table_3_1": Protocol("it_table_3_1", "MNIST, real-valued in [0,1]",
                             (*_MNIST, DEQUANTIZED, *eval_sizes(1000, 100)),
                             notes=("IS with 20 000 importance samples per example (§3.5)",
                                    "mean ± std over 10 repeated evaluations")),
    "it_parzen": Protocol("it_parzen", "MNIST, real-valued in [0,1]",
                          (*_MNIST, Need("config.eval.parzen_samples", (10_000,), "10 000 generated samples",
                                         default=10_000))),
    "it_tab_a1": Protocol("it_tab_a1", "MNIST, real-valued in [0,1]", _MNIST),
    "it_table_3_2": Protocol("it_table_3_2", "CIFAR-10 scaled to [0,1]",
                             (dataset_need(("cifar10",), "CIFAR-10"), REAL_VALUED, FULL_TRAIN, INCEPTION_SAMPLES)),
    "mnist_training": Protocol("mnist_training", "MNIST, real-valued in [0,1]", _MNIST),
}


def _select(runs: pd.DataFrame, key: str, include_smoke: bool) -> Selection:
    sel = select(runs, ALGORITHM, PROTOCOLS[key], item=key, include_smoke=include_smoke)
    require_runs(sel, ALGORITHM, f"{NEEDS} (`raygen train infusion ...`)")
    return sel


def _model_caption(runs: pd.DataFrame) -> str:
    if runs.empty:
        return ""
    row = runs.iloc[0]
    parts = [f"{k.split('.')[-1]}={row.get('config.' + k)}" for k in (STEPS, SCHEDULE, ALPHA0, OMEGA)
             if "config." + k in runs.columns]
    return ", ".join(parts)


def rate_of(runs: pd.DataFrame) -> pd.Series:
    """The infusion rate TAB A.1 varies: alpha(0) for 1-step models, omega otherwise."""
    steps = pd.to_numeric(config(runs, STEPS), errors="coerce")
    alpha0 = pd.to_numeric(config(runs, ALPHA0), errors="coerce")
    omega = pd.to_numeric(config(runs, OMEGA), errors="coerce")
    return pd.Series(np.where(steps == 1, alpha0, omega), index=runs.index, dtype=float).round(10)



# ---------------------------------------------------------------------------------------------- tables

_TAB_3_1_LABELS = {"lower_bound": "Infusion training (lower bound, ours)",
                   "importance": "Infusion training (IS estimate, ours)",
                   "importance_isotropic": "Infusion training + isotropic (IS estimate, ours)"}


def _tab_3_1_rows(runs: pd.DataFrame) -> list[OurRow]:
    metrics = tuple(_TAB_3_1_LABELS)
    require(any(has_metric(runs, f"{split}/{m}") for split in ("test", "train_eval", "train") for m in metrics),
            "no run logged test/ or train_eval/ lower_bound, importance or importance_isotropic",
            f"{NEEDS} with the final evaluation on (eval.final=true, eval.splits=[test, train], eval.isotropic=true)")
    chosen = best_model(runs, MODEL_CHOICE)
    rows = []
    for m in metrics:
        k = k_text(chosen) if m != "lower_bound" else ""
        rows.append(OurRow(_TAB_3_1_LABELS[m],
                           {"test_ll": metric_cell(chosen, f"test/{m}"),
                            "train_ll": metric_cell(chosen, train_metric(chosen, m))},
                           tags=(m,), extra={"IS samples k": k}))
    return rows


def table_3_1(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """TAB 3.1: lower bound, IS estimate and isotropic-output IS on test (1000 ex.) and train (100 ex.).

    Train LL is the final evaluation's training split (`train_eval/`; `train/` in older stores). Each IS row
    says the k it used (the paper: 20 000)."""
    sel = _select(runs, "it_table_3_1", include_smoke)
    ours: list[OurRow] = []
    caption = f"No run matches the protocol ({PROTOCOLS['it_table_3_1'].describe()})."
    if not sel.matching.empty:
        try:
            ours = _tab_3_1_rows(sel.matching)
        except MissingData as missing:
            sel.leave(sel.matching, missing.reason)
        else:
            chosen = best_model(sel.matching, MODEL_CHOICE)
            sel.use(chosen)
            caption = (f"Ours: {ALGORITHM} on MNIST; {selection_note(sel.matching, MODEL_CHOICE)} "
                       f"({_model_caption(chosen)}); {len(chosen)} run(s); IS with k = {k_text(chosen) or '?'} "
                       "importance samples per example (the paper: 20 000).")
    frame = compare_table("it_table_3_1", ours, caption=caption, extra_labels=("IS samples k",))
    frame["IS samples k"] = frame["IS samples k"].astype(object).fillna("")
    return finish_table(frame, sel, _tab_3_1_rows, "it_table_3_1", f"{NEEDS} on MNIST with the final evaluation on (eval.final=true, eval.splits=[test, train], eval.isotropic=true)")


def _parzen_rows(runs: pd.DataFrame) -> list[OurRow]:
    runs = runs[final(runs, "test/parzen_ll").notna()]
    require(not runs.empty, "no run logged test/parzen_ll", f"{NEEDS} with eval.parzen=true")
    chosen = best_model(runs, (*MODEL_CHOICE, "test/parzen_ll"))
    return [OurRow("Infusion training (ours)",
                   {"parzen_ll": metric_cell(chosen, "test/parzen_ll", std_metric="test/parzen_ll_se", inner_kind="se")},
                   tags=("infusion",), extra={"sigma": float(final(chosen, "test/parzen_sigma").mean())})]


def parzen_table(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """FIG 3.4 (a table): Parzen-window test log-likelihood with the paper's baselines (σ = 0.17 there)."""
    sel = _select(runs, "it_parzen", include_smoke)
    sub = sel.matching[final(sel.matching, "test/parzen_ll").notna()]
    sel.leave(sel.matching[final(sel.matching, "test/parzen_ll").isna()], "did not log test/parzen_ll")
    require(not sub.empty or not sel.other.empty, f"no {ALGORITHM} run logged test/parzen_ll",
            f"{NEEDS} with eval.parzen=true")
    ours: list[OurRow] = []
    caption = f"No run matches the protocol ({PROTOCOLS['it_parzen'].describe()})."
    if not sub.empty:
        ours = _parzen_rows(sub)
        chosen = best_model(sub, (*MODEL_CHOICE, "test/parzen_ll"))
        sel.use(chosen)
        caption = (f"Ours: {ALGORITHM} on MNIST, σ chosen on the validation split (column sigma; the paper used "
                   f"0.17); {selection_note(sub, (*MODEL_CHOICE, 'test/parzen_ll'))} ({_model_caption(chosen)}).")
    frame = compare_table("it_parzen", ours, caption=caption, extra_labels=("sigma",))
    frame.attrs["display_extra"] = []
    return finish_table(frame, sel, _parzen_rows, "it_parzen", f"{NEEDS} on MNIST with eval.parzen=true")


def _inception_rows(runs: pd.DataFrame) -> list[OurRow]:
    runs = runs[final(runs, "test/inception_score").notna()]
    require(not runs.empty, "no run logged test/inception_score",
            f"{NEEDS} on CIFAR-10 with eval.inception_path set (an Inception-v3 TorchScript export; raygen downloads none), which logs test/inception_score")
    chosen = best_model(runs, (*MODEL_CHOICE, "test/inception_score"))
    return [OurRow("Infusion training (ours)",
                   {"inception_score": inception_cell(chosen)},
                   tags=("infusion",))]


def inception_table(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """TAB 3.2: Inception score of 50 000 CIFAR-10 samples (needs a run that logged test/inception_score)."""
    sel = _select(runs, "it_table_3_2", include_smoke)
    needs = f"{NEEDS} on CIFAR-10 with eval.inception_path set (an Inception-v3 TorchScript export; raygen downloads none), which logs test/inception_score"
    logged = pd.concat([sel.matching, sel.other])
    require(has_metric(logged, "test/inception_score"), f"no {ALGORITHM} run logged test/inception_score", needs)
    sub = sel.matching[final(sel.matching, "test/inception_score").notna()]
    ours = _inception_rows(sub) if not sub.empty else []
    if ours:
        sel.use(best_model(sub, (*MODEL_CHOICE, "test/inception_score")))
    frame = compare_table("it_table_3_2", ours, caption=f"Ours: {ALGORITHM} on CIFAR-10." if ours else
                          f"No run matches the protocol ({PROTOCOLS['it_table_3_2'].describe()}).")
    return finish_table(frame, sel, _inception_rows, "it_table_3_2", f"{NEEDS} on CIFAR-10 with eval.inception_path set (an Inception-v3 TorchScript export; raygen downloads none), which logs test/inception_score")


def _tab_a1_cells(sub: pd.DataFrame) -> dict[tuple[float, float], tuple[Cell, pd.DataFrame, str]]:
    """(steps, rate) -> (cell, the runs in it, rate range). Per (steps, rate) the best model config (by
    validation LB) fills the cell, averaged over its seeds: runs of other configs (learning rates, budgets,
    smoke runs) are never averaged in."""
    cells: dict[tuple[float, float], tuple[Cell, pd.DataFrame, str]] = {}
    keys = model_key(sub)  # once: hashing the config columns per cell is what made a 1000-trial sweep slow
    for steps_value, block in sub.groupby("_steps"):
        levels, ranges = block["_rate"], pd.Series("", index=block.index)
        if block["_rate"].nunique() > MAX_RATES:
            # A continuous (random/TPE) sweep of the rate: one row per quantile bin, at the bin's median rate.
            bins = pd.qcut(block["_rate"], q=MAX_RATES, duplicates="drop")
            levels = block["_rate"].groupby(bins, observed=True).transform("median").round(10)
            ranges = bins.map(lambda b: f"{b.left:.4g}–{b.right:.4g}").astype(str)
        for rate, group in block.groupby(levels):
            chosen = best_model(group, MODEL_CHOICE, keys=keys)
            cells[(float(steps_value), float(rate))] = (metric_cell(chosen, "test/lower_bound"), chosen,
                                                        ranges[group.index[0]])
    return cells


def _tab_a1_prepare(runs: pd.DataFrame, sel: Selection | None = None) -> pd.DataFrame:
    schedule = config(runs, SCHEDULE).astype(object)
    steps = pd.to_numeric(config(runs, STEPS), errors="coerce")
    # TAB A.1 uses the increasing schedule; with one step the schedule makes no difference.
    keep = (steps == 1) | schedule.isna() | (schedule == "increasing")
    logged = final(runs, "test/lower_bound").notna()
    if sel is not None:
        sel.leave(runs[~keep], "constant schedule (TAB A.1 uses the increasing one; see Fig A.1)")
        sel.leave(runs[keep & ~logged], "did not log test/lower_bound")
    runs = runs[keep & logged]
    runs = runs.assign(_steps=pd.to_numeric(config(runs, STEPS), errors="coerce"), _rate=rate_of(runs))
    if sel is not None:
        sel.leave(runs[runs["_steps"].isna() | runs["_rate"].isna()], "no algo.steps or infusion rate")
    return runs[runs["_steps"].notna() & runs["_rate"].notna()]


def _tab_a1_rows(runs: pd.DataFrame) -> list[OurRow]:
    sub = _tab_a1_prepare(runs)
    require(not sub.empty, "no increasing-schedule run logged test/lower_bound", NEEDS)
    return [OurRow(f"{int(s)} step(s), rate {r:g}" + (f" ({rng})" if rng else ""), {"lower_bound": c})
            for (s, r), (c, _, rng) in sorted(_tab_a1_cells(sub).items())]


def tab_a1(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """TAB A.1: test lower bound per infusion rate, one block per number of steps (increasing schedule).

    Rate = α(0) for 1 step (ω = 0) and ω for more steps, as in the paper's sub-tables (A)-(D). Each cell is
    the best model config with that (steps, rate) averaged over its seeds; `samples run` is the cell's best
    run, whose sample grid the report shows as a thumbnail (the paper's "Means of the model" column).
    """
    needs = f"{NEEDS} with config algo.steps and algo.omega (algo.alpha0 for 1 step) and final test/lower_bound"
    sel = _select(runs, "it_tab_a1", include_smoke)
    sub = _tab_a1_prepare(sel.matching, sel)
    require(not sub.empty or not sel.other.empty,
            f"no increasing-schedule {ALGORITHM} run logged test/lower_bound", needs)

    pub = published("it_tab_a1")
    rows: dict[tuple[float, float], dict[str, Any]] = {}
    for block in pub["subtables"]:
        for prow in block["rows"]:
            rate = round(float(prow.get("presumed_rate", prow["rate"])), 10)
            rows[(float(block["steps"]), rate)] = {
                "steps": int(block["steps"]),
                "infusion rate": rate,
                "rate key": block["rate_key"],
                "lower_bound published": float(prow["lower_bound"]),
                "lower_bound published ±": math.nan,
            }
    cells = _tab_a1_cells(sub) if not sub.empty else {}
    binned = any(rng for _, _, rng in cells.values())
    for (steps_value, rate), (c, chosen, rng) in cells.items():
        sel.use(chosen)
        best = chosen.loc[final(chosen, "test/lower_bound").idxmax()]
        row = rows.setdefault((steps_value, rate), {
            "steps": int(steps_value), "infusion rate": float(rate),
            "rate key": "alpha0" if steps_value == 1 else "omega",
            "lower_bound published": math.nan, "lower_bound published ±": math.nan,
        })
        row.update({"lower_bound ours": c.mean, "lower_bound ours ±": c.pm, "lower_bound ± over": c.spread,
                    "lower_bound n": c.n, "samples run": best["run_id"], "rate range": rng})
    sel.leave(sub, "another model config at the same steps and rate had the better validation lower bound")
    ordered = [rows[k] for k in sorted(rows)]
    caption = ("Ours: " + (f"{ALGORITHM} on MNIST, increasing schedule; rate = α(0) for 1 step, ω otherwise; per "
                           "cell the best model config (validation lower bound) averaged over its seeds. "
                           if cells else f"no run matches the protocol ({PROTOCOLS['it_tab_a1'].describe()}). ")
               + "[as printed] TAB A.1(C) lists 0.05 twice, the second is matched as 0.06.")
    if binned:
        caption += f" Blocks with more than {MAX_RATES} distinct rates are binned (median rate; `rate range`)."
    frame = comparison_frame(ordered, ["steps", "infusion rate"], ["lower_bound"], pub, caption=caption,
                             extra=["rate key", "rate range", "samples run"])
    frame["rate range"] = frame["rate range"].astype(object).fillna("")
    frame.attrs["thumbnail_column"] = "samples run"
    frame.attrs["display_extra"] = ["rate range"] if binned else []
    return finish_table(frame, sel, _tab_a1_rows, "it_tab_a1", needs)


# ---------------------------------------------------------------------------------------------- figures


def _rate_levels(rates: pd.Series, max_levels: int = 10) -> pd.Series:
    """Labels of the infusion rate; a continuous sweep is binned so that a panel stays readable."""
    if rates.nunique() <= max_levels:
        return rates.map(lambda r: f"{r:g}")
    bins = pd.qcut(rates, q=max_levels, duplicates="drop")
    return bins.map(lambda b: f"{b.left:.3g}–{b.right:.3g}").astype(str)


def fig_a1(runs: pd.DataFrame, metrics: pd.DataFrame, *, key: str = "valid/lower_bound",
           include_smoke: bool = False) -> Figure:
    """Fig A.1: lower-bound training curves per infusion rate, one panel per (steps, schedule).

    The paper's (A)-(D) are the increasing schedule with 1/5/10/15 steps and (E)-(F) constant with 10/15;
    here every (steps, schedule) present in the store gets a panel. Lines are means over runs, bands ± std.
    """
    needs = f"{NEEDS} with config algo.steps and an infusion rate that logged {key} during training"
    sel = _select(runs, "mnist_training", include_smoke)
    sub, data = figure_runs(sel, needs)
    require(f"config.{STEPS}" in sub.columns, "no run has config algo.steps", needs)
    sub = sub.assign(_steps=pd.to_numeric(config(sub, STEPS), errors="coerce"), _rate=rate_of(sub),
                     _schedule=config(sub, SCHEDULE).astype(object).fillna("increasing"))
    sub = sub[sub["_steps"].notna() & sub["_rate"].notna()]
    curves = select_curve(metrics, key, sub["run_id"])
    sel.leave(sub[~sub["run_id"].isin(curves["run_id"].unique())], f"logged no {key} curve")
    sel.used -= set(sub.loc[~sub["run_id"].isin(curves["run_id"].unique()), "run_id"])
    sub = sub[sub["run_id"].isin(curves["run_id"].unique())]
    require(not sub.empty, f"no {ALGORITHM} run logged {key} curves", needs)
    panels = sorted(sub.groupby(["_schedule", "_steps"]).groups, key=lambda p: (p[0] != "increasing", p[1]))
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(nrows, ncols, width=2.6, height=2.2)
    for ax in axes.flat[len(panels):]:
        ax.remove()
    # Label every run with its (panel, rate level) once, then average all curves in one groupby.
    labels = pd.concat([_rate_levels(g["_rate"]) for _, g in sub.groupby(["_schedule", "_steps"])])
    sub = sub.assign(_level=labels)
    level_of = {r: (sc, st, lv) for r, sc, st, lv in zip(sub["run_id"], sub["_schedule"], sub["_steps"], sub["_level"])}
    keyed = curves.assign(_key=curves["run_id"].map(level_of)).dropna(subset=["_key"])
    means = {k: g for k, g in keyed.groupby("_key", sort=False)}
    for ax, (schedule, steps_value) in zip(axes.flat, panels):
        panel = sub[(sub["_schedule"] == schedule) & (sub["_steps"] == steps_value)]
        # Colour encodes the rate: a colour bar with one block per rate level (a legend would cover the curves;
        # a few blocks stay vector graphics in the PDF where a continuous bar would be a raster).
        level_rate = panel.groupby("_level")["_rate"].median().sort_values()
        colors = RATE_CMAP(np.linspace(0, 1, max(len(level_rate), 2)))[: len(level_rate)]
        for color, label in zip(colors, level_rate.index):
            rows = means.get((schedule, steps_value, label))
            if rows is not None:
                plot_mean_curve(ax, mean_of_rows(rows), label=str(label), color=color)
        rate_name = "α(0)" if steps_value == 1 else ("ω" if schedule == "increasing" else "α")
        ax.set_title(f"{int(steps_value)} step{'s' if steps_value != 1 else ''}, {schedule}")
        ax.set_xlabel("training step (updates)")
        ax.set_ylabel(f"{_words(key)} (nats)")
        if ax.lines:
            n = len(level_rate)
            mappable = ScalarMappable(norm=BoundaryNorm(np.arange(n + 1) - 0.5, n), cmap=ListedColormap(colors))
            bar = fig.colorbar(mappable, ax=ax, pad=0.02, aspect=25)
            bar.set_label(rate_name)
            step = max(1, -(-n // 8))  # at most 8 labels: they never overlap
            bar.set_ticks(range(0, n, step), labels=[str(x) for x in list(level_rate.index)[::step]])
            bar.ax.tick_params(length=0)
    fig.suptitle(f"Fig A.1: {_words(key)} per infusion rate ({data})")
    return attach(fig, sel)


def _words(key: str) -> str:
    """`valid/lower_bound` -> "validation lower bound" (metric names in words on axes and in titles)."""
    split, _, metric = key.partition("/")
    split = {"valid": "validation", "valid_eval": "validation-set", "train_eval": "training-set", "train": "training", "test": "test"}.get(split, split)
    metric = {"lower_bound": "lower bound", "parzen_ll": "Parzen log-likelihood", "importance": "IS estimate",
              "nll": "NLL", "bpc": "BPC"}.get(metric, metric.replace("_", " "))
    return f"{split} {metric}"


def tab_a1_figure(runs: pd.DataFrame, *, include_smoke: bool = False) -> Figure:
    """TAB A.1 as a figure: test lower bound against the infusion rate, one panel per number of steps, ours
    (mean, error bars = std over seeds where there is more than one) beside the published numbers."""
    table = tab_a1(runs, include_smoke=include_smoke)
    sel = table.attrs["selection"]
    steps = sorted(table["steps"].unique())
    fig, axes = new_figure(1, len(steps), width=2.3, height=2.4)
    drawn = False
    for ax, k in zip(axes[0], steps):
        block = table[table["steps"] == k].sort_values("infusion rate")
        pub = block[block["lower_bound published"].notna()]
        ax.plot(pub["infusion rate"], pub["lower_bound published"], "k--", marker="x", lw=0.8, ms=4,
                label="published (TAB A.1)")
        ours = block[block["lower_bound n"] > 0]
        if not ours.empty:
            drawn = True
            err = ours["lower_bound ours ±"].where(ours["lower_bound n"] > 1).fillna(0).to_numpy()
            ax.errorbar(ours["infusion rate"], ours["lower_bound ours"], yerr=err if err.any() else None,
                        fmt="o", color="C0", ms=4, capsize=2, label="ours")
        ax.set_title(f"{int(k)} step{'s' if k != 1 else ''}")
        ax.set_xlabel("α(0)" if k == 1 else "ω")
        ax.set_ylabel("test lower bound (nats)")
        ax.margins(x=0.08)
    require(drawn, "no run matches TAB A.1's protocol", f"{NEEDS} on MNIST (see the TAB A.1 table's index entry)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    fig.suptitle("TAB A.1: test lower bound against the infusion rate (MNIST)")
    return attach(fig, sel)


def fig_3_3(runs: pd.DataFrame, metrics: pd.DataFrame, *, include_smoke: bool = False) -> Figure:
    """Fig 3.3: the lower bound (train/valid/test) and, when logged, the Parzen estimate during training,
    best model (mean over its seeds, band ± std)."""
    needs = f"{NEEDS} that log valid/lower_bound during training (train.eval_every)"
    sel = _select(runs, "mnist_training", include_smoke)
    sub, data = figure_runs(sel, needs)
    chosen = best_model(sub, MODEL_CHOICE)
    sel.used = set(chosen["run_id"])
    sel.leave(sub, "not the chosen model config (validation lower bound)")
    ids = chosen["run_id"]
    lb = {split: mean_curve(metrics, f"{split}/lower_bound", ids) for split in ("train", "valid", "test")}
    parzen = {split: mean_curve(metrics, f"{split}/parzen_ll", ids) for split in ("valid", "test")}
    lb = {k: v for k, v in lb.items() if not v.empty}
    parzen = {k: v for k, v in parzen.items() if not v.empty}
    require(bool(lb), f"no {ALGORITHM} run logged lower_bound curves", needs)
    fig, axes = new_figure(1, 2 if parzen else 1, width=3.4, height=2.6)
    for split, curve in lb.items():
        plot_mean_curve(axes[0, 0], curve, label={"valid": "validation"}.get(split, split))
    axes[0, 0].set(title="lower bound", xlabel="training step (updates)", ylabel="lower bound (nats)")
    axes[0, 0].legend()
    if parzen:
        ax = axes[0, 1]
        for split, curve in parzen.items():
            label = {"valid": "validation"}.get(split, split)
            if len(curve) > 1:
                plot_mean_curve(ax, curve, label=label)
            else:
                err = curve["std"].fillna(0).to_numpy()
                se = mean_curve(metrics, f"{split}/parzen_ll_se", ids)
                if not err.any() and len(ids) == 1 and not se.empty:
                    # One run: its own standard error over the test points is the spread to show (FIG 3.4's ±).
                    err = se["mean"].to_numpy()[-1:]
                    label += ", ± standard error"
                ax.errorbar(curve["step"], curve["mean"], yerr=err if err.any() else None, fmt="o", capsize=2,
                            label=f"{label} (final)")
        ax.set(title="Parzen estimate", xlabel="training step (updates)", ylabel="log-likelihood (nats)")
        ax.legend()
    n = len(chosen)
    fig.suptitle(f"Fig 3.3: training curves ({data}; {'1 run' if n == 1 else f'{n} runs, band = ± std'})")
    return attach(fig, sel)


def _artifact_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, include_smoke: bool,
                     name: str, title: str, needs: str) -> Figure:
    return best_run_panels(runs, artifacts, root, algorithm=ALGORITHM, name=name, title=title, needs=needs,
                           model_choice=MODEL_CHOICE, include_smoke=include_smoke)


def fig_3_5(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, include_smoke: bool = False) -> Figure:
    """Fig 3.5: samples beside their nearest training example (the `nearest.png` artifact), per dataset."""
    return _artifact_figure(runs, artifacts, root, include_smoke, "nearest.png",
                            "Fig 3.5: samples and their nearest training examples",
                            f"{NEEDS} on an image dataset with the final evaluation on (writes nearest.png)")


def fig_3_6(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, include_smoke: bool = False) -> Figure:
    """Fig 3.6: inpainting with the top half clamped (the `inpainting.png` artifact)."""
    return _artifact_figure(runs, artifacts, root, include_smoke, "inpainting.png", "Fig 3.6: inpainting (top half clamped)",
                            f"{NEEDS} on an image dataset whose artifacts include inpainting.png")


def samples_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, include_smoke: bool = False) -> Figure:
    """Sample grids (`samples.png`) of the best model per dataset (the paper's FIG 3.1 / A.3 / A.4 kind)."""
    return _artifact_figure(runs, artifacts, root, include_smoke, "samples.png", "Infusion training samples",
                            f"{NEEDS} with the final evaluation on (writes samples.png)")


def chains_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, include_smoke: bool = False) -> Figure:
    """Model sampling chains from the prior (`chains.png`): FIG 3.1, A.3(b), A.4(b)."""
    return _artifact_figure(runs, artifacts, root, include_smoke, "chains.png", "Infusion training sampling chains",
                            f"{NEEDS} whose artifacts include chains.png")


def fig_3_2(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, include_smoke: bool = False) -> Figure:
    """Infusion chains toward a training target (`infusion_chains.png`): FIG 3.2, A.2, A.3(a), A.4(a)."""
    return _artifact_figure(runs, artifacts, root, include_smoke, "infusion_chains.png", "Fig 3.2: infusion chains",
                            f"{NEEDS} whose artifacts include infusion_chains.png")
