"""Professor Forcing (Goyal 2018 M.Sc. thesis ch.2; Lamb et al. 2016): tables and figures.

The family is trained by three algorithms that share one generator (raygen/algorithms/sequence.py):
`professor`, `teacher` (the baseline) and `scheduled`. Tables put one row per algorithm beside the paper.
"""

from __future__ import annotations

import math
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
    smoke_mask,
)
from analysis.figures import (
    image_panel,
    latest_artifacts,
    mean_curve,
    new_figure,
    plot_mean_curve,
    select_curve,
)
from analysis.protocol import (
    FULL_TRAIN,
    OTHER_LABEL,
    Need,
    Protocol,
    Selection,
    attach,
    dataset_need,
    finish_table,
    require_runs,
    select,
)
from analysis.published import published
from raygen.data.registry import BINARIZED_MNIST_BINARIZATION

ALGORITHMS = ("teacher", "professor", "scheduled")
LABELS = {"professor": "Professor Forcing", "teacher": "Teacher Forcing", "scheduled": "Scheduled Sampling"}
MODEL_CHOICE = ("valid/nll", "valid/bpc")  # lowest validation NLL / BPC picks the model
NEEDS = "completed 'professor' and 'teacher' runs"


# PF's protocols: Table 2.1 on the standard binarized MNIST (Murray & Salakhutdinov 2009 / Larochelle &
# Murray 2011's fixed draw) generated pixel by pixel, NLL in nats per image; PTB characters with the official
# split in sequences of 500; Fig 2.3 on monk-chant audio, which raygen does not have (so no run matches).
BINARIZED_MNIST = BINARIZED_MNIST_BINARIZATION  # what a seqbinarized_mnist run's data.binarization says
PROTOCOLS = {
    "pf_table_2_1": Protocol("pf_table_2_1", "the standard binarized MNIST, pixel by pixel", (
        dataset_need(("seqbinarized_mnist",), "sequential binarized MNIST"),
        Need("config.data.binarization", (BINARIZED_MNIST,), "the standard fixed binarization "
             "(Murray and Salakhutdinov 2009)", default=None),
        Need("config.data.binarize", ("auto", "none"), "no further binarization", default="auto"),
        # "Test set negative log-likelihood": the whole 10 000-image test set (eval.test_examples=null), as every
        # row of the table; raygen's default of 1000 test examples is Infusion TAB 3.1's protocol, not this one.
        Need("config.eval.test_examples", (None, 10_000), "all 10 000 test images", default=1000),
        FULL_TRAIN)),
    "pf_ptb_bpc": Protocol("pf_ptb_bpc", "Penn Treebank characters", (
        dataset_need(("text:ptb",), "Penn Treebank characters"),
        Need("config.data.ptb_split", ("official",), "the official train/valid/test split", default="official"),
        Need("config.data.seq_len", (500,), "sequences of 500 characters", default=500),
        FULL_TRAIN)),
    "pf_tsne_distances": Protocol("pf_tsne_distances", "monk-chant audio (vocal synthesis)", (
        dataset_need((), "monk-chant audio (vocal synthesis), which raygen does not provide"),)),
}


def _select(runs: pd.DataFrame, key: str, include_smoke: bool) -> Selection:
    sel = select(runs, ALGORITHMS, PROTOCOLS[key], item=key, include_smoke=include_smoke)
    require_runs(sel, "professor/teacher/scheduled", f"{NEEDS} (`raygen train professor ...`)")
    return sel


def _per_algorithm(runs: pd.DataFrame, metric: str) -> list[tuple[str, pd.DataFrame]]:
    out = []
    for algo in ALGORITHMS:
        group = runs[(runs["algorithm"] == algo) & final(runs, metric).notna()]
        if not group.empty:
            out.append((algo, best_model(group, (*MODEL_CHOICE, metric), goal="min")))
    return out



def _no_match(key: str) -> str:
    return f"No run matches the protocol ({PROTOCOLS[key].describe()})."


