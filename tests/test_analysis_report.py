"""build_report and the table builders: every claimed file exists, and the numbers in the tables are the
numbers in the store (recomputed here from raygen.results' own readers with plain pandas/numpy)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from analysis import infusion, professor, sweeps, walkback
from analysis.common import MissingData, cell
from analysis.render import fmt
from analysis.report import build_report
from analysis.synthetic import SyntheticRun, demo_store, write_run
from raygen.results import read_metrics, read_runs

BUILT_ON_DEMO = {
    "infusion_tab_a1", "infusion_fig_a1", "infusion_fig_3_3", "infusion_table_3_1", "infusion_parzen",
    "infusion_fig_3_5", "infusion_fig_3_6", "infusion_fig_3_2", "walkback_table_3_1a",
    "walkback_reversibility", "walkback_fig_3_8_toy", "walkback_chains", "walkback_long_chains",
    "walkback_fig_3_3_inpainting", "pf_fig_2_3_tsne",
    "pf_table_2_1", "pf_ptb_bpc", "pf_fig_2_3_distances", "pf_fig_2_3", "pf_fig_2_2_ptb", "pf_discriminator",
    "sweeps_best", "sweep_infusion_omega_top_k", "sweep_infusion_omega_effects", "sweep_infusion_omega_importance",
    "sweep_infusion_omega_best_per_level", "sweep_infusion_omega_effects_plot", "sweep_pf_pareto_top_k",
}
# 3.1b: the demo's walkback runs have a diagonal output; 3.1b needs one trained with an isotropic output.
NOT_BUILT_ON_DEMO = {"walkback_table_3_2", "walkback_s001_table_1", "infusion_table_3_2", "walkback_inception",
                     "walkback_table_3_1b"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = demo_store(tmp_path_factory.mktemp("store"))
    out = tmp_path_factory.mktemp("report")
    return root, out, build_report(root, out)


def test_report_writes_every_file_it_claims(demo):
    _root, out, summary = demo
    assert not summary.errors, summary.errors
    names = set(summary.built_names())
    assert BUILT_ON_DEMO <= names, BUILT_ON_DEMO - names
    assert NOT_BUILT_ON_DEMO <= {s.name for s in summary.skipped}
    for item in summary.built:
        suffixes = sorted({f.suffix for f in item.files})
        assert suffixes == ([".csv", ".md", ".tex"] if item.kind == "table" else [".pdf", ".png"]), item.name
        for f in item.files:
            assert f.is_file() and f.stat().st_size > 0, f
            head = f.read_bytes()[:8]
            if f.suffix == ".png":
                assert head.startswith(b"\x89PNG"), f
            if f.suffix == ".pdf":
                assert head.startswith(b"%PDF"), f
    index = summary.index.read_text()
    for item in summary.built:
        assert f"({item.files[0].relative_to(out).as_posix()})" in index
    for skipped in summary.skipped:
        assert skipped.name in index and skipped.reason in index and skipped.needs in index
    # The bits/dim tables say which metric they need.
    needs = {s.name: s.needs for s in summary.skipped}
    assert "test/bits_per_dim" in needs["walkback_table_3_2"]
    # TAB A.1's Markdown shows sample thumbnails copied next to it.
    md = (out / "tables" / "infusion_tab_a1.md").read_text()
    thumbs = re.findall(r"\]\((thumbs/[^)]+)\)", md)
    assert thumbs and all((out / "tables" / t).is_file() for t in thumbs)
    assert r"\pm" in (out / "tables" / "infusion_table_3_1.tex").read_text()


def test_tab_a1_cells_equal_the_store(demo):
    """Each TAB A.1 cell: among the runs with that (steps, rate), the model config with the best mean
    validation lower bound, averaged over its seeds (recomputed here with plain pandas)."""
    root, out, _ = demo
    table = pd.read_csv(out / "tables" / "infusion_tab_a1.csv")
    runs = read_runs(root)
    runs = runs[(runs.algorithm == "infusion") & (runs.status == "completed") & (runs.dataset == "mnist")]
    steps = runs["config.algo.steps"]
    runs = runs[(steps == 1) | (runs["config.algo.schedule"] == "increasing")]
    rate = np.where(runs["config.algo.steps"] == 1, runs["config.algo.alpha0"], runs["config.algo.omega"]).round(10)
    runs = runs.assign(rate=rate, lr=runs["config.train.lr"])
    ours = table[table["lower_bound n"] > 0].set_index(["steps", "infusion rate"])
    cells = runs.groupby(["config.algo.steps", "rate"])
    assert len(ours) == cells.ngroups
    md = (out / "tables" / "infusion_tab_a1.md").read_text()
    for (k, r), group in cells:
        configs = group.groupby("lr")
        best_lr = configs["final.valid/lower_bound"].mean().idxmax()
        chosen = configs.get_group(best_lr)["final.test/lower_bound"]
        got = ours.loc[(k, r)]
        assert got["lower_bound ours"] == pytest.approx(chosen.mean(), rel=1e-12)
        assert got["lower_bound n"] == len(chosen)
        if len(chosen) > 1:
            assert got["lower_bound ours ±"] == pytest.approx(chosen.std(ddof=1), rel=1e-9)
            assert got["lower_bound ± over"] == f"std over {len(chosen)} runs (seeds)"
        assert fmt(chosen.mean()) in md
    # A published row keeps the paper's number whether or not we ran that rate.
    pub = table.set_index(["steps", "infusion rate"])
    assert pub.loc[(5, 0.1), "lower_bound published"] == 1448.66
    assert pub.loc[(10, 0.06), "lower_bound published"] == 846.73


def test_final_columns_are_the_last_logged_values(demo):
    """The tables read `final.*`; check those equal the metrics table's last value (what the loop logged)."""
    root, _, _ = demo
    runs = read_runs(root).set_index("run_id")
    metrics = read_metrics(root)
    last = metrics[(metrics.split == "test") & (metrics.metric == "lower_bound")].sort_values("step").groupby(
        "run_id")["value"].last()
    assert len(last) > 10
    assert np.allclose(runs.loc[last.index, "final.test/lower_bound"], last.values, rtol=0, atol=0)


