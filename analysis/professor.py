"""Professor Forcing (Goyal 2018 M.Sc. thesis ch.2; Lamb et al. 2016): tables and figures.

The family is trained by three algorithms that share one generator (raygen/algorithms/sequence.py):
`professor`, `teacher` (the baseline) and `scheduled`. Tables put one row per algorithm beside the paper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.common import (
    OurRow,
    best_model,
    compare_table,
    final,
    has_metric,
    metric_cell,
    pick_dataset,
    require,
    runs_of,
    selection_note,
)
from analysis.figures import (
    image_panel,
    latest_artifacts,
    mean_curve,
    new_figure,
    plot_mean_curve,
    select_curve,
)
from analysis.published import published

ALGORITHMS = ("teacher", "professor", "scheduled")
LABELS = {"professor": "Professor Forcing", "teacher": "Teacher Forcing", "scheduled": "Scheduled Sampling"}
MODEL_CHOICE = ("valid/nll", "valid/bpc")  # lowest validation NLL / BPC picks the model
NEEDS = "completed 'professor' and 'teacher' runs"


def _family(runs: pd.DataFrame, metric: str, hint: str | None, dataset: str | None) -> tuple[pd.DataFrame, str]:
    sub = runs_of(runs, ALGORITHMS)
    require(not sub.empty, "no completed professor/teacher/scheduled runs", f"{NEEDS} (`raygen train professor ...`)")
    dataset = dataset or pick_dataset(sub, hint, metric)
    return sub[sub["dataset"] == dataset], str(dataset)


def _per_algorithm(runs: pd.DataFrame, metric: str) -> list[tuple[str, pd.DataFrame]]:
    out = []
    for algo in ALGORITHMS:
        group = runs[(runs["algorithm"] == algo) & final(runs, metric).notna()]
        if not group.empty:
            out.append((algo, best_model(group, (*MODEL_CHOICE, metric), goal="min")))
    return out


def table_2_1(runs: pd.DataFrame, *, dataset: str | None = None) -> pd.DataFrame:
    """Table 2.1: test NLL on sequential binarized MNIST in nats per image (`test/nll_image`), one row per
    algorithm of ours. Without `nll_image` (a non-image sequence dataset) the per-symbol `test/nll` is shown
    and the caption says so."""
    family = runs_of(runs, ALGORITHMS)
    metric = "test/nll_image" if has_metric(family, "test/nll_image") else "test/nll"
    sub, dataset = _family(runs, metric, "mnist", dataset)
    groups = _per_algorithm(sub, metric)
    require(bool(groups), f"no professor/teacher run on {dataset} logged {metric}",
            f"{NEEDS} on sequential binarized MNIST with the final evaluation on (test/nll_image)")
    ours = [OurRow(f"{LABELS[a]} (ours)", {"nll": metric_cell(g, metric)}, tags=(a,)) for a, g in groups]
    unit = "nats per image" if metric.endswith("nll_image") else "nats per symbol (not per image: not comparable)"
    caption = f"Ours on {dataset}: {metric}, {unit}; per algorithm, {selection_note(sub, MODEL_CHOICE)} (lowest)."
    return compare_table("pf_table_2_1", ours, caption=caption)


def ptb_bpc(runs: pd.DataFrame, *, dataset: str | None = None) -> pd.DataFrame:
    """PTB character-level validation BPC: teacher forcing 1.50 vs professor forcing 1.48 (plus our test BPC)."""
    sub, dataset = _family(runs, "valid/bpc", "ptb", dataset)
    groups = _per_algorithm(sub, "valid/bpc")
    require(bool(groups), f"no professor/teacher run on {dataset} logged valid/bpc",
            f"{NEEDS} on Penn Treebank characters logging valid/bpc")
    ours = [OurRow(f"{LABELS[a]} (ours)", {"valid_bpc": metric_cell(g, "valid/bpc"),
                                           "test_bpc": metric_cell(g, "test/bpc")}, tags=(a,)) for a, g in groups]
    caption = f"Ours on {dataset}; per algorithm, the model with the lowest mean final valid/bpc."
    return compare_table("pf_ptb_bpc", ours, caption=caption, quantities=["valid_bpc", "test_bpc"])


def distances_table(runs: pd.DataFrame, *, dataset: str | None = None) -> pd.DataFrame:
    """Fig 2.3's numbers: mean T-SNE centroid distance and mean teacher-forced→free-running distance."""
    sub, dataset = _family(runs, "test/centroid_distance", "vocal", dataset)
    metrics = ("test/centroid_distance", "test/nearest_free_distance")
    require(any(has_metric(sub, m) for m in metrics), f"no professor/teacher run on {dataset} logged "
            "test/centroid_distance or test/nearest_free_distance",
            f"{NEEDS} whose final evaluation measures hidden-state distances")
    groups = _per_algorithm(sub, "test/centroid_distance") or _per_algorithm(sub, "test/nearest_free_distance")
    ours = [OurRow(f"{LABELS[a]} (ours)", {"centroid_distance": metric_cell(g, metrics[0]),
                                           "nearest_free_distance": metric_cell(g, metrics[1])}, tags=(a,))
            for a, g in groups]
    caption = (f"Ours on {dataset}. The paper measures distances in T-SNE space (30 T-SNEs each); compare the "
               "teacher → professor reduction (40 % and 28 % there), not the absolute values.")
    return compare_table("pf_tsne_distances", ours, caption=caption)


