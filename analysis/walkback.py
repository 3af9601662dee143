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
    MissingData,
    OurRow,
    best_model,
    compare_table,
    config,
    final,
    has_metric,
    k_text,
    metric_cell,
    require,
    selection_note,
    train_metric,
)
from analysis.figures import best_run_panels
from analysis.protocol import (
    DEQUANTIZED,
    FULL_TRAIN,
    INCEPTION_SAMPLES,
    OFFICIAL_MNIST,
    REAL_VALUED,
    Need,
    Protocol,
    Selection,
    dataset_need,
    finish_table,
    inception_cell,
    require_runs,
    select,
)

ALGORITHM = "walkback"
WALKBACK_STEPS = "algo.walkback_steps"  # K for k_mode=fixed
OPERATOR = "algo.operator"  # transition operator (S000 §3.3)
# Isotropic output (Table 3.1b): the operator trained with one variance shared by all pixels
# (algo.covariance=isotropic; `algo.isotropic` in stores written before that key).
ISOTROPIC_KEYS = ("config.algo.covariance", "config.algo.isotropic")
MODEL_CHOICE = ("valid/lower_bound", "test/lower_bound")  # early stopping/model choice on validation (§3.5)
BITS_PER_DIM = ("test/bits_per_dim", "test/bpd")
# The number of heating steps K each evaluation used: logged by the final evaluation (any k_mode).
K_METRICS = ("test/heating_steps", "test/walkback_steps")
NEEDS = f"completed '{ALGORITHM}' runs"

# VW's protocols (S000 §3.5/§3.12): MNIST used as is except for uniform noise (Theis et al.), real-valued
# views; the Gaussian operator (diagonal) for Table 3.1a, an isotropic-output operator for 3.1b; CIFAR-10
# with uniform noise for bits/dim.
_NOISE = Need("config.algo.dequantize_train", (True,), "uniform noise added to the training images (Theis et al.)",
              default=True)
_MNIST = (dataset_need(("mnist",), "MNIST"), REAL_VALUED, OFFICIAL_MNIST, FULL_TRAIN, DEQUANTIZED, _NOISE)
_GAUSSIAN = Need("config.algo.operator", ("gaussian",), "Gaussian transition operator", default="gaussian")
_CIFAR = (dataset_need(("cifar10",), "CIFAR-10"), REAL_VALUED, FULL_TRAIN, DEQUANTIZED, _NOISE)
PROTOCOLS = {
    "vw_table_3_1a": Protocol("vw_table_3_1a", "MNIST, real-valued, uniform noise", (*_MNIST, _GAUSSIAN)),
    "vw_table_3_1b": Protocol("vw_table_3_1b", "MNIST, real-valued, uniform noise", (*_MNIST, _GAUSSIAN)),
    "vw_table_3_2": Protocol("vw_table_3_2", "CIFAR-10, uniform noise (dequantised)", _CIFAR),
    "vw_s001_table_1": Protocol("vw_s001_table_1", "CIFAR-10, uniform noise (dequantised)", _CIFAR),
    "vw_inception": Protocol("vw_inception", "CIFAR-10",
                             (dataset_need(("cifar10",), "CIFAR-10"), FULL_TRAIN, INCEPTION_SAMPLES)),
    "vw_reversibility": Protocol("vw_reversibility", "MNIST, real-valued, uniform noise", (*_MNIST, _GAUSSIAN)),
}


def _select(runs: pd.DataFrame, key: str, include_smoke: bool) -> Selection:
    sel = select(runs, ALGORITHM, PROTOCOLS[key], item=key, include_smoke=include_smoke)
    require_runs(sel, ALGORITHM, f"{NEEDS} (`raygen train walkback ...`)")
    return sel


def _steps(runs: pd.DataFrame) -> pd.Series:
    """K, the number of heating steps of each run's evaluation: the logged count (any k_mode), else the
    config's fixed K (k_mode=fixed only: with k_mode=random the config's K is only a cap)."""
    logged = pd.Series(float("nan"), index=runs.index, dtype=float)
    for key in K_METRICS:
        logged = logged.fillna(final(runs, key))
    fixed = config(runs, "algo.k_mode").astype(object).map(lambda m: pd.isna(m) or m == "fixed")
    from_config = pd.to_numeric(config(runs, WALKBACK_STEPS), errors="coerce").where(fixed)
    return logged.fillna(from_config)


def isotropic(runs: pd.DataFrame) -> pd.Series:
    """True for runs whose operator has an isotropic output (one variance for all pixels)."""
    out = pd.Series(False, index=runs.index, dtype=bool)
    for column in ISOTROPIC_KEYS:
        if column in runs.columns:
            values = runs[column].astype(object)
            out |= values.map(lambda v: v is True or (isinstance(v, str) and v.lower() in ("isotropic", "true"))
                              or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 1)).astype(bool)
    return out


