"""The `raygen` command end to end (in-process through typer's runner)."""

import pytest
from typer.testing import CliRunner

from raygen.cli import app
from raygen.results import read_artifacts, read_metrics, read_runs

runner = CliRunner()
SMALL = ["eval.parzen_samples=100", "eval.test_examples=100", "data.toy_samples=300", "train.batch_size=50"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_train_sample_evaluate(toy_algorithm, tmp_path):
    res = invoke("train", toy_algorithm, "--dataset", "toy2d:spiral", "--steps", 15, "--seed", 4,
                 "--results", tmp_path, "--device", "cpu", *SMALL)
    assert res.exit_code == 0, res.output
    run_id = res.output.strip().splitlines()[-1]
    row = read_runs(tmp_path).iloc[0]
    assert (row.run_id, row.steps, row.seed, row.status) == (run_id, 15, 4, "completed")

    res = invoke("sample", run_id, "--results", tmp_path, "--seed", 2)
    assert res.exit_code == 0, res.output
    assert "sample-seed2-params.txt" in set(read_artifacts(tmp_path).name)

    n_before = len(read_metrics(tmp_path))
    res = invoke("evaluate", "latest", "eval.parzen_samples=50", "--results", tmp_path)
    assert res.exit_code == 0, res.output
    assert "test/parzen_ll" in res.output
    assert len(read_metrics(tmp_path)) > n_before


def test_config_file_and_override(toy_algorithm, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("algorithm: meanfit\ndataset: toy2d:circle\ntrain:\n  steps: 7\n  lr: 0.01\n")
    res = invoke("config", "meanfit", "--dataset", "toy2d:circle", "--config", cfg, "train.lr=0.5")
    assert res.exit_code == 0, res.output
    assert "steps: 7" in res.output and "lr: 0.5" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "meanfit", "--dataset", "toy2d:circle", "train.lrr=3"], "unknown config key 'train.lrr'"),
        (["train", "meanfit", "--dataset", "nosuchdata"], "unknown dataset 'nosuchdata'"),
        (["train", "nosuchalgo", "--dataset", "digits"], "unknown algorithm 'nosuchalgo'"),
        (["evaluate", "nosuchrun", "--results", "/nonexistent"], "no runs"),
        (["evaluate", "x", "train.lr=3"], "only eval.* overrides"),
    ],
)
def test_bad_input_fails_with_clear_message(toy_algorithm, args, message):
    res = invoke(*args)
    assert res.exit_code == 2
    assert message in res.output


def test_datasets_lists_presence(tmp_path):
    res = runner.invoke(app, ["datasets", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "digits" in res.output and "toy2d:swissroll" in res.output and "embedded" in res.output
    assert row(res.output, "mnist")[2] == "no"


def test_datasets_says_partial_when_only_some_files_are_there(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    res = runner.invoke(app, ["datasets", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert row(res.output, "mnist")[2] == "partial"
    assert row(res.output, "digits")[2] == "yes"


def row(table: str, name: str) -> list[str]:
    """The cells of the first line of a rich table whose first cell is `name`."""
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1] == name:
            return cells[1:]
    raise AssertionError(f"no row {name!r} in:\n{table}")


def test_sample_latest_says_the_run_failed_when_it_has_no_checkpoint(tmp_path):
    from raygen.config import build_config
    from raygen.results import RunRecorder

    store = tmp_path / "store"
    recorder = RunRecorder(store, build_config(algorithm="infusion", dataset="digits"))
    recorder.write_run("failed", error="NonFiniteLossError: the loss became NaN at update 3")
    result = runner.invoke(app, ["sample", "latest", "--results", str(store)])
    assert result.exit_code != 0
    assert "has no checkpoint" in result.output
    assert "failed: NonFiniteLossError: the loss became NaN at update 3" in result.output


def _one_error_line(res) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_a_file_given_as_the_store_is_named_a_file_not_missing(tmp_path):
    """runs/compact/report/dashboard given a FILE: compact, report and dashboard said it "does not exist"."""
    store = tmp_path / "afile"
    store.write_text("not a store")
    for args in (["runs", "--results", store], ["compact", "--results", store], ["report", store, "--out",
                 tmp_path / "rep"], ["dashboard", store, "--html", "--out", tmp_path / "d.html"]):
        line = _one_error_line(invoke(*args))
        assert f"{store} is a file, not a results store directory" in line, (args, line)
    assert store.read_text() == "not a store" and not (tmp_path / "rep").exists()
    assert "does not exist" in _one_error_line(invoke("compact", "--results", tmp_path / "nope"))


def test_dashboard_html_file_after_the_store_names_the_out_option(tmp_path, monkeypatch):
    """`raygen dashboard R --html old.html` (--html once took the file) got typer's "unexpected extra argument"
    box; it names the spelling that works, and writes nothing."""
    from analysis.synthetic import SyntheticRun, write_run

    store = tmp_path / "R"
    write_run(store, SyntheticRun("inf-0", "infusion", "mnist", finals={"valid/lower_bound": 1.0}))
    monkeypatch.chdir(tmp_path)
    for args in (["dashboard", store, "--html", "old.html"], ["dashboard", "--html", "old.html", store]):
        assert "`--html --out old.html`" in _one_error_line(invoke(*args))
    assert "unexpected argument S" in _one_error_line(invoke("dashboard", store, "S"))
    assert not (tmp_path / "old.html").exists() and not (tmp_path / "dashboard.html").exists()
    res = invoke("dashboard", store, "--html", "--out", "old.html")
    assert res.exit_code == 0 and (tmp_path / "old.html").is_file(), res.output