def test_pf_tables_put_other_data_only_in_their_own_table(demo):
    """The demo's sequence runs are on a thresholded `seqmnist` and on a `ptb` that is not raygen's PTB
    (`text:ptb`): no published PF cell gets a number; the other-data tables hold them, equal to the store."""
    root, out, _ = demo
    runs = read_runs(root)
    table = pd.read_csv(out / "tables" / "pf_table_2_1.csv")
    assert (table["nll n"] == 0).all() and table["nll ours"].isna().all()
    other = pd.read_csv(out / "tables" / "pf_table_2_1_other_data.csv")
    for algo, label in (("professor", "Professor Forcing (ours)"), ("teacher", "Teacher Forcing (ours)")):
        sel = runs[(runs.algorithm == algo) & (runs.dataset == "seqmnist")]["final.test/nll_image"]
        row = other[(other.model == label) & other["data and settings"].str.startswith("seqmnist")].iloc[0]
        assert row["nll ours"] == pytest.approx(sel.mean(), rel=1e-12)
        assert row["nll ours ±"] == pytest.approx(sel.std(ddof=1), rel=1e-9)
        assert row["nll n"] == 2
    assert "MNIST" not in (out / "tables" / "pf_table_2_1_other_data.md").read_text().split("\n")[0]
    ptb = pd.read_csv(out / "tables" / "pf_ptb_bpc.csv").set_index("model")
    assert ptb.loc["Teacher Forcing (baseline)", "valid_bpc published"] == 1.50
    assert ptb["valid_bpc ours"].isna().all()


def test_walkback_table_3_1a_rows_and_reversibility_percent(demo):
    root, out, _ = demo
    runs = read_runs(root)
    vw = runs[(runs.algorithm == "walkback") & (runs.status == "completed") & (runs.dataset == "mnist")]
    # K is the logged test/walkback_steps (a k_mode=random run has no config.algo.walkback_steps).
    table = pd.read_csv(out / "tables" / "walkback_table_3_1a.csv").set_index("model")
    for k, label in ((5, "VW (5 steps, LB)"), (15, "VW (15 step, LB)")):
        sel = vw[vw["final.test/walkback_steps"] == k]["final.test/lower_bound"]
        assert table.loc[label, "test_ll ours"] == pytest.approx(sel.mean(), rel=1e-12)
        assert table.loc[label, "test_ll n"] == len(sel) == 2
    is15 = vw[vw["final.test/walkback_steps"] == 15]
    assert table.loc["VW (IS estimate)", "train_ll ours"] == pytest.approx(is15["final.train/importance"].mean(),
                                                                          rel=1e-12)
    rev = pd.read_csv(out / "tables" / "walkback_reversibility.csv").iloc[0]
    assert rev["reversibility_percent published"] == 3.6
    # The best-LB model is the 15-step one; the table prints its ratio in percent.
    assert rev["reversibility_percent ours"] == pytest.approx(100 * is15["final.test/reversibility_ratio"].mean(),
                                                              rel=1e-12)