def training_curves(runs: pd.DataFrame, metrics: pd.DataFrame, *, dataset: str | None = None) -> Figure:
    """Figs 2.2/2.6: training NLL (left) and validation BPC or NLL (right) per algorithm, over updates."""
    sub, dataset = _family(runs, "valid/bpc", "ptb", dataset)
    right = "valid/bpc" if not select_curve(metrics, "valid/bpc", sub["run_id"]).empty else "valid/nll"
    # Prefer, per algorithm, the runs that logged both curves (a sweep trial may log only the objective).
    both = set(select_curve(metrics, "train/nll", sub["run_id"])["run_id"]) & set(
        select_curve(metrics, right, sub["run_id"])["run_id"])
    fig, axes = new_figure(1, 2, width=4.8)
    drawn = 0
    for algo in ALGORITHMS:
        group = sub[sub["algorithm"] == algo]
        if group["run_id"].isin(both).any():
            group = group[group["run_id"].isin(both)]
        if group.empty:
            continue
        group = best_model(group, (*MODEL_CHOICE, right), goal="min")
        for ax, key in zip(axes[0], ("train/nll", right)):
            curve = mean_curve(metrics, key, group["run_id"])
            plot_mean_curve(ax, curve, label=f"{LABELS[algo]} (n={len(group)})")
            drawn += not curve.empty
    require(drawn > 0, f"no professor/teacher run on {dataset} logged train/nll or {right} curves",
            f"{NEEDS} logging train/nll and valid/bpc during training")
    axes[0, 0].set(title="training NLL", xlabel="update", ylabel="nats")
    axes[0, 1].set(title=f"validation {right.split('/')[1].upper()}", xlabel="update", ylabel=right)
    for ax in axes[0]:
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(f"Figs 2.2/2.6: training curves, teacher vs professor forcing ({dataset})")
    return fig


