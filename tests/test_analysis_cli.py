"""`raygen report` / `raygen dashboard` as typer commands (raygen/analysis_cli.py), on a tiny store."""

from __future__ import annotations

import pandas as pd
import typer
from typer.testing import CliRunner

from analysis.synthetic import SyntheticRun, write_run
from raygen.analysis_cli import register


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _store(root):
    for seed, lb in ((0, 1000.0), (1, 1010.0)):
        write_run(root, SyntheticRun(f"inf-{seed}", "infusion", "mnist", seed=seed,
                                     config={"algo.steps": 5, "algo.omega": 0.1, "algo.schedule": "increasing"},
                                     finals={"test/lower_bound": lb}))
    return root


def test_report_command_writes_the_index_and_tables(tmp_path):
    store = _store(tmp_path / "results")
    result = CliRunner().invoke(_app(), ["report", str(store), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "README.md").is_file()
    table = pd.read_csv(tmp_path / "out" / "tables" / "infusion_tab_a1.csv")
    row = table[(table.steps == 5) & (table["infusion rate"] == 0.1)].iloc[0]
    assert row["lower_bound ours"] == 1005.0 and row["lower_bound n"] == 2
    assert row["lower_bound published"] == 1448.66


def test_dashboard_command_exports_html(tmp_path):
    store = _store(tmp_path / "results")
    result = CliRunner().invoke(_app(), ["dashboard", str(store), "--html", "--out", str(tmp_path / "d.html")])
    assert result.exit_code == 0, result.output
    assert "runs: infusion" in (tmp_path / "d.html").read_text()


def test_dashboard_html_never_takes_results_for_its_output(tmp_path, monkeypatch):
    """`--html --results R` once wrote the page to a file named `--results`: --results is always the store."""
    store = _store(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(_app(), ["dashboard", "--html", "--results", str(store)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "--results").exists()
    assert "runs: infusion" in (tmp_path / "dashboard.html").read_text()


def test_dashboard_old_html_file_spelling_names_the_new_one(tmp_path, monkeypatch):
    """`--html FILE` (the old spelling) put FILE in the positional store: the error named a missing store, or two
    stores with --results. It names the new spelling instead, and writes nothing."""
    store = _store(tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    for command in (["dashboard", "--html", "page.html", "--results", str(store)], ["dashboard", "--html", "page.html"]):
        result = CliRunner().invoke(_app(), command)
        assert result.exit_code == 2, result.output
        assert "--html --out page.html" in result.output and "two results stores" not in result.output
        assert not (tmp_path / "page.html").exists()


def test_missing_store_is_a_clear_error(tmp_path):
    for command in (["report", str(tmp_path / "nope")], ["dashboard", str(tmp_path / "nope"), "--html"]):
        result = CliRunner().invoke(_app(), command)
        assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "empty").mkdir()  # the same rule as `raygen runs`: a store holds runs/
    (tmp_path / "page.parquet").write_bytes(b"PAR1")
    for path, why in ((tmp_path / "empty", "no runs/ folder"), (tmp_path / "page.parquet", "is a file")):
        for command in (["report", str(path)], ["dashboard", str(path), "--html"]):
            result = CliRunner().invoke(_app(), command)
            assert result.exit_code == 2 and why in result.output, result.output


def test_report_filters_on_the_command_line(tmp_path):
    store = _store(tmp_path / "results")
    write_run(store, SyntheticRun("dig-0", "infusion", "digits",
                                  config={"algo.steps": 5, "algo.omega": 0.1, "algo.schedule": "increasing"},
                                  finals={"test/lower_bound": -14.0}))
    result = CliRunner().invoke(_app(), ["report", str(store), "--out", str(tmp_path / "out"), "--run", "inf-0",
                                         "--run", "dig-0", "--include-smoke"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "tables" / "infusion_tab_a1.csv")
    row = table[(table.steps == 5) & (table["infusion rate"] == 0.1)].iloc[0]
    assert row["lower_bound ours"] == 1000.0 and row["lower_bound n"] == 1  # inf-1 filtered out, digits elsewhere
    other = pd.read_csv(tmp_path / "out" / "tables" / "infusion_tab_a1_other_data.csv")
    assert other["lower_bound ours"].tolist() == [-14.0]
    index = (tmp_path / "out" / "README.md").read_text()
    assert "run in inf-0, dig-0; smoke runs included" in index
    # A filter value that names no run (a typo) is refused in one line, before anything is written.
    result = CliRunner().invoke(_app(), ["report", str(store), "--out", str(tmp_path / "o2"), "--dataset", "mnist",
                                         "--sweep", "none-such"])
    assert result.exit_code == 2, result.output
    assert "--sweep none-such: no such sweep" in result.output and not (tmp_path / "o2").exists()