def _rows_2_1(runs: pd.DataFrame) -> list[OurRow]:
    # Nats per image only: every column of Table 2.1 (and of its other-data table) is headed "nats per image",
    # so a run that logged NLL per symbol alone (text) is left out, with this reason in the index.
    metric = "test/nll_image"
    require(has_metric(runs, metric), "logs NLL per symbol, not per image (Table 2.1 is in nats per image)",
            f"{NEEDS} on seqbinarized_mnist with the final evaluation on (test/nll_image)")
    groups = _per_algorithm(runs, metric)
    return [OurRow(f"{LABELS[a]} (ours)", {"nll": metric_cell(g, metric)}, tags=(a,)) for a, g in groups]


def table_2_1(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """Table 2.1: test NLL on the standard binarized MNIST generated pixel by pixel, in nats per image
    (`test/nll_image`), one row per algorithm of ours. Only runs on `seqbinarized_mnist` (whose stored
    binarization is the standard fixed one) fill it: a thresholded or re-drawn MNIST gives other numbers."""
    sel = _select(runs, "pf_table_2_1", include_smoke)
    logged = final(sel.matching, "test/nll_image").notna()
    sel.leave(sel.matching[~logged], "did not log test/nll_image (nats per image)")
    ours: list[OurRow] = []
    caption = _no_match("pf_table_2_1")
    if logged.any():
        sub = sel.matching[logged]
        groups = _per_algorithm(sub, "test/nll_image")
        ours = [OurRow(f"{LABELS[a]} (ours)", {"nll": metric_cell(g, "test/nll_image")}, tags=(a,))
                for a, g in groups]
        for _, g in groups:
            sel.use(g)
        caption = (f"Ours on the standard binarized MNIST: test/nll_image, nats per image; per algorithm, "
                   f"{selection_note(sub, MODEL_CHOICE)} (lowest).")
    return finish_table(compare_table("pf_table_2_1", ours, caption=caption), sel, _rows_2_1, "pf_table_2_1",
                        f"{NEEDS} on seqbinarized_mnist (the standard binarized MNIST) logging test/nll_image")


def _rows_ptb(runs: pd.DataFrame) -> list[OurRow]:
    groups = _per_algorithm(runs, "valid/bpc")
    require(bool(groups), "no professor/teacher run logged valid/bpc", f"{NEEDS} logging valid/bpc")
    return [OurRow(f"{LABELS[a]} (ours)", {"valid_bpc": metric_cell(g, "valid/bpc"),
                                           "test_bpc": metric_cell(g, "test/bpc")}, tags=(a,)) for a, g in groups]


def ptb_bpc(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """PTB character-level validation BPC: teacher forcing 1.50 vs professor forcing 1.48 (plus our test BPC)."""
    sel = _select(runs, "pf_ptb_bpc", include_smoke)
    logged = final(sel.matching, "valid/bpc").notna()
    sel.leave(sel.matching[~logged], "did not log valid/bpc")
    ours: list[OurRow] = []
    caption = _no_match("pf_ptb_bpc")
    if logged.any():
        ours = _rows_ptb(sel.matching[logged])
        for _, g in _per_algorithm(sel.matching[logged], "valid/bpc"):
            sel.use(g)
        caption = "Ours on Penn Treebank characters; per algorithm, the model with the lowest mean final valid/bpc."
    frame = compare_table("pf_ptb_bpc", ours, caption=caption, quantities=["valid_bpc", "test_bpc"])
    return finish_table(frame, sel, _rows_ptb, "pf_ptb_bpc", f"{NEEDS} on text:ptb logging valid/bpc",
                        ["valid_bpc", "test_bpc"])


DISTANCES = ("centroid_distance", "nearest_free_distance")


def _distance_metric(runs: pd.DataFrame, q: str) -> str:
    """The scale-free distance (divided by the teacher cloud's spread) when logged, else the raw one."""
    return f"test/{q}_rel" if has_metric(runs, f"test/{q}_rel") else f"test/{q}"


def _rows_distances(runs: pd.DataFrame) -> list[OurRow]:
    metrics = [_distance_metric(runs, q) for q in DISTANCES]
    require(any(has_metric(runs, m) for m in metrics), "no professor/teacher run logged hidden-state distances",
            f"{NEEDS} whose final evaluation measures hidden-state distances")
    groups = _per_algorithm(runs, metrics[0]) or _per_algorithm(runs, metrics[1])
    rows = []
    for a, g in groups:
        extra = {"scale": "relative to the teacher-forced spread" if metrics[0].endswith("_rel") else "raw"}
        for q in DISTANCES:
            base = {"centroid_distance": "test/centroid_baseline_rel",
                    "nearest_free_distance": "test/nearest_baseline_rel"}[q]
            extra[f"{q} teacher-vs-teacher baseline"] = float(final(g, base).mean()) if has_metric(g, base) else math.nan
        rows.append(OurRow(f"{LABELS[a]} (ours)", {q: metric_cell(g, m) for q, m in zip(DISTANCES, metrics)},
                           tags=(a,), extra=extra))
    return rows


def distances_table(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """Fig 2.3's numbers: mean T-SNE centroid distance and mean teacher-forced→free-running distance.

    The paper measures on monk-chant audio in T-SNE space; raygen has neither, so our numbers are only ever in
    the "ours, other data" table (scale-free when the run logged the `_rel` distances, with the
    teacher-vs-teacher baseline). Compare the teacher → professor reduction, not the absolute values."""
    sel = _select(runs, "pf_tsne_distances", include_smoke)
    logged = pd.concat([sel.matching, sel.other])
    require(any(has_metric(logged, f"test/{q}") or has_metric(logged, f"test/{q}_rel") for q in DISTANCES),
            "no professor/teacher run logged test/centroid_distance or test/nearest_free_distance",
            f"{NEEDS} whose final evaluation measures hidden-state distances")
    caption = ("No run of ours can fill these cells: the paper's distances are between T-SNE embeddings of GRU "
               "states on monk-chant audio, which raygen does not provide. Our distances are in the "
               "'other data' table.")
    frame = compare_table("pf_tsne_distances", [], caption=caption)
    return finish_table(frame, sel, _rows_distances, "pf_tsne_distances",
                        f"{NEEDS} whose final evaluation measures hidden-state distances")


def _family(runs: pd.DataFrame, dataset: str | None, hint: str, metric: str, include_smoke: bool
            ) -> tuple[pd.DataFrame, str]:
    """Completed (non-smoke) runs of the family on one dataset: `dataset`, else the one `hint` names, else the
    one with most runs logging `metric`. For figures of our own curves, each titled with its dataset."""
    sub = runs_of(runs, ALGORITHMS)
    if not include_smoke:
        sub = sub[~smoke_mask(sub)]
    require(not sub.empty, "no completed professor/teacher/scheduled runs", f"{NEEDS} (`raygen train professor ...`)")
    dataset = dataset or pick_dataset(sub, hint, metric)
    return sub[sub["dataset"] == dataset], str(dataset)


def training_curves(runs: pd.DataFrame, metrics: pd.DataFrame, *, dataset: str | None = None,
                    include_smoke: bool = False) -> Figure:
    """Figs 2.2/2.6: training NLL (left) and validation BPC or NLL (right) per algorithm, over updates."""
    sub, dataset = _family(runs, dataset, "ptb", "valid/bpc", include_smoke)
    right = "valid/bpc" if not select_curve(metrics, "valid/bpc", sub["run_id"]).empty else "valid/nll"
    # Prefer, per algorithm, the runs that logged both curves (a sweep trial may log only the objective).
    both = set(select_curve(metrics, "train/nll", sub["run_id"])["run_id"]) & set(
        select_curve(metrics, right, sub["run_id"])["run_id"])
    fig, axes = new_figure(1, 2, width=3.4, height=2.6)
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
            plot_mean_curve(ax, curve, label=f"{LABELS[algo]} ({'1 run' if len(group) == 1 else f'{len(group)} runs'})")
            drawn += not curve.empty
    require(drawn > 0, f"no professor/teacher run on {dataset} logged train/nll or {right} curves",
            f"{NEEDS} logging train/nll and valid/bpc during training")
    axes[0, 0].set(title="training NLL", xlabel="update", ylabel="NLL (nats per symbol)")
    text = str(dataset).startswith("text:") or "ptb" in str(dataset)
    unit = ("bits per character" if text else "bits per symbol") if right.endswith("bpc") else "nats per symbol"
    axes[0, 1].set(title=f"validation {right.split('/')[1].upper()}", xlabel="update", ylabel=f"{right.split('/')[1].upper()} ({unit})")
    for ax in axes[0]:
        if ax.lines:
            ax.legend()
    fig.suptitle(f"Figs 2.2/2.6: teacher vs professor forcing ({dataset})")
    return fig


def distances_figure(runs: pd.DataFrame, *, include_smoke: bool = False) -> Figure:
    """Fig 2.3's distances: the professor/teacher ratio of each distance, ours (bars, per dataset) beside the
    paper's (reference markers), and ours against the teacher-vs-teacher baseline when logged. The paper
    measures in T-SNE space on vocal data, so only the ratio (the relative reduction) is comparable."""
    table = distances_table(runs, include_smoke=include_smoke)
    sel = table.attrs["selection"]
    other = sel.other_table
    require(other is not None and not other.empty, "no professor/teacher run logged hidden-state distances",
            f"{NEEDS} whose final evaluation measures hidden-state distances")
    pub = {r["ours"]: r for r in published("pf_tsne_distances")["rows"]}
    paper_ratio = [pub["professor"][q] / pub["teacher"][q] for q in DISTANCES]
    groups = list(other.groupby(OTHER_LABEL, sort=True))
    fig, axes = new_figure(1, 3, width=2.4, height=2.6)
    ax = axes[0, 0]
    x = np.arange(len(DISTANCES))
    width = 0.8 / max(1, len(groups))
    for i, (data, g) in enumerate(groups):
        rows = g.set_index("model")
        if not {"Professor Forcing (ours)", "Teacher Forcing (ours)"} <= set(rows.index):
            continue
        p, t = rows.loc["Professor Forcing (ours)"], rows.loc["Teacher Forcing (ours)"]
        ratio = [p[f"{q} ours"] / t[f"{q} ours"] for q in DISTANCES]

        def rel(r: pd.Series, q: str) -> float:  # relative std over seeds (0 for one run: no spread to show)
            return float(r[f"{q} ours ±"] / r[f"{q} ours"]) if r[f"{q} n"] > 1 and np.isfinite(r[f"{q} ours ±"]) else 0.0

        # The ratio's spread from its two means' std over seeds, to first order (independent runs).
        err = np.array([ratio[j] * np.hypot(rel(p, q), rel(t, q)) for j, q in enumerate(DISTANCES)])
        ax.bar(x - 0.4 + width * (i + 0.5), ratio, width, yerr=err if err.any() else None, capsize=2, color=f"C{i}",
               label=f"ours ({str(data).split(':')[0]})")
    ax.scatter(x, paper_ratio, marker="D", color="k", zorder=3, label="published (vocal, T-SNE)")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, ["centroid", "nearest free"])
    ax.set_ylabel("professor / teacher distance")
    ax.set_title("ratio (< 1: free run closer)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15))
    # Middle and right: our distances per algorithm (first dataset), with the teacher-vs-teacher baseline:
    # what two samples of the same teacher-forced distribution give.
    data, g = groups[0]
    rows = g.reset_index(drop=True)
    relative = str(rows["scale"].iloc[0]).startswith("relative") if "scale" in rows.columns else False
    names = [str(m).replace(" (ours)", "").replace(" Forcing", "") for m in rows["model"]]
    for ax, q, title in zip(axes[0, 1:], DISTANCES, ("centroid distance", "teacher → free-running")):
        err = rows[f"{q} ours ±"].where(rows[f"{q} n"] > 1).fillna(0).to_numpy()
        ax.bar(np.arange(len(rows)), rows[f"{q} ours"], 0.6, yerr=err if err.any() else None, capsize=2,
               color=[f"C{i}" for i in range(len(rows))])
        base = pd.to_numeric(rows.get(f"{q} teacher-vs-teacher baseline", pd.Series(dtype=float)), errors="coerce")
        if base.notna().any():
            ax.axhline(float(base.mean()), color="k", ls=":", lw=1, label="teacher vs teacher")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15))
        ax.set_xticks(np.arange(len(rows)), names)
        ax.set_ylabel("distance / teacher spread" if relative else "distance (hidden-state units)")
        ax.set_title(f"{title}, ours ({str(data).split(':')[0]})")
    fig.suptitle("Fig 2.3: hidden-state distances, teacher-forced vs free-running")
    return attach(fig, sel)


def tsne_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, dataset: str | None = None,
                include_smoke: bool = False) -> Figure:
    """Fig 2.3: T-SNE of teacher-forced vs free-running hidden states (`tsne.png`), teacher beside professor."""
    needs = f"{NEEDS} whose artifacts include tsne.png (written at the end of training)"
    sub, dataset = _family(runs, dataset, "vocal", "test/centroid_distance", include_smoke)
    panels, labels = [], []
    for algo in ALGORITHMS:
        group = sub[sub["algorithm"] == algo]
        if group.empty:
            continue
        chosen = best_model(group, (*MODEL_CHOICE, "test/nll"), goal="min")
        rows = latest_artifacts(artifacts, chosen["run_id"], ["tsne.png"])
        if not rows.empty:
            panels.append(rows.iloc[:1])
            labels.append(f"{LABELS[algo]}")
    require(bool(panels), f"no professor/teacher run on {dataset} saved tsne.png", needs)
    return image_panel(root, pd.concat(panels), title=f"Fig 2.3 kind: hidden-state T-SNE, ours on {dataset}",
                       labels=labels, ncols_max=len(panels), needs=needs)