def distances_figure(runs: pd.DataFrame, *, dataset: str | None = None) -> Figure:
    """Fig 2.3's distances as bars: ours per algorithm (left) and the professor/teacher ratio, ours beside the
    paper's (right). The paper measures in T-SNE space, so only the ratio is comparable across the two."""
    table = distances_table(runs, dataset=dataset).set_index("model")
    quantities = ("centroid_distance", "nearest_free_distance")
    fig, axes = new_figure(1, 3, width=3.4)
    ours = table[table[[f"{q} n" for q in quantities]].sum(axis=1) > 0]
    names = [str(m).replace(" (ours)", "") for m in ours.index]
    for ax, q in zip(axes[0, :2], quantities):
        ax.bar(range(len(ours)), ours[f"{q} ours"], yerr=ours[f"{q} ours ±"].fillna(0).to_numpy(),
               color=[f"C{i}" for i in range(len(ours))])
        ax.set_xticks(range(len(ours)), names, fontsize=7)
        ax.set_title(f"ours: {q.replace('_', ' ')}", fontsize=9)
    x = np.arange(len(quantities))
    ax = axes[0, 2]
    pub = {r["ours"]: r for r in published("pf_tsne_distances")["rows"]}
    labels = {"professor": "Professor Forcing", "teacher": "Teacher Forcing"}
    paper_ratio = [pub["professor"][q] / pub["teacher"][q] for q in quantities]
    ours_ratio = [np.nan, np.nan]
    if all(v in table.index for v in labels.values()):
        ours_ratio = [table.loc[labels["professor"], f"{q} ours"] / table.loc[labels["teacher"], f"{q} ours"]
                      for q in quantities]
    ax.bar(x - 0.2, paper_ratio, 0.4, label="paper (T-SNE space)")
    ax.bar(x + 0.2, ours_ratio, 0.4, label="ours")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, [q.replace("_", " ") for q in quantities], fontsize=8)
    ax.set_title("professor / teacher (< 1: free run stays closer)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle("Fig 2.3: hidden-state distances, teacher-forced vs free-running")
    return fig


def tsne_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, dataset: str | None = None
                ) -> Figure:
    """Fig 2.3: T-SNE of teacher-forced vs free-running hidden states (`tsne.png`), teacher beside professor."""
    needs = f"{NEEDS} whose artifacts include tsne.png (written at the end of training)"
    sub, dataset = _family(runs, "test/centroid_distance", "vocal", dataset)
    panels, labels = [], []
    for algo in ALGORITHMS:
        group = sub[sub["algorithm"] == algo]
        if group.empty:
            continue
        chosen = best_model(group, (*MODEL_CHOICE, "test/nll"), goal="min")
        rows = latest_artifacts(artifacts, chosen["run_id"], ["tsne.png"])
        if not rows.empty:
            panels.append(rows.iloc[:1])
            labels.append(f"{LABELS[algo]} · {rows['run_id'].iloc[0]}")
    require(bool(panels), f"no professor/teacher run on {dataset} saved tsne.png", needs)
    return image_panel(root, pd.concat(panels), title=f"Fig 2.3: hidden-state T-SNE ({dataset})", labels=labels,
                       ncols=len(panels), needs=needs)


def discriminator_figure(runs: pd.DataFrame, metrics: pd.DataFrame, *, dataset: str | None = None) -> Figure:
    """Professor forcing's discriminator: validation accuracy and how often each gate is open (§2.3)."""
    sub = runs_of(runs, "professor")
    require(not sub.empty, "no completed professor runs", "completed 'professor' runs")
    keys = ("valid/disc_accuracy", "train/gate_generator_open", "train/gate_discriminator_open")
    logged = set(metrics.loc[(metrics["split"] + "/" + metrics["metric"]).isin(keys), "run_id"]) if len(metrics) else set()
    sub = sub[sub["run_id"].isin(logged)]
    require(not sub.empty, f"no professor run logged {', '.join(keys)}",
            "completed 'professor' runs logging the discriminator accuracy and gate metrics")
    dataset = dataset or pick_dataset(sub, "ptb", "valid/bpc")
    sub = best_model(sub[sub["dataset"] == dataset], MODEL_CHOICE, goal="min")
    fig, axes = new_figure(1, 1, width=6.0)
    drawn = 0
    for key in keys:
        curve = mean_curve(metrics, key, sub["run_id"])
        plot_mean_curve(axes[0, 0], curve, label=key)
        drawn += not curve.empty
    require(drawn > 0, f"no professor run on {dataset} logged {', '.join(keys)}",
            "completed 'professor' runs logging the discriminator accuracy and gate metrics")
    axes[0, 0].axhline(0.75, color="grey", lw=0.8, ls="--")
    axes[0, 0].axhline(0.99, color="grey", lw=0.8, ls=":")
    axes[0, 0].set(xlabel="update", ylabel="fraction", title="75 % / 99 % gates (dashed / dotted)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Professor forcing discriminator ({dataset})")
    return fig
