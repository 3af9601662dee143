"""`raygen report` as a tester met it: filters that match nothing, the .runs.csv `smoke` column, and the reason
a curve figure gives for the runs it leaves out."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import infusion
from analysis.load import load_store
from analysis.protocol import selection_of
from analysis.report import ReportFilter, ReportFilterError, build_report
from analysis.synthetic import SyntheticRun, write_run

INFUSION = {"algo.steps": 5, "algo.omega": 0.1, "algo.schedule": "increasing", "algo.alpha0": 0.0}


def _run(run_id: str, dataset: str = "mnist", config: dict | None = None, smoke: bool = False) -> SyntheticRun:
    run = SyntheticRun(run_id, "infusion", dataset, config={**INFUSION, **(config or {})},
                       curves={"valid/lower_bound": ([10, 20], [1.0, 2.0])},
                       finals={"test/lower_bound": 1000.0, "valid/lower_bound": 990.0})
    run.smoke = smoke
    return run


def _write(root, *runs: SyntheticRun) -> None:
    for run in runs:
        write_run(root, run)
        if run.smoke:  # the run row's `smoke` column, as `raygen sweep --smoke` sets it
            path = root / "runs" / f"{run.run_id}.parquet"
            frame = pd.read_parquet(path)
            frame["smoke"] = True
            frame.to_parquet(path, index=False)


@pytest.mark.parametrize("filters, named", [
    (ReportFilter(runs=("nope",)), "--run nope"),
    (ReportFilter(sweeps=("nosuch",)), "--sweep nosuch"),
    (ReportFilter(datasets=("MNIST",)), "did you mean mnist?"),
])
def test_a_filter_matching_no_run_is_refused_before_writing(tmp_path, filters, named):
    _write(tmp_path / "store", _run("mn-1"))
    with pytest.raises(ReportFilterError, match=named):
        build_report(tmp_path / "store", tmp_path / "out", filters=filters)
    assert not (tmp_path / "out").exists()


def test_a_prefix_matching_several_runs_keeps_them_all(tmp_path):
    _write(tmp_path / "store", _run("mn-1"), _run("mn-2"), _run("dg-1", "digits"))
    store = ReportFilter(runs=("mn-",)).apply(load_store(tmp_path / "store"))
    assert sorted(store.runs["run_id"]) == ["mn-1", "mn-2"]


def test_runs_csv_marks_a_left_out_smoke_run_as_smoke(tmp_path):
    _write(tmp_path / "store", _run("mn-1"), _run("sm-1", smoke=True))
    build_report(tmp_path / "store", tmp_path / "out")
    ledger = pd.read_csv(tmp_path / "out" / "tables" / "infusion_tab_a1.runs.csv").set_index("run_id")
    assert bool(ledger.loc["sm-1", "smoke"]) and not bool(ledger.loc["sm-1", "used"])
    assert not bool(ledger.loc["mn-1", "smoke"])


def test_a_curve_figure_names_no_other_data_table_for_the_runs_it_leaves_out(tmp_path):
    root = tmp_path / "store"
    _write(root, _run("dg-1", "digits"), _run("dg-2", "digits"), _run("mt-1", config={"data.mnist_split": "test-only"}))
    store = load_store(root)
    ledger = selection_of(infusion.fig_a1(store.runs, store.metrics)).ledger().set_index("run_id")
    assert ledger.loc["dg-1", "used"] and ledger.loc["dg-2", "used"]
    why = ledger.loc["mt-1", "why"]
    assert "the figure draws digits" in why and "other data' table" not in why


def test_hostile_strings_in_a_table_stay_data_in_markdown_and_latex():
    from analysis.render import to_latex, to_markdown

    frame = pd.DataFrame({"run": ["<!--<script>", "a|b", "x\n\ny", "1 & 2"], "value": [1.0, 2.0, 3.0, 4.0]})
    md = to_markdown(frame)
    assert "<!--" not in md and "&lt;!--&lt;script>" in md and r"a\|b" in md and "1 &amp; 2" in md
    assert len([line for line in md.splitlines() if line.startswith("|")]) == 2 + len(frame)  # one line a row
    tex = to_latex(frame, "t")
    assert r"\textless{}!--\textless{}script\textgreater{}" in tex and r"a\textbar{}b" in tex and r"1 \& 2" in tex
    assert "x\n\ny" not in tex and "\n\n" not in tex.split(r"\begin{tabular}")[1].split(r"\end{tabular}")[0]


def test_effects_figure_draws_no_empty_panel_for_a_parameter_inactive_in_every_trial(tmp_path):
    from analysis import sweeps

    spec = {"name": "cond", "metric": {"name": "valid/lower_bound", "goal": "maximize"},
            "parameters": {"algo.steps": {"values": [1, 5]},
                           "omega_15": {"path": "algo.omega", "values": [0.01, 0.02], "when": {"algo.steps": 15}}}}
    for i, steps in enumerate([1, 5]):
        run = SyntheticRun(f"cond-{i}", "infusion", "digits", config={**INFUSION, "algo.steps": steps},
                           finals={"valid/lower_bound": float(i)}, sweep_id="cond", trial_id=f"t{i}",
                           params={"algo.steps": steps})
        write_run(tmp_path, run)
    store = load_store(tmp_path)
    fig = sweeps.effects_figure(store.runs, "cond", {"cond": spec})
    assert [ax.get_xlabel() for ax in fig.axes] == ["algo.steps"]
    assert "not drawn: omega_15" in fig._suptitle.get_text()


def test_pictures_of_different_sizes_share_one_pixel_scale_and_rows_fit_them(tmp_path):
    """A 400 px picture beside a 1200 px one was stretched to the wide one's panel (its labels 3x larger)."""
    import numpy as np
    from PIL import Image

    from analysis.figures import image_panel

    Image.fromarray(np.zeros((300, 400), np.uint8)).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((900, 1200), np.uint8)).save(tmp_path / "big.png")
    rows = pd.DataFrame({"path": ["small.png", "big.png"], "run_id": ["a", "b"], "step": [1, 1]})
    fig = image_panel(tmp_path, rows, title="t", ncols_max=1)
    inches_per_px = []
    for ax, width_px in zip(fig.axes, (400, 1200)):
        left, right, _, _ = ax.get_images()[0].get_extent()
        lo, hi = ax.get_xlim()
        ax_in = ax.get_position().width * fig.get_figwidth()
        inches_per_px.append((right - left) / (hi - lo) * ax_in / width_px)
    assert inches_per_px[0] == pytest.approx(inches_per_px[1], rel=1e-6)
    heights = [ax.get_position().height * fig.get_figheight() for ax in fig.axes]
    assert heights[0] / heights[1] == pytest.approx(300 / 900, rel=1e-3)  # no empty band under the small one


def test_report_out_inside_a_store_folder_is_refused(tmp_path):
    from analysis.report import ReportError

    _write(tmp_path / "store", _run("mn-1"))
    with pytest.raises(ReportError, match=r"inside the results store folder"):
        build_report(tmp_path / "store", tmp_path / "store" / "runs" / "report")
    assert len(pd.read_parquet(tmp_path / "store" / "runs")) == 1  # plain readers still read the folder