def discriminator_figure(runs: pd.DataFrame, metrics: pd.DataFrame, *, dataset: str | None = None,
                         include_smoke: bool = False) -> Figure:
    """Professor forcing's discriminator: validation accuracy and how often each gate is open (§2.3)."""
    sub = runs_of(runs, "professor")
    if not include_smoke:
        sub = sub[~smoke_mask(sub)]
    require(not sub.empty, "no completed professor runs", "completed 'professor' runs")
    keys = ("valid/disc_accuracy", "train/gate_generator_open", "train/gate_discriminator_open")
    names = {"valid/disc_accuracy": "discriminator accuracy (validation)",
             "train/gate_generator_open": "generator gate open", "train/gate_discriminator_open": "discriminator gate open"}
    logged = set(metrics.loc[(metrics["split"] + "/" + metrics["metric"]).isin(keys), "run_id"]) if len(metrics) else set()
    sub = sub[sub["run_id"].isin(logged)]
    require(not sub.empty, f"no professor run logged {', '.join(keys)}",
            "completed 'professor' runs logging the discriminator accuracy and gate metrics")
    dataset = dataset or pick_dataset(sub, "ptb", "valid/bpc")
    sub = best_model(sub[sub["dataset"] == dataset], MODEL_CHOICE, goal="min")
    fig, axes = new_figure(1, 1, width=4.6, height=2.8)
    drawn = 0
    for key in keys:
        curve = mean_curve(metrics, key, sub["run_id"])
        plot_mean_curve(axes[0, 0], curve, label=names[key])
        drawn += not curve.empty
    require(drawn > 0, f"no professor run on {dataset} logged {', '.join(keys)}",
            "completed 'professor' runs logging the discriminator accuracy and gate metrics")
    axes[0, 0].axhline(0.75, color="grey", lw=0.8, ls="--", label="75 % gate threshold")
    axes[0, 0].axhline(0.99, color="grey", lw=0.8, ls=":", label="99 % gate threshold")
    axes[0, 0].set(xlabel="update", ylabel="fraction", ylim=(-0.02, 1.02))
    axes[0, 0].legend(loc="lower right")
    fig.suptitle(f"Professor forcing: discriminator and gates ({dataset})")
    return fig