def test_sweep_best_and_top_k_match_pandas(demo):
    root, out, _ = demo
    runs = read_runs(root)
    trials = runs[(runs.sweep_id == "infusion-omega") & runs.status.isin(["completed", "stopped"])]
    best = trials.loc[trials["final.valid/lower_bound"].idxmax()]
    table = pd.read_csv(out / "tables" / "sweeps_best.csv")
    row = table[(table.sweep == "infusion-omega")].iloc[0]
    assert row["best run"] == best.run_id and row["best value"] == best["final.valid/lower_bound"]
    assert row["trials"] == (runs.sweep_id == "infusion-omega").sum()
    assert row["failed"] == ((runs.sweep_id == "infusion-omega") & (runs.status == "failed")).sum()
    top = pd.read_csv(out / "tables" / "sweep_infusion_omega_top_k.csv")
    expected = trials.sort_values("final.valid/lower_bound", ascending=False).head(10)
    assert list(top.run_id) == list(expected.run_id)
    # Multi-objective sweep: one row per objective, each with its own best.
    pf = table[table.sweep == "pf-pareto"].set_index("objective")
    members = runs[runs.sweep_id == "pf-pareto"]
    assert pf.loc["train/seconds_per_step", "best value"] == members["final.train/seconds_per_step"].min()


def test_cell_statistics_against_numpy():
    values = [10.0, 14.0, 11.5]
    c = cell(values)
    assert (c.mean, c.n, c.pm_kind) == (pytest.approx(np.mean(values)), 3, "seeds")
    assert c.pm == pytest.approx(np.std(values, ddof=1))
    assert c.spread == "std over 3 runs (seeds)"
    single = cell([5.0, math.nan], inner_std=[0.25, 9.0], repeats=[10, 10])
    assert (single.mean, single.pm, single.n, single.pm_kind) == (5.0, 0.25, 1, "evals")
    assert single.spread == "std over 10 evaluations of 1 run"
    # One evaluation has no spread: no "± 0", the cell is just n = 1.
    once = cell([5.0], inner_std=[0.0], repeats=[1])
    assert once.n == 1 and math.isnan(once.pm) and once.spread == ""
    assert cell([]).n == 0 and math.isnan(cell([]).mean)


def _run(run_id, algorithm="infusion", dataset="mnist", **finals) -> SyntheticRun:
    return SyntheticRun(run_id, algorithm, dataset, config={"train.steps": 10, "algo.steps": 5, "algo.omega": 0.1},
                        finals=finals)


def test_table_3_1_single_run_uses_its_repeated_evaluation_std(tmp_path):
    write_run(tmp_path, _run("a", **{"test/importance": 1800.0, "test/importance_std": 0.5,
                                     "valid/lower_bound": 1.0}))
    table = infusion.table_3_1(read_runs(tmp_path)).set_index("model")
    row = table.loc["Infusion training (IS estimate)"]
    assert (row["test_ll ours"], row["test_ll ours ±"], row["test_ll n"]) == (1800.0, 0.5, 1)
    assert row["test_ll ± over"].startswith("std over") and "evaluations of 1 run" in row["test_ll ± over"]
    assert row["test_ll published"] == 1836.27 and row["test_ll published ±"] == 0.551
    assert table.loc["Infusion training (lower bound)", "test_ll n"] == 0  # not logged: empty, not invented


def test_missing_runs_raise_with_what_is_needed(tmp_path):
    write_run(tmp_path, _run("x", algorithm="walkback", **{"test/lower_bound": 3.0}))
    runs = read_runs(tmp_path)
    with pytest.raises(MissingData) as err:
        infusion.tab_a1(runs)
    assert "infusion" in err.value.needs
    with pytest.raises(MissingData) as err:
        walkback.table_3_1b(runs)
    assert "isotropic" in err.value.needs
    with pytest.raises(MissingData):
        professor.table_2_1(runs)
    with pytest.raises(MissingData):
        sweeps.best_trials(runs, {})
    summary = build_report(tmp_path, tmp_path / "out")
    assert not summary.errors
    assert "infusion_tab_a1" in {s.name for s in summary.skipped}
    assert "## Not built" in summary.index.read_text()


