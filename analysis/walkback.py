"""Variational Walkback (Goyal 2018 M.Sc. thesis ch.3; Goyal et al. NIPS 2017): tables and figures.

Plain functions over the store's frames (see analysis/common.py for the table layout); each raises
`MissingData` naming the runs it needs when the store lacks them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.common import (
    OurRow,
    best_model,
    compare_table,
    config,
    final,
    has_metric,
    metric_cell,
    pick_dataset,
    require,
    runs_of,
    selection_note,
    truthy,
)
from analysis.figures import best_run_panels

ALGORITHM = "walkback"
WALKBACK_STEPS = "algo.walkback_steps"  # K, the number of walkback (heating) steps
OPERATOR = "algo.operator"  # "gaussian" | "bernoulli" transition operator (S000 §3.3)
ISOTROPIC = "algo.isotropic"  # isotropic Gaussian output (Table 3.1b)
MODEL_CHOICE = ("valid/lower_bound", "test/lower_bound")  # early stopping/model choice on validation (§3.5)
BITS_PER_DIM = ("test/bits_per_dim", "test/bpd")
NEEDS = f"completed '{ALGORITHM}' runs"


def _runs(runs: pd.DataFrame, metric: str, hint: str = "mnist", dataset: str | None = None) -> tuple[pd.DataFrame, str]:
    sub = runs_of(runs, ALGORITHM)
    require(not sub.empty, f"no completed {ALGORITHM} runs", f"{NEEDS} (`raygen train walkback ...`)")
    dataset = dataset or pick_dataset(sub, hint, metric)
    return sub[sub["dataset"] == dataset], str(dataset)


def _steps(runs: pd.DataFrame) -> pd.Series:
    """K of each run's evaluation: the logged `walkback_steps` (any k_mode), else the config's fixed K."""
    logged = final(runs, "test/walkback_steps")
    return logged.fillna(pd.to_numeric(config(runs, WALKBACK_STEPS), errors="coerce"))


def _gaussian(runs: pd.DataFrame) -> pd.DataFrame:
    op = config(runs, OPERATOR).astype(object)
    return runs[op.isna() | (op == "gaussian")]


def _by_steps(runs: pd.DataFrame, metric: str) -> list[tuple[int, pd.DataFrame]]:
    """(K, best model among the runs with K walkback steps) for each K whose runs logged `metric`."""
    runs = runs[final(runs, metric).notna()]
    steps = _steps(runs)
    return [(int(k), best_model(g, MODEL_CHOICE)) for k, g in runs.groupby(steps) if pd.notna(k)]


def table_3_1a(runs: pd.DataFrame, *, dataset: str | None = None) -> pd.DataFrame:
    """Table 3.1a: train/test lower bound of diagonal-Gaussian VW with 5/10/15 steps, and the IS estimate."""
    sub, dataset = _runs(runs, "test/lower_bound", dataset=dataset)
    needs = (f"{NEEDS} with the Gaussian operator (diagonal) for algo.walkback_steps in 5, 10, 15, logging "
             "train/ and test/ lower_bound and importance (eval.splits=[test, train])")
    sub = _gaussian(sub)
    sub = sub[~truthy(config(sub, ISOTROPIC))]
    require(bool(_steps(sub).notna().any()) and has_metric(sub, "test/lower_bound"),
            f"no diagonal-Gaussian {ALGORITHM} run on {dataset} with walkback_steps logged test/lower_bound", needs)
    ours = []
    for k, group in _by_steps(sub, "test/lower_bound"):
        ours.append(OurRow(f"VW ({k} steps, LB, ours)",
                           {"train_ll": metric_cell(group, "train/lower_bound"),
                            "test_ll": metric_cell(group, "test/lower_bound")}, tags=(f"lb_{k}",)))
    for k, group in _by_steps(sub, "test/importance"):
        ours.append(OurRow(f"VW (IS estimate, {k} steps, ours)",
                           {"train_ll": metric_cell(group, "train/importance"),
                            "test_ll": metric_cell(group, "test/importance")}, tags=(f"is_{k}",)))
    caption = (f"Ours: {ALGORITHM} on {dataset}, Gaussian operator with diagonal output; per number of steps, "
               f"{selection_note(sub, MODEL_CHOICE)}. The paper's IS row is the 15-step model.")
    return compare_table("vw_table_3_1a", ours, caption=caption)


def table_3_1b(runs: pd.DataFrame, *, dataset: str | None = None) -> pd.DataFrame:
    """Table 3.1b: IS estimate of VW with an isotropic Gaussian output, beside the AIS baselines."""
    sub, dataset = _runs(runs, "test/importance", dataset=dataset)
    needs = f"{NEEDS} with algo.isotropic=true (or logging test/importance_isotropic) and final test/importance"
    iso = sub[truthy(config(sub, ISOTROPIC))]
    rows = []
    if has_metric(iso, "test/importance"):
        chosen = best_model(iso[final(iso, "test/importance").notna()], MODEL_CHOICE)
        cells = {"train_ll": metric_cell(chosen, "train/importance"), "test_ll": metric_cell(chosen, "test/importance")}
        rows.append(OurRow("VW (IS estimate, isotropic output, ours)", cells, tags=("is_isotropic",)))
    elif has_metric(sub, "test/importance_isotropic"):
        chosen = best_model(sub[final(sub, "test/importance_isotropic").notna()], MODEL_CHOICE)
        cells = {"train_ll": metric_cell(chosen, "train/importance_isotropic"),
                 "test_ll": metric_cell(chosen, "test/importance_isotropic")}
        rows.append(OurRow("VW (IS estimate, isotropic output, ours)", cells, tags=("is_isotropic",)))
    require(bool(rows), f"no isotropic-output {ALGORITHM} run on {dataset} logged an IS estimate", needs)
    k = _steps(chosen).dropna()
    caption = (f"Ours: {ALGORITHM} on {dataset}, isotropic Gaussian output"
               + (f", {int(k.iloc[0])} walkback steps" if len(k) else "") + f"; {len(chosen)} run(s).")
    return compare_table("vw_table_3_1b", rows, caption=caption)


def _bits_metric(runs: pd.DataFrame) -> str | None:
    return next((m for m in BITS_PER_DIM if has_metric(runs, m)), None)


def table_3_2(runs: pd.DataFrame, *, dataset: str | None = None, published_key: str = "vw_table_3_2") -> pd.DataFrame:
    """Table 3.2 (S000) / Table 1 (S001): CIFAR-10 test bits/dim (≤) per number of walkback steps."""
    sub = runs_of(runs, ALGORITHM)
    metric = _bits_metric(sub)
    needs = f"{NEEDS} on CIFAR-10 whose evaluation logs {' or '.join(BITS_PER_DIM)}"
    require(metric is not None, f"no {ALGORITHM} run logged bits/dim", needs)
    sub, dataset = _runs(runs, metric, hint="cifar", dataset=dataset)
    groups = _by_steps(sub, metric)
    if not groups:  # no walkback_steps column: one row for all runs
        groups = [(0, best_model(sub[final(sub, metric).notna()], MODEL_CHOICE))]
    cells = [(k, metric_cell(g, metric)) for k, g in groups]
    best_k = min(cells, key=lambda kc: kc[1].mean)[0]
    ours = [OurRow(f"VW ({k} steps, ours)" if k else "VW (ours)", {"bits_per_dim": c},
                   tags=(f"vw_{k}",) + (("vw",) if k == best_k else ())) for k, c in cells]
    return compare_table(published_key, ours, caption=f"Ours: {ALGORITHM} on {dataset} ({metric}).")


def s001_table_1(runs: pd.DataFrame, *, dataset: str | None = None) -> pd.DataFrame:
    """Table 1 of the NIPS paper (S001): like Table 3.2 with the 20- and 30-step VW rows."""
    return table_3_2(runs, dataset=dataset, published_key="vw_s001_table_1")


def inception_table(runs: pd.DataFrame, *, dataset: str | None = None) -> pd.DataFrame:
    """§3.16 Inception scores on CIFAR-10 (needs runs that logged test/inception_score)."""
    sub = runs_of(runs, ALGORITHM)
    require(has_metric(sub, "test/inception_score"), f"no {ALGORITHM} run logged test/inception_score",
            f"{NEEDS} on CIFAR-10 whose evaluation logs test/inception_score (not computed by raygen yet)")
    sub, dataset = _runs(runs, "test/inception_score", hint="cifar", dataset=dataset)
    ours = [OurRow(f"VW({k} steps, ours)",
                   {"inception_score": metric_cell(g, "test/inception_score", std_metric="test/inception_score_se",
                                                   inner_kind="se")}, tags=(f"vw_{k}",))
            for k, g in _by_steps(sub, "test/inception_score")]
    return compare_table("vw_inception", ours, caption=f"Ours: {ALGORITHM} on {dataset}.")


def reversibility_table(runs: pd.DataFrame, *, dataset: str | None = None) -> pd.DataFrame:
    """§3.14: irreversibility of p_T relative to its entropy rate, in percent (ours = 100 × ratio).

    raygen.metrics.reversibility_ratio returns the ratio as a fraction (3.6 % = 0.036), so the table
    multiplies the stored value by 100 to print it like the paper.
    """
    sub, dataset = _runs(runs, "test/reversibility_ratio", dataset=dataset)
    sub = sub[final(sub, "test/reversibility_ratio").notna()]
    require(not sub.empty, f"no {ALGORITHM} run on {dataset} logged test/reversibility_ratio",
            f"{NEEDS} whose final evaluation measures reversibility (test/reversibility_ratio)")
    chosen = best_model(sub, MODEL_CHOICE)
    c = metric_cell(chosen.assign(**{
        "final.test/reversibility_ratio": 100 * final(chosen, "test/reversibility_ratio"),
        "final.test/reversibility_ratio_std": 100 * final(chosen, "test/reversibility_ratio_std"),
    }), "test/reversibility_ratio")
    caption = (f"Ours: {ALGORITHM} on {dataset} ({selection_note(sub, MODEL_CHOICE)}); "
               "ours = 100 × test/reversibility_ratio.")
    return compare_table("vw_reversibility", [OurRow("VW (ours)", {"reversibility_percent": c}, tags=("vw",))],
                         caption=caption)


# ---------------------------------------------------------------------------------------------- figures


def _panel(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, name: str, title: str, needs: str,
           datasets: Callable[[str], bool] = lambda d: True) -> Figure:
    return best_run_panels(runs, artifacts, root, algorithm=ALGORITHM, name=name, title=title, needs=needs,
                           model_choice=MODEL_CHOICE, datasets=datasets)


def toy_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path) -> Figure:
    """Figs 3.8/3.9: samples on the 2-D toy manifolds (swiss roll, circle), one panel per toy dataset."""
    return _panel(runs, artifacts, root, "samples.png", "Figs 3.8/3.9: VW samples on 2-D toy data",
                  f"{NEEDS} on toy2d:* datasets (e.g. toy2d:swissroll, toy2d:circle) that saved samples.png",
                  datasets=lambda d: str(d).startswith("toy2d:"))


def chains_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path) -> Figure:
    """Fig 3.10: cooling chains from noise (`chains.png`), one per dataset."""
    return _panel(runs, artifacts, root, "chains.png", "Fig 3.10: VW sampling chains",
                  f"{NEEDS} on image datasets that saved chains.png",
                  datasets=lambda d: not str(d).startswith("toy2d:"))


def long_chains_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path) -> Figure:
    """Figs 3.11-3.16: long chains at T = 1 (`long_chain.png`), one per dataset: do samples stay on the data?"""
    return _panel(runs, artifacts, root, "long_chain.png", "Figs 3.11-3.16: VW long chains at T = 1",
                  f"{NEEDS} on image datasets that saved long_chain.png")


def inpainting_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path) -> Figure:
    """Fig 3.3: inpainting with the bottom half clamped (`inpainting.png`)."""
    return _panel(runs, artifacts, root, "inpainting.png", "Fig 3.3: VW inpainting",
                  f"{NEEDS} on an image dataset whose artifacts include inpainting.png")


def samples_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path) -> Figure:
    """Figs 3.4-3.7: sample grids of the best model per image dataset (`samples.png`)."""
    return _panel(runs, artifacts, root, "samples.png", "Figs 3.4-3.7: VW samples",
                  f"{NEEDS} on image datasets that saved samples.png",
                  datasets=lambda d: not str(d).startswith("toy2d:"))