def _by_steps(runs: pd.DataFrame, metric: str) -> list[tuple[int, pd.DataFrame]]:
    """(K, best model among the runs with K heating steps) for each K whose runs logged `metric`."""
    runs = runs[final(runs, metric).notna()]
    steps = _steps(runs)
    return [(int(k), best_model(g, MODEL_CHOICE)) for k, g in runs.groupby(steps) if pd.notna(k)]



def _no_match(key: str) -> str:
    return f"No run matches the protocol ({PROTOCOLS[key].describe()})."


def _rows_3_1a(sub: pd.DataFrame, sel: Selection | None = None) -> list[OurRow]:
    sub = sub[~isotropic(sub)]
    require(bool(_steps(sub).notna().any()) and has_metric(sub, "test/lower_bound"),
            "no diagonal-Gaussian run with a known number of heating steps logged test/lower_bound",
            f"{NEEDS} with the Gaussian operator (diagonal) logging test/ lower_bound and importance")
    ours = []
    for k, group in _by_steps(sub, "test/lower_bound"):
        ours.append(OurRow(f"VW ({k} steps, LB, ours)",
                           {"train_ll": metric_cell(group, train_metric(group, "lower_bound")),
                            "test_ll": metric_cell(group, "test/lower_bound")}, tags=(f"lb_{k}",),
                           extra={"IS samples k": ""}))
        if sel is not None:
            sel.use(group)
    for k, group in _by_steps(sub, "test/importance"):
        ours.append(OurRow(f"VW (IS estimate, {k} steps, ours)",
                           {"train_ll": metric_cell(group, train_metric(group, "importance")),
                            "test_ll": metric_cell(group, "test/importance")}, tags=(f"is_{k}",),
                           extra={"IS samples k": k_text(group)}))
        if sel is not None:
            sel.use(group)
    return ours