def test_fig_a1_has_one_panel_per_schedule_and_steps_and_one_line_per_rate(demo):
    root, _, _ = demo
    runs, metrics = read_runs(root), read_metrics(root)
    fig = infusion.fig_a1(runs, metrics)
    panels = [ax for ax in fig.axes if ax.get_title()]
    sel = runs[(runs.algorithm == "infusion") & (runs.status == "completed") & (runs.dataset == "mnist")]
    combos = sel.groupby(["config.algo.schedule", "config.algo.steps"]).size()
    assert len(panels) == len(combos)
    ax = next(a for a in panels if a.get_title() == "1 step, increasing")
    assert len(ax.lines) == sel[(sel["config.algo.steps"] == 1)]["config.algo.alpha0"].nunique()


@pytest.mark.slow
def test_report_on_a_store_written_by_real_infusion_runs(tmp_path):
    from raygen.config import build_config
    from raygen.engine.local import run_local

    for seed in (0, 1):
        cfg = build_config(algorithm="infusion", dataset="digits", overrides={
            "seed": seed, "algo.net.hidden": [8], "algo.steps": 2, "algo.omega": 0.05, "train.steps": 4,
            "train.batch_size": 16, "train.log_every": 2, "train.eval_every": 2, "train.eval_examples": 16,
            "train.checkpoint_every": 100, "eval.test_examples": 16, "eval.train_examples": 8, "eval.repeats": 2,
            "eval.likelihood_samples": 2, "eval.splits": ["test", "train"], "eval.isotropic": True,
            "eval.parzen_samples": 20, "eval.parzen_valid_examples": 16, "eval.sample_count": 4,
            "eval.chain_count": 2})
        run_local(cfg, tmp_path, progress=False)
    summary = build_report(tmp_path, tmp_path / "report")
    assert not summary.errors
    assert {"infusion_table_3_1", "infusion_tab_a1", "infusion_parzen", "infusion_fig_3_5"} <= set(summary.built_names())
    metrics = read_metrics(tmp_path)
    last = metrics[(metrics.split == "test") & (metrics.metric == "importance")].groupby("run_id")["value"].last()
    # digits is not MNIST: the published table gets no number of ours, the other-data table has both seeds.
    table = pd.read_csv(tmp_path / "report" / "tables" / "infusion_table_3_1.csv").set_index("model")
    assert (table["test_ll n"] == 0).all()
    other = pd.read_csv(tmp_path / "report" / "tables" / "infusion_table_3_1_other_data.csv").set_index("model")
    row = other.loc["Infusion training (IS estimate, ours)"]
    assert row["data and settings"].startswith("digits")
    assert row["test_ll n"] == 2
    assert row["test_ll ours"] == pytest.approx(last.mean(), rel=1e-12)
    assert row["test_ll ours ±"] == pytest.approx(last.std(ddof=1), rel=1e-9)
    assert int(row["IS samples k"]) == 2  # eval.likelihood_samples, as logged (test/importance_k)


def test_fig_2_3_ratio_bars_are_professor_over_teacher_beside_the_published_ratio(demo):
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer

    root, _, _ = demo
    runs = read_runs(root)
    fig = professor.distances_figure(runs)
    ratio_ax = fig.axes[0]
    ours = next(c for c in ratio_ax.containers if isinstance(c, BarContainer))
    published_marks = next(c for c in ratio_ax.collections if isinstance(c, PathCollection)).get_offsets()
    assert list(published_marks[:, 1]) == pytest.approx([1800.0 / 3000.0, 16.4 / 22.8])
    ptb = runs[runs.dataset == "ptb"]
    mean = {a: ptb[ptb.algorithm == a]["final.test/centroid_distance"].mean() for a in ("teacher", "professor")}
    assert ours[0].get_height() == pytest.approx(mean["professor"] / mean["teacher"], rel=1e-12)
    # Error bar: the ratio's first-order std from each mean's std over seeds (numpy, ddof=1).
    std = {a: ptb[ptb.algorithm == a]["final.test/centroid_distance"].std(ddof=1) for a in ("teacher", "professor")}
    ratio = mean["professor"] / mean["teacher"]
    want = ratio * np.hypot(std["professor"] / mean["professor"], std["teacher"] / mean["teacher"])
    low, high = ours.errorbar.lines[2][0].get_segments()[0][:, 1]
    assert (high - low) / 2 == pytest.approx(want, rel=1e-9)
