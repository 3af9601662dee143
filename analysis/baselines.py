"""The papers' baselines run by raygen (issue 12): our VAE/GAN/GMMN rows by our AIS beside the published AIS
rows of Wu et al. (VW Table 3.1b, Infusion TAB 3.1), and our GSN / diffusion (NET) / GAN / GMMN + AE Parzen
rows beside Infusion FIG 3.4's.

Plain functions over the store's frames (see analysis/common.py for the table layout). Rows are per
(algorithm, latent size) — VAE-10, GAN-50, … — the model config chosen on the validation split: the ELBO
(`valid/lower_bound`) for VAEs, the validation MMD (`valid/mmd`, lower is better) for GANs and GMMNs, the
walkback loss (`valid/loss`) for GSNs, the bound for NET. Runs on other data (digits, the MNIST test-only
split) appear only in the "ours, other data" table, each row naming its data.
"""

from __future__ import annotations

import pandas as pd

from analysis.common import (
    MissingData,
    OurRow,
    best_model,
    compare_table,
    config,
    final,
    metric_cell,
    require,
    train_metric,
    truthy,
)
from analysis.protocol import (
    DEQUANTIZED,
    FULL_TRAIN,
    OFFICIAL_MNIST,
    REAL_VALUED,
    Need,
    Protocol,
    Selection,
    dataset_need,
    finish_table,
    require_runs,
    select,
)

AIS_ALGORITHMS = ("vae", "gan", "gmmn")
PARZEN_ALGORITHMS = ("gsn", "net", "gan", "gmmn")
NAMES = {"vae": "VAE", "gan": "GAN", "gmmn": "GMMN", "gsn": "GSN (walkback DAE)", "net": "Diffusion (NET)"}
# validation metric and goal each algorithm's model config is chosen by
CHOICE = {"vae": ("valid/lower_bound", "max"), "gan": ("valid/mmd", "min"), "gmmn": ("valid/mmd", "min"),
          "gsn": ("valid/loss", "min"), "net": ("valid/lower_bound", "max")}
NEEDS = "completed 'vae', 'gan' or 'gmmn' runs"

_MNIST = (dataset_need(("mnist",), "MNIST"), REAL_VALUED, OFFICIAL_MNIST, FULL_TRAIN)
PROTOCOLS = {
    "vw_table_3_1b": Protocol("vw_table_3_1b", "MNIST, real-valued, uniform noise", (*_MNIST, DEQUANTIZED),
                              notes=("AIS of Wu et al.: 10 000 intermediate distributions, 16 chains",)),
    "it_table_3_1": Protocol("it_table_3_1", "MNIST, real-valued in [0,1]", (*_MNIST, DEQUANTIZED),
                             notes=("AIS of Wu et al.: 10 000 intermediate distributions, 16 chains",)),
    "it_parzen": Protocol("it_parzen", "MNIST, real-valued in [0,1]",
                          (*_MNIST, Need("config.eval.parzen_samples", (10_000,), "10 000 generated samples",
                                         default=10_000))),
}


def _chosen(runs: pd.DataFrame, algorithm: str) -> pd.DataFrame:
    metric, goal = CHOICE[algorithm]
    return best_model(runs, (metric,), goal=goal)


def _ais_steps(runs: pd.DataFrame) -> str:
    steps = sorted({int(s) for s in pd.to_numeric(config(runs, "algo.ais.steps"), errors="coerce").dropna()})
    return ", ".join(str(s) for s in steps) or "1000"


def _ais_rows(runs: pd.DataFrame) -> list[OurRow]:
    runs = runs[final(runs, "test/ais").notna()]
    require(not runs.empty, "no run logged test/ais", f"{NEEDS} with algo.ais_examples > 0 (AIS in the final evaluation)")
    rows = []
    latent = pd.to_numeric(config(runs, "algo.latent"), errors="coerce")
    # GMMN + AE is another model than the tables' GMMN (on pixels): its own rows, beside no published one
    kind = runs["algorithm"].where(~truthy(config(runs, "algo.autoencoder")), "gmmn_ae")
    for (algorithm, size), group in runs.groupby([kind, latent], sort=True):
        chosen = _chosen(group, "gmmn" if algorithm == "gmmn_ae" else algorithm)
        name = "GMMN + AE" if algorithm == "gmmn_ae" else NAMES[algorithm]
        rows.append(OurRow(f"{name}-{int(size)} (AIS, ours)",
                           {"test_ll": metric_cell(chosen, "test/ais"),
                            "train_ll": metric_cell(chosen, train_metric(chosen, "ais"))},
                           tags=(f"{algorithm}_{int(size)}",),
                           extra={"AIS distributions": _ais_steps(chosen)}))
    return rows


