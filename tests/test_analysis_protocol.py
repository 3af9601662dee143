"""Like with like: each published table takes only runs on the paper's data and settings; other runs appear
only in its "ours, other data" table; smoke runs stay out; one run says n = 1; the index says which runs
each table used and left out, and why. Stores are written with analysis.synthetic.write_run (the same files
RunRecorder writes); expected numbers are the stored values themselves."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import infusion, professor, walkback
from analysis.common import MissingData
from analysis.protocol import select
from analysis.render import to_latex, to_markdown
from analysis.report import ReportFilter, build_report
from analysis.synthetic import SyntheticRun, write_run
from raygen.results import read_metrics, read_runs

INFUSION = {"algo.steps": 5, "algo.omega": 0.1, "algo.schedule": "increasing", "algo.alpha0": 0.0}


def _infusion(run_id: str, dataset: str = "mnist", lb: float = 1000.0, seed: int = 0, smoke: bool | None = None,
              config: dict | None = None, **finals: float) -> SyntheticRun:
    run = SyntheticRun(run_id, "infusion", dataset, seed=seed, config={**INFUSION, **(config or {})},
                       finals={"test/lower_bound": lb, "valid/lower_bound": lb - 10, **finals})
    run.smoke = smoke  # written by _write as the run row's `smoke` column
    return run


def _write(root, *runs: SyntheticRun) -> pd.DataFrame:
    for run in runs:
        write_run(root, run)
        smoke = getattr(run, "smoke", None)
        if smoke is not None:
            # The `smoke` column of the run row (set by `raygen sweep --smoke`); written here beside the others.
            path = root / "runs" / f"{run.run_id}.parquet"
            frame = pd.read_parquet(path)
            frame["smoke"] = bool(smoke)
            frame.to_parquet(path, index=False)
    return read_runs(root)


def _cell(table: pd.DataFrame, steps: int, rate: float) -> pd.Series:
    return table[(table["steps"] == steps) & (table["infusion rate"] == rate)].iloc[0]


def test_a_digits_run_never_lands_in_an_mnist_cell(tmp_path):
    runs = _write(tmp_path, _infusion("mnist-a", lb=1200.0), _infusion("digits-a", "digits", lb=-14.0))
    table = infusion.tab_a1(runs)
    assert _cell(table, 5, 0.1)["lower_bound ours"] == 1200.0 and _cell(table, 5, 0.1)["lower_bound n"] == 1
    other = table.attrs["selection"].other_table
    assert list(other["data and settings"]) == ["digits"]
    assert other["lower_bound ours"].iloc[0] == -14.0
    # Only digits: the published table's cells stay empty, the number is in the other-data table.
    only_digits = _write(tmp_path / "d", _infusion("digits-b", "digits", lb=-14.0))
    table = infusion.tab_a1(only_digits)
    assert (table["lower_bound n"] == 0).all()
    assert table.attrs["selection"].other_table["lower_bound ours"].tolist() == [-14.0]


def test_mnist_with_other_settings_is_other_data_and_says_how(tmp_path):
    runs = _write(tmp_path, _infusion("capped", lb=900.0, config={"data.max_train": 500}),
                  _infusion("thresholded", lb=950.0, config={"data.binarize": "threshold"}),
                  _infusion("few-test", lb=990.0, config={"eval.test_examples": 100}, **{"test/importance": 1.0}),
                  _infusion("ok", lb=1000.0, **{"test/importance": 1500.0}))
    sel = select(runs, "infusion", infusion.PROTOCOLS["it_table_3_1"])
    assert list(sel.matching["run_id"]) == ["ok"]
    reasons = dict(zip(sel.other["run_id"], sel.other["_deviation"]))
    assert reasons["capped"].startswith("data.max_train=500")
    assert reasons["thresholded"].startswith("data.binarize=threshold")
    assert reasons["few-test"].startswith("eval.test_examples=100")
    table = infusion.table_3_1(runs).set_index("model")
    assert table.loc["Infusion training (IS estimate)", "test_ll ours"] == 1500.0


def test_bits_per_dim_table_takes_only_cifar10(tmp_path):
    cifar = SyntheticRun("cifar", "walkback", "cifar10", config={"algo.walkback_steps": 30, "algo.k_mode": "fixed"},
                         finals={"test/bits_per_dim": 4.9, "valid/lower_bound": 1.0})
    digits = SyntheticRun("digits", "walkback", "digits", config={"algo.walkback_steps": 30, "algo.k_mode": "fixed"},
                          finals={"test/bits_per_dim": 2.1, "valid/lower_bound": 1.0})
    runs = _write(tmp_path, cifar, digits)
    table = walkback.table_3_2(runs).set_index("model")
    assert table.loc["VW", "bits_per_dim ours"] == 4.9
    assert table["bits_per_dim ours"].dropna().tolist() == [4.9]
    other = table.attrs["selection"].other_table
    assert other["bits_per_dim ours"].tolist() == [2.1] and other["data and settings"].iloc[0] == "digits"
    # A digits smoke-sweep trial alone: no CIFAR-10 number at all.
    only = walkback.table_3_2(_write(tmp_path / "d", digits))
    assert only["bits_per_dim ours"].isna().all()
    caption = only.attrs["caption"]
    assert "digits" not in caption


def test_pf_table_2_1_takes_only_the_standard_binarized_mnist_in_nats_per_image(tmp_path):
    standard = {"data.binarization": professor.BINARIZED_MNIST, "eval.test_examples": 10_000}
    runs = _write(
        tmp_path,
        SyntheticRun("pf-std", "professor", "seqbinarized_mnist", config=standard,
                     finals={"test/nll_image": 80.1, "test/nll": 80.1 / 784, "valid/nll": 0.1}),
        # A thresholded MNIST (seqmnist) gives other numbers: refused, even with the same metric.
        SyntheticRun("pf-thr", "professor", "seqmnist", config={"data.binarize": "threshold"},
                     finals={"test/nll_image": 60.0, "valid/nll": 0.1}),
        # The binarized MNIST files without their binarization recorded: not known to be the standard one.
        SyntheticRun("pf-unknown", "professor", "seqbinarized_mnist", finals={"test/nll_image": 70.0, "valid/nll": 0.1}),
        # The NLL of 1000 test images (raygen's default) is not the test set's.
        SyntheticRun("pf-1000", "professor", "seqbinarized_mnist",
                     config={**standard, "eval.test_examples": 1000}, finals={"test/nll_image": 75.0, "valid/nll": 0.1}),
        # Per-symbol NLL of a text run.
        SyntheticRun("pf-text", "professor", "text:embedded", finals={"test/nll": 1.2, "valid/nll": 1.2}),
    )
    table = professor.table_2_1(runs).set_index("model")
    assert table.loc["Professor Forcing (ours)", "nll ours"] == 80.1
    assert table.loc["Professor Forcing (ours)", "nll n"] == 1
    other = table.attrs["selection"].other_table
    # Nats per symbol never sit under a "nats per image" header, not even in the other-data table.
    labels = dict(zip(other["nll ours"], other["data and settings"]))
    assert sorted(labels) == [60.0, 70.0, 75.0]
    assert labels[60.0].startswith("seqmnist;") and "data.binarization=none" in labels[70.0]
    assert labels[75.0] == "seqbinarized_mnist; eval.test_examples=1000"
    led = table.attrs["selection"].ledger().set_index("run_id")
    assert led.loc["pf-std", "used"] and not led.loc["pf-thr", "used"]
    assert "seqmnist" in led.loc["pf-thr", "why"] and "binarization" in led.loc["pf-unknown", "why"]
    assert not led.loc["pf-text", "used"] and "per symbol, not per image" in led.loc["pf-text", "why"]
    assert "nats per image" in to_markdown(other)


def test_smoke_runs_stay_out_of_paper_tables_and_never_mix(tmp_path):
    runs = _write(tmp_path,
                  _infusion("real", lb=1400.0, config={"train.steps": 1000}, smoke=False),
                  _infusion("smoke", lb=500.0, config={"train.steps": 60}, smoke=True),
                  _infusion("smoke-same-config", lb=600.0, config={"train.steps": 1000}, smoke=True))
    table = infusion.tab_a1(runs)
    cell = _cell(table, 5, 0.1)
    assert (cell["lower_bound ours"], cell["lower_bound n"]) == (1400.0, 1)
    led = table.attrs["selection"].ledger().set_index("run_id")
    assert "smoke run" in led.loc["smoke", "why"] and not led.loc["smoke", "used"]
    # Included on request, a smoke run is still never averaged with a real run (its own model config).
    cell = _cell(infusion.tab_a1(runs, include_smoke=True), 5, 0.1)
    assert cell["lower_bound n"] == 1 and cell["lower_bound ours"] == 1400.0
    # Only smoke runs and no --include-smoke: nothing to show.
    with pytest.raises(MissingData):
        infusion.tab_a1(_write(tmp_path / "s", _infusion("s", smoke=True)))


def test_one_run_says_n_1_and_seeds_differ_from_evaluation_repeats(tmp_path):
    runs = _write(tmp_path,
                  _infusion("single", lb=1000.0, config={"eval.repeats": 1},
                            **{"test/importance": 1500.0, "test/importance_std": 0.0}),
                  _infusion("rep", lb=1000.0, config={"eval.repeats": 10, "algo.omega": 0.05},
                            **{"test/importance": 1400.0, "test/importance_std": 0.5}))
    md = to_markdown(infusion.tab_a1(runs))
    row = next(line for line in md.splitlines() if line.startswith("| 5 | 0.1 |"))
    assert "± 0 " not in row and "n = 1" in row
    table = infusion.table_3_1(runs[runs.run_id == "single"])
    md = to_markdown(table)
    row = next(line for line in md.splitlines() if line.startswith("| Infusion training (IS estimate) |"))
    assert "1500 |" in row and "1500 ±" not in row and "n = 1" in row
    table = infusion.table_3_1(runs[runs.run_id == "rep"])
    row = next(line for line in to_markdown(table).splitlines() if line.startswith("| Infusion training (IS est"))
    assert "1400 ± 0.5" in row and "n = 1 (± over 10 evaluations)" in row
    seeds = _write(tmp_path / "s", _infusion("s0", lb=1000.0, seed=0), _infusion("s1", lb=1010.0, seed=1))
    row = next(line for line in to_markdown(infusion.tab_a1(seeds)).splitlines() if line.startswith("| 5 | 0.1 |"))
    assert f"1005 ± {pd.Series([1000.0, 1010.0]).std():.3g}" in row and "n = 2 (± over seeds)" in row


def test_table_3_1_reads_train_eval_and_names_k(tmp_path):
    runs = _write(tmp_path, _infusion("a", config={"eval.likelihood_samples": 20}, **{
        "test/importance": 1500.0, "train_eval/importance": 1510.0, "train/importance": 1.0,
        "test/importance_k": 20.0}))
    table = infusion.table_3_1(runs).set_index("model")
    row = table.loc["Infusion training (IS estimate)"]
    assert row["train_ll ours"] == 1510.0 and row["IS samples k"] == "20"
    assert "k = 20" in table.attrs["caption"]


def test_vw_3_1a_rows_by_logged_heating_steps_and_3_1b_only_isotropic(tmp_path):
    runs = _write(
        tmp_path,
        # k_mode=random: the config's K is only a cap; the evaluation logs the K it used.
        SyntheticRun("k15", "walkback", "mnist", config={"algo.k_mode": "random", "algo.walkback_steps": 30},
                     finals={"test/walkback_steps": 15.0, "test/lower_bound": 1000.0, "train_eval/lower_bound": 1100.0,
                             "test/importance": 1200.0, "test/importance_isotropic": 700.0}),
        SyntheticRun("iso", "walkback", "mnist", config={"algo.covariance": "isotropic", "algo.k_mode": "fixed",
                                                          "algo.walkback_steps": 15},
                     finals={"test/lower_bound": 650.0, "test/importance": 710.0, "train_eval/importance": 790.0}),
    )
    a = walkback.table_3_1a(runs).set_index("model")
    assert a.loc["VW (15 step, LB)", "test_ll ours"] == 1000.0
    assert a.loc["VW (15 step, LB)", "train_ll ours"] == 1100.0
    assert a.loc["VW (IS estimate)", "test_ll ours"] == 1200.0
    assert a["test_ll ours"].notna().sum() == 2  # the isotropic run is not a 3.1a model
    b = walkback.table_3_1b(runs).set_index("model")
    # The diagonal run's importance_isotropic (variances averaged after training) is not Table 3.1b's model.
    assert b.loc["VW (IS estimate)", "test_ll ours"] == 710.0
    assert b.loc["VW (IS estimate)", "train_ll ours"] == 790.0


def test_report_filters_and_index_say_what_was_used_and_left_out(tmp_path):
    store = tmp_path / "store"
    sweep = _infusion("sw-1", lb=1300.0, config={"train.lr": 1e-3})
    sweep.sweep_id, sweep.trial_id, sweep.params = "grid", "00000", {"train.lr": 1e-3}
    _write(store, _infusion("mn-1", lb=1200.0), _infusion("dg-1", "digits", lb=-14.0),
           _infusion("sm-1", lb=100.0, smoke=True), sweep)
    summary = build_report(store, tmp_path / "all")
    index = summary.index.read_text()
    section = index.split("### Infusion TAB A.1: test lower bound per infusion rate and number of steps")[1].split("###")[0]
    assert "used (1): `sw-1`" in section  # the better config at the same (steps, rate)
    assert "`dg-1`" in section and "dataset=digits" in section
    assert "smoke run" in section and "`sm-1`" in section
    assert "`mn-1`" in section
    ledger = pd.read_csv(tmp_path / "all" / "tables" / "infusion_tab_a1.runs.csv").set_index("run_id")
    assert ledger.loc["sw-1", "used"] and not ledger.loc["dg-1", "used"]
    assert (tmp_path / "all" / "tables" / "infusion_tab_a1_other_data.md").is_file()

    build_report(store, tmp_path / "run", filters=ReportFilter(runs=("mn-",)))
    table = pd.read_csv(tmp_path / "run" / "tables" / "infusion_tab_a1.csv")
    assert _cell(table, 5, 0.1)["lower_bound ours"] == 1200.0
    build_report(store, tmp_path / "sweep", filters=ReportFilter(sweeps=("grid",)))
    assert _cell(pd.read_csv(tmp_path / "sweep" / "tables" / "infusion_tab_a1.csv"), 5, 0.1)["lower_bound ours"] == 1300.0
    summary = build_report(store, tmp_path / "dg", filters=ReportFilter(datasets=("digits",)))
    table = pd.read_csv(tmp_path / "dg" / "tables" / "infusion_tab_a1.csv")
    assert (table["lower_bound n"] == 0).all()
    assert "dataset in digits" in summary.index.read_text()
    build_report(store, tmp_path / "smoke", filters=ReportFilter(runs=("sm-",), include_smoke=True))
    assert _cell(pd.read_csv(tmp_path / "smoke" / "tables" / "infusion_tab_a1.csv"), 5, 0.1)["lower_bound ours"] == 100.0


def test_latex_right_aligns_numbers_bolds_the_best_and_names_metrics_in_words(tmp_path):
    runs = _write(tmp_path, _infusion("a", **{"test/importance": 1900.0, "test/importance_std": 0.5}))
    tex = to_latex(infusion.table_3_1(runs), "t")
    spec = tex.split(r"\begin{tabular}{")[1].split("}")[0]
    header = tex.split(r"\toprule")[1].split(r"\\")[0]
    columns = [c.strip() for c in header.split("&")]
    for column, align in zip(columns, spec):
        if column.endswith(("published", "ours")):
            assert align == "r", column
        if column in ("model",) or column.endswith("runs"):
            assert align == "l", column
    assert "Test log-likelihood (nats), published" in columns
    # Per column, the best value is bold: our 1900 beats every published test LL; on train (we logged none)
    # the published infusion IS estimate is best. Nothing else is bold.
    assert r"\textbf{1900 $\pm$ 0.5}" in tex
    assert r"\textbf{1837.56 $\pm$ 1.074}" in tex
    assert tex.count(r"\textbf{") == 2
    assert r"\begin{table}" in tex and r"\caption{" in tex and "_" not in tex.replace(r"\_", "")
    assert "evaluations). Ours" in tex  # the title is the caption's first sentence
    assert "Published: Bordes 2017" in tex and ".txt" not in tex  # the paper, not a local file name


def test_missing_data_names_the_isotropic_need(tmp_path):
    runs = _write(tmp_path, SyntheticRun("d", "walkback", "mnist", finals={"test/importance": 1.0}))
    with pytest.raises(MissingData) as err:
        walkback.table_3_1b(runs)
    assert "isotropic" in err.value.needs and "diagonal" in err.value.reason


def test_model_choice_uses_the_runs_own_selection_value(tmp_path):
    """A run that selected its best validation state (train.select_metric) is chosen on that value (the state
    its final evaluation scored), not on the last validation value it logged."""
    a = _infusion("a", lb=1100.0, config={"train.lr": 1e-3}, **{"selection/valid/lower_bound": 1300.0})
    a.finals["valid/lower_bound"] = 900.0  # the last quick evaluation, after the selected step
    b = _infusion("b", lb=1200.0, config={"train.lr": 1e-4})
    b.finals["valid/lower_bound"] = 1000.0
    table = infusion.table_3_1(_write(tmp_path, a, b))
    assert table.attrs["selection"].used == {"a"}


def test_fig_2_3_distances_are_always_other_data_and_use_the_scale_free_ones(tmp_path):
    """The paper's distances are T-SNE distances on vocal data raygen does not have: no published cell is
    filled; the other-data rows use the spread-relative distances with the teacher-vs-teacher floor."""
    finals = {"teacher": (0.9, 0.5), "professor": (0.45, 0.4)}
    runs = _write(tmp_path, *[
        SyntheticRun(algo, algo, "text:ptb", finals={
            "test/centroid_distance": 100.0, "test/nearest_free_distance": 10.0,
            "test/centroid_distance_rel": c, "test/nearest_free_distance_rel": n,
            "test/centroid_baseline_rel": 0.1, "test/nearest_baseline_rel": 0.3, "valid/nll": 1.0})
        for algo, (c, n) in finals.items()])
    table = professor.distances_table(runs)
    assert (table["centroid_distance n"] == 0).all()
    other = table.attrs["selection"].other_table.set_index("model")
    assert other.loc["Professor Forcing (ours)", "centroid_distance ours"] == 0.45
    assert other.loc["Teacher Forcing (ours)", "nearest_free_distance ours"] == 0.5
    assert other.loc["Teacher Forcing (ours)", "centroid_distance teacher-vs-teacher baseline"] == 0.1
    fig = professor.distances_figure(runs)
    bars = fig.axes[0].containers[0]
    assert [b.get_height() for b in bars] == pytest.approx([0.45 / 0.9, 0.4 / 0.5])
    assert any(line.get_ydata()[0] == 0.1 for line in fig.axes[1].lines)  # the teacher-vs-teacher floor


def test_inception_tables_take_cifar10_with_50000_samples_and_say_the_splits(tmp_path):
    cfg = {"algo.walkback_steps": 30, "algo.k_mode": "fixed", "eval.inception_splits": 10}
    full = SyntheticRun("full", "walkback", "cifar10", config={**cfg, "eval.inception_samples": 50_000},
                        finals={"test/inception_score": 4.1, "test/inception_score_std": 0.07, "valid/lower_bound": 1.0})
    few = SyntheticRun("few", "walkback", "cifar10", config={**cfg, "eval.inception_samples": 1000},
                       finals={"test/inception_score": 3.0, "test/inception_score_std": 0.2, "valid/lower_bound": 1.0})
    table = walkback.inception_table(_write(tmp_path, full, few)).set_index("model")
    row = table.loc["VW(30 steps)"]
    assert (row["inception_score ours"], row["inception_score ours ±"]) == (4.1, 0.07)
    assert row["inception_score ± over"] == "std over 10 splits of the samples of 1 run"
    assert "n = 1 (± over 10 splits of the samples)" in to_markdown(table.reset_index())
    other = table.attrs["selection"].other_table
    assert other["data and settings"].tolist() == ["cifar10; eval.inception_samples=1000"]


def test_smoke_only_stores_say_so_and_included_smoke_runs_are_named(tmp_path):
    # A store (or a --sweep filter) holding only a digits smoke sweep: the index says the runs are smoke
    # runs, not that there are no completed runs.
    runs = _write(tmp_path, _infusion("sm-1", "digits", smoke=True), _infusion("sm-2", "digits", smoke=True))
    with pytest.raises(MissingData, match=r"only smoke runs of infusion \(2; `raygen report --include-smoke`"):
        infusion.tab_a1(runs)
    # Runs that did not complete are counted by state.
    failed = SyntheticRun("f-1", "infusion", "mnist", status="failed", finals={"test/lower_bound": 1.0})
    with pytest.raises(MissingData, match=r"no completed infusion runs \(1 failed\)"):
        infusion.tab_a1(_write(tmp_path / "f", failed))
    # With --include-smoke they appear, and every place that shows them says they are smoke runs.
    table = infusion.tab_a1(runs, include_smoke=True)
    assert set(table.attrs["selection"].other_table["data and settings"]) == {"digits; smoke run"}
    both = _write(tmp_path / "b", _infusion("sm-3", smoke=True, config={"algo.omega": 0.05}), _infusion("real"))
    summary = build_report(tmp_path / "b", tmp_path / "out", filters=ReportFilter(include_smoke=True))
    section = summary.index.read_text().split("### Infusion TAB A.1: test lower bound")[1].split("###")[0]
    assert "`sm-3` (smoke run)" in section and "`real` (smoke run)" not in section and "`real`" in section
    assert both["run_id"].tolist()  # both written
    # A figure drawing smoke runs says so in its title; without them it does not.
    metrics = read_metrics(tmp_path)
    assert "with smoke runs" in infusion.fig_a1(runs, metrics, include_smoke=True)._suptitle.get_text()
    real = _write(tmp_path / "r", _infusion("real-2", "digits"))
    assert "smoke" not in infusion.fig_a1(real, read_metrics(tmp_path / "r"))._suptitle.get_text()
