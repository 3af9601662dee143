"""Report rows of the baselines: our VAE/GAN/GMMN AIS rows beside Wu et al.'s (VW Table 3.1b, Infusion TAB 3.1)
and our Parzen rows beside Infusion FIG 3.4's; other data only in the "ours, other data" table."""

import math

import pandas as pd
import pytest

from analysis import baselines
from analysis.common import MissingData


def _run(run_id, algorithm, latent=10, dataset="mnist", split="official", **final):
    row = {"run_id": run_id, "algorithm": algorithm, "dataset": dataset, "status": "completed",
           "config.algo.latent": latent, "config.data.mnist_split": split, "config.data.binarize": "auto",
           "config.eval.dequantize": True, "config.eval.parzen_samples": 10_000, "config.algo.ais.steps": 1000}
    row.update({f"final.{k.replace('__', '/')}": v for k, v in final.items()})
    return row


def _row(frame, model):
    return frame[frame["model"] == model].iloc[0]


def test_ais_rows_sit_beside_the_published_ones_and_other_data_stays_apart():
    runs = pd.DataFrame([
        _run("v10", "vae", 10, test__ais=700.0, train_eval__ais=770.0),
        _run("g50", "gan", 50, test__ais=600.0),
        _run("v10-testonly", "vae", 10, split="test-only", test__ais=650.0),
        _run("v10-noais", "vae", 10, test__lower_bound=1.0),
    ])
    for build in (baselines.it_table_3_1, baselines.vw_table_3_1b):
        table = build(runs)
        vae10, gan50 = _row(table, "VAE-10 (AIS)"), _row(table, "GAN-50 (AIS)")
        assert vae10["test_ll ours"] == 700.0 and vae10["train_ll ours"] == 770.0 and vae10["test_ll n"] == 1
        assert vae10["test_ll published"] == pytest.approx(705.0, abs=0.5)
        assert gan50["test_ll ours"] == 600.0 and math.isnan(gan50["train_ll ours"])
        assert _row(table, "VAE-50 (AIS)")["test_ll n"] == 0  # published only
        other = table.attrs["selection"].other_table
        assert list(other["test_ll ours"]) == [650.0] and "mnist_split=test-only" in other.iloc[0, 0]
        assert "v10-testonly" not in table.attrs["selection"].used


def test_parzen_rows_name_gmmn_with_an_autoencoder_apart_from_pixels():
    runs = pd.DataFrame([
        _run("gsn", "gsn", test__parzen_ll=210.0, test__parzen_ll_se=1.5, test__parzen_sigma=0.17),
        _run("ae", "gmmn", test__parzen_ll=280.0, test__parzen_sigma=0.2),
        _run("px", "gmmn", test__parzen_ll=150.0, test__parzen_sigma=0.2),
    ])
    runs["config.algo.autoencoder"] = [None, True, False]
    table = baselines.parzen_table(runs)
    assert _row(table, "GSN [4]")["parzen_ll ours"] == 210.0
    assert _row(table, "GSN [4]")["parzen_ll ours ±"] == 1.5
    assert _row(table, "GMMN + AE (Li, Swersky, and Zemel)")["parzen_ll ours"] == 280.0
    assert _row(table, "GMMN on pixels (ours)")["parzen_ll ours"] == 150.0
    assert _row(table, "Diffusion [33]")["parzen_ll n"] == 0


def test_no_baseline_runs_is_missing_data_naming_what_to_run():
    runs = pd.DataFrame([_run("x", "infusion", test__lower_bound=1.0)])
    with pytest.raises(MissingData, match="raygen train vae"):
        baselines.it_table_3_1(runs)