def _ais_table(runs: pd.DataFrame, key: str, include_smoke: bool) -> pd.DataFrame:
    sel: Selection = select(runs, AIS_ALGORITHMS, PROTOCOLS[key], item=f"baselines_{key}", include_smoke=include_smoke)
    require_runs(sel, "VAE, GAN or GMMN", f"{NEEDS} (`raygen train vae|gan|gmmn -d mnist algo.latent=10 ...`)")
    ours: list[OurRow] = []
    caption = f"No run matches the protocol ({PROTOCOLS[key].describe()})."
    if not sel.matching.empty:
        try:
            ours = _ais_rows(sel.matching)
        except MissingData as missing:
            sel.leave(sel.matching, missing.reason)
        else:
            sel.use(sel.matching[final(sel.matching, "test/ais").notna()])
            caption = ("Ours: decoder-based baselines scored by raygen's AIS (geometric prior→posterior path, "
                       "sigmoid schedule, HMC with 10 leapfrog steps adapted toward 0.65 acceptance, 16 chains; "
                       "column 'AIS distributions'; Wu et al.: 10 000); GAN and GMMN with an isotropic Gaussian "
                       "observation model whose std is chosen on the validation split; per algorithm and latent "
                       "size, the model config best on its validation criterion.")
    frame = compare_table(key, ours, caption=caption, extra_labels=("AIS distributions",))
    frame["AIS distributions"] = frame["AIS distributions"].astype(object).fillna("")
    return finish_table(frame, sel, _ais_rows, key, f"{NEEDS} on MNIST (official split) with AIS in the final evaluation")


def vw_table_3_1b(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """VW Table 3.1b with our VAE/GAN/GMMN rows by our AIS beside Wu et al.'s."""
    return _ais_table(runs, "vw_table_3_1b", include_smoke)


def it_table_3_1(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """Infusion TAB 3.1 with our VAE/GAN/GMMN rows by our AIS beside Wu et al.'s."""
    return _ais_table(runs, "it_table_3_1", include_smoke)


def _parzen_tag(runs: pd.DataFrame, algorithm: str) -> pd.Series:
    if algorithm != "gmmn":
        return pd.Series(algorithm, index=runs.index, dtype=object)
    ae = truthy(config(runs, "algo.autoencoder"))
    return ae.map(lambda a: "gmmn_ae" if a else "gmmn")


_PARZEN_LABELS = {"gsn": "GSN / walkback DAE (ours)", "net": "Diffusion, NET (ours)", "gan": "GAN (ours)",
                  "gmmn_ae": "GMMN + AE (ours)", "gmmn": "GMMN on pixels (ours)"}


def _parzen_rows(runs: pd.DataFrame) -> list[OurRow]:
    runs = runs[final(runs, "test/parzen_ll").notna()]
    require(not runs.empty, "no run logged test/parzen_ll", "completed gsn/net/gan/gmmn runs with eval.parzen=true")
    rows = []
    for algorithm, group in runs.groupby("algorithm", sort=True):
        for tag, sub in group.groupby(_parzen_tag(group, algorithm), sort=True):
            chosen = _chosen(sub, algorithm)
            rows.append(OurRow(_PARZEN_LABELS[tag],
                               {"parzen_ll": metric_cell(chosen, "test/parzen_ll", std_metric="test/parzen_ll_se",
                                                         inner_kind="se")},
                               tags=(tag,), extra={"sigma": float(final(chosen, "test/parzen_sigma").mean())}))
    return rows


def parzen_table(runs: pd.DataFrame, *, include_smoke: bool = False) -> pd.DataFrame:
    """Infusion FIG 3.4 with our GSN / diffusion / GAN / GMMN + AE Parzen rows beside the published ones."""
    key = "it_parzen"
    sel = select(runs, PARZEN_ALGORITHMS, PROTOCOLS[key], item="baselines_it_parzen", include_smoke=include_smoke)
    require_runs(sel, "GSN, NET, GAN or GMMN", "completed gsn/net/gan/gmmn runs (`raygen train gsn -d mnist ...`)")
    ours: list[OurRow] = []
    caption = f"No run matches the protocol ({PROTOCOLS[key].describe()})."
    if not sel.matching.empty:
        try:
            ours = _parzen_rows(sel.matching)
        except MissingData as missing:
            sel.leave(sel.matching, missing.reason)
        else:
            sel.use(sel.matching[final(sel.matching, "test/parzen_ll").notna()])
            caption = ("Ours: the baselines' samples scored by the Parzen-window estimator, σ chosen on the "
                       "validation split (column sigma; the paper: 0.17); per algorithm, the model config best on "
                       "its validation criterion.")
    frame = compare_table(key, ours, caption=caption, extra_labels=("sigma",))
    frame.attrs["display_extra"] = []
    return finish_table(frame, sel, _parzen_rows, key, "completed gsn/net/gan/gmmn runs on MNIST with eval.parzen=true")