def table_3_1a(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """Table 3.1a: train/test lower bound of diagonal-Gaussian VW with K = 5/10/15 heating steps, and the IS
    estimate (the paper's is the 15-step model). Rows are labelled by K, the number of heating steps of the
    evaluation (logged by the run), not by a chain length."""
    sel = _select(runs, "vw_table_3_1a", include_smoke)
    sel.leave(sel.matching[isotropic(sel.matching)], "isotropic output (Table 3.1b, not 3.1a)")
    ours: list[OurRow] = []
    caption = _no_match("vw_table_3_1a")
    if not sel.matching.empty:
        try:
            ours = _rows_3_1a(sel.matching, sel)
        except MissingData as missing:
            sel.leave(sel.matching, missing.reason)
        else:
            caption = (f"Ours: {ALGORITHM} on MNIST, Gaussian operator with diagonal output; per number of heating "
                       f"steps K, {selection_note(sel.matching, MODEL_CHOICE)}; IS rows name their importance "
                       "samples k. The paper's IS row is the 15-step model.")
    frame = compare_table("vw_table_3_1a", ours, caption=caption, extra_labels=("IS samples k",))
    frame["IS samples k"] = frame["IS samples k"].astype(object).fillna("")
    return finish_table(frame, sel, _rows_3_1a, "vw_table_3_1a", f"{NEEDS} on MNIST with the Gaussian operator (diagonal) logging test/ lower_bound and importance")


def _rows_3_1b(sub: pd.DataFrame) -> list[OurRow]:
    iso = sub[isotropic(sub) & final(sub, "test/importance").notna()]
    require(not iso.empty, "no isotropic-output run logged test/importance",
            f"{NEEDS} trained with an isotropic output (one variance for all pixels) and final test/importance")
    chosen = best_model(iso, MODEL_CHOICE)
    k = _steps(chosen).dropna()
    label = "VW (IS estimate, isotropic output" + (f", {int(k.iloc[0])} steps" if len(k) else "") + ", ours)"
    return [OurRow(label, {"train_ll": metric_cell(chosen, train_metric(chosen, "importance")),
                           "test_ll": metric_cell(chosen, "test/importance")},
                   tags=("is_isotropic",), extra={"IS samples k": k_text(chosen)})]


def table_3_1b(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """Table 3.1b: IS estimate of VW trained with an isotropic Gaussian output, beside the AIS baselines.

    Only a model trained with an isotropic output fills the VW row (a diagonal model evaluated with its
    variances averaged is another model)."""
    sel = _select(runs, "vw_table_3_1b", include_smoke)
    sel.leave(sel.matching[~isotropic(sel.matching)], "diagonal output (Table 3.1a); 3.1b needs an isotropic one")
    ours: list[OurRow] = []
    caption = _no_match("vw_table_3_1b") + " It needs a model trained with an isotropic output."
    if isotropic(sel.matching).any():
        try:
            ours = _rows_3_1b(sel.matching)
        except MissingData as missing:
            sel.leave(sel.matching, missing.reason)
        else:
            iso = sel.matching[isotropic(sel.matching) & final(sel.matching, "test/importance").notna()]
            chosen = best_model(iso, MODEL_CHOICE)
            sel.use(chosen)
            caption = (f"Ours: {ALGORITHM} on MNIST trained with an isotropic Gaussian output; {len(chosen)} "
                       f"run(s); IS with k = {k_text(chosen) or '?'} importance samples per example.")
    frame = compare_table("vw_table_3_1b", ours, caption=caption, extra_labels=("IS samples k",))
    frame["IS samples k"] = frame["IS samples k"].astype(object).fillna("")
    return finish_table(frame, sel, _rows_3_1b, "vw_table_3_1b", f"{NEEDS} on MNIST trained with an isotropic output (one variance for all pixels) logging test/importance")


def _bits_metric(runs: pd.DataFrame) -> str | None:
    return next((m for m in BITS_PER_DIM if has_metric(runs, m)), None)


def _bits_rows(sub: pd.DataFrame) -> list[OurRow]:
    metric = _bits_metric(sub)
    require(metric is not None, "no run logged bits/dim", f"{NEEDS} whose evaluation logs test/bits_per_dim")
    groups = _by_steps(sub, metric)
    if not groups:  # no heating-step count: one row for all runs
        groups = [(0, best_model(sub[final(sub, metric).notna()], MODEL_CHOICE))]
    cells = [(k, metric_cell(g, metric)) for k, g in groups]
    best_k = min(cells, key=lambda kc: kc[1].mean)[0]
    return [OurRow(f"VW ({k} steps, ours)" if k else "VW (ours)", {"bits_per_dim": c},
                   tags=(f"vw_{k}",) + (("vw",) if k == best_k else ())) for k, c in cells]


def table_3_2(runs: pd.DataFrame, *, published_key: str = "vw_table_3_2", include_smoke: bool = False
              ) -> pd.DataFrame:
    """Table 3.2 (S000) / Table 1 (S001): CIFAR-10 test bits/dim (≤) per number of heating steps. Only
    runs on CIFAR-10 fill it."""
    sel = _select(runs, published_key, include_smoke)
    needs = f"{NEEDS} on CIFAR-10 whose evaluation logs {' or '.join(BITS_PER_DIM)}"
    require(_bits_metric(pd.concat([sel.matching, sel.other])) is not None,
            f"no {ALGORITHM} run logged bits/dim", needs)
    ours: list[OurRow] = []
    caption = _no_match(published_key)
    metric = _bits_metric(sel.matching)
    if metric is not None:
        ours = _bits_rows(sel.matching)
        for _, g in _by_steps(sel.matching, metric) or [(0, best_model(sel.matching[final(sel.matching, metric)
                                                                                       .notna()], MODEL_CHOICE))]:
            sel.use(g)
        caption = f"Ours: {ALGORITHM} on CIFAR-10 ({metric}, bits per dimension of the 8-bit data)."
    return finish_table(compare_table(published_key, ours, caption=caption), sel, _bits_rows, published_key, needs)


def s001_table_1(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """Table 1 of the NIPS paper (S001): like Table 3.2 with the 20- and 30-step VW rows."""
    return table_3_2(runs, published_key="vw_s001_table_1", include_smoke=include_smoke)


def _inception_rows(sub: pd.DataFrame) -> list[OurRow]:
    require(has_metric(sub, "test/inception_score"), "no run logged test/inception_score",
            f"{NEEDS} on CIFAR-10 with eval.inception_path set (an Inception-v3 TorchScript export; raygen downloads none), which logs test/inception_score")
    return [OurRow(f"VW({k} steps, ours)",
                   {"inception_score": inception_cell(g)}, tags=(f"vw_{k}",))
            for k, g in _by_steps(sub, "test/inception_score")]


def inception_table(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """§3.16 Inception scores on CIFAR-10 (needs runs that logged test/inception_score)."""
    sel = _select(runs, "vw_inception", include_smoke)
    require(has_metric(pd.concat([sel.matching, sel.other]), "test/inception_score"),
            f"no {ALGORITHM} run logged test/inception_score",
            f"{NEEDS} on CIFAR-10 with eval.inception_path set (an Inception-v3 TorchScript export; raygen downloads none), which logs test/inception_score")
    ours = _inception_rows(sel.matching) if has_metric(sel.matching, "test/inception_score") else []
    for _, g in _by_steps(sel.matching, "test/inception_score") if ours else []:
        sel.use(g)
    frame = compare_table("vw_inception", ours, caption=f"Ours: {ALGORITHM} on CIFAR-10." if ours
                          else _no_match("vw_inception"))
    return finish_table(frame, sel, _inception_rows, "vw_inception", f"{NEEDS} on CIFAR-10 with eval.inception_path set (an Inception-v3 TorchScript export; raygen downloads none), which logs test/inception_score")


def _reversibility_rows(sub: pd.DataFrame) -> list[OurRow]:
    sub = sub[final(sub, "test/reversibility_ratio").notna()]
    require(not sub.empty, "no run logged test/reversibility_ratio",
            f"{NEEDS} whose final evaluation measures reversibility (test/reversibility_ratio)")
    chosen = best_model(sub, MODEL_CHOICE)
    c = metric_cell(chosen.assign(**{
        "final.test/reversibility_ratio": 100 * final(chosen, "test/reversibility_ratio"),
        "final.test/reversibility_ratio_std": 100 * final(chosen, "test/reversibility_ratio_std"),
    }), "test/reversibility_ratio")
    return [OurRow("VW (ours)", {"reversibility_percent": c}, tags=("vw",))]


def reversibility_table(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """§3.14: irreversibility of p_T relative to its entropy rate, in percent (ours = 100 × ratio).

    raygen.metrics.reversibility_ratio returns the ratio as a fraction (3.6 % = 0.036), so the table
    multiplies the stored value by 100 to print it like the paper.
    """
    sel = _select(runs, "vw_reversibility", include_smoke)
    logged = final(sel.matching, "test/reversibility_ratio").notna()
    sel.leave(sel.matching[~logged], "did not log test/reversibility_ratio")
    require(bool(logged.any()) or has_metric(sel.other, "test/reversibility_ratio"),
            f"no {ALGORITHM} run logged test/reversibility_ratio",
            f"{NEEDS} whose final evaluation measures reversibility (test/reversibility_ratio)")
    ours: list[OurRow] = []
    caption = _no_match("vw_reversibility")
    if logged.any():
        ours = _reversibility_rows(sel.matching)
        sub = sel.matching[logged]
        sel.use(best_model(sub, MODEL_CHOICE))
        caption = (f"Ours: {ALGORITHM} on MNIST ({selection_note(sub, MODEL_CHOICE)}); "
                   "ours = 100 × test/reversibility_ratio.")
    return finish_table(compare_table("vw_reversibility", ours, caption=caption), sel, _reversibility_rows,
                        "vw_reversibility", f"{NEEDS} on MNIST whose final evaluation measures reversibility")


# ---------------------------------------------------------------------------------------------- figures


def _panel(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, include_smoke: bool, name: str, title: str,
           needs: str, datasets: Callable[[str], bool] = lambda d: True) -> Figure:
    return best_run_panels(runs, artifacts, root, algorithm=ALGORITHM, name=name, title=title, needs=needs,
                           model_choice=MODEL_CHOICE, datasets=datasets, include_smoke=include_smoke)


def toy_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, include_smoke: bool = False) -> Figure:
    """Figs 3.8/3.9: samples on the 2-D toy manifolds (swiss roll, circle), one panel per toy dataset."""
    return _panel(runs, artifacts, root, include_smoke, "samples.png", "Figs 3.8/3.9: VW samples on 2-D toy data",
                  f"{NEEDS} on toy2d:* datasets (e.g. toy2d:swissroll, toy2d:circle) that saved samples.png",
                  datasets=lambda d: str(d).startswith("toy2d:"))


def chains_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, include_smoke: bool = False) -> Figure:
    """Fig 3.10: cooling chains from noise (`chains.png`), one per dataset."""
    return _panel(runs, artifacts, root, include_smoke, "chains.png", "Fig 3.10: VW sampling chains",
                  f"{NEEDS} on image datasets that saved chains.png",
                  datasets=lambda d: not str(d).startswith("toy2d:"))


def long_chains_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, include_smoke: bool = False) -> Figure:
    """Figs 3.11-3.16: long chains at T = 1 (`long_chain.png`), one per dataset: do samples stay on the data?"""
    return _panel(runs, artifacts, root, include_smoke, "long_chain.png", "Figs 3.11-3.16: VW long chains at T = 1",
                  f"{NEEDS} on image datasets that saved long_chain.png")


def inpainting_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, include_smoke: bool = False) -> Figure:
    """Fig 3.3: inpainting with the bottom half clamped (`inpainting.png`)."""
    return _panel(runs, artifacts, root, include_smoke, "inpainting.png", "Fig 3.3: VW inpainting",
                  f"{NEEDS} on an image dataset whose artifacts include inpainting.png")


def samples_figure(runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, include_smoke: bool = False) -> Figure:
    """Figs 3.4-3.7: sample grids of the best model per image dataset (`samples.png`)."""
    return _panel(runs, artifacts, root, include_smoke, "samples.png", "Figs 3.4-3.7: VW samples",
                  f"{NEEDS} on image datasets that saved samples.png",
                  datasets=lambda d: not str(d).startswith("toy2d:"))
