"""The first-run polish of the `raygen` command (issue 13): exact budgets, `raygen runs`, help texts,
`--version`, `raygen config --explain`, and a quiet `--workers` run."""

import os
import subprocess
import sys

import click
import pytest
import typer
from typer.testing import CliRunner

from raygen.cli import app
from raygen.results import read_runs

runner = CliRunner()
TOY = ["data.toy_samples=300", "train.batch_size=50", "eval.final=false"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("steps", [20, 45])
def test_walkback_online_updates_stop_exactly_at_the_budget(tmp_path, steps):
    # 30 fixed walkback steps, one update each: 20 ends inside the first trajectory, 45 inside the second.
    res = invoke("train", "walkback", "--dataset", "toy2d:swissroll", "--steps", steps, "--results", tmp_path,
                 "algo.walkback_steps=30", "algo.update_mode=online", *TOY)
    assert res.exit_code == 0, res.output
    assert int(read_runs(tmp_path).iloc[0]["steps"]) == steps
    from raygen.engine.local import read_checkpoint

    run_id = read_runs(tmp_path).iloc[0]["run_id"]
    payload = read_checkpoint(tmp_path / "files" / run_id / "checkpoint.pt")
    assert payload["algorithm"]["updates"] == steps


def _options(command: click.Command, path: str):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, f"{path} {name}")


def test_every_option_and_argument_has_help_text():
    missing = []
    for path, command in _options(typer.main.get_command(app), "raygen"):
        for param in command.params:
            documented = isinstance(param, click.Option) or hasattr(param, "help")  # typer's arguments have help
            if documented and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path}: {param.name}")
    assert not missing, missing


def test_version():
    from raygen import __version__

    res = invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"raygen {__version__}"


def test_results_option_is_spelled_the_same_in_every_command():
    for path, command in _options(typer.main.get_command(app), "raygen"):
        names = {n for p in command.params for n in getattr(p, "opts", [])}
        if any("result" in n for n in names):
            assert "--results" in names, (path, names)


def test_config_explain_names_each_fields_source_and_description(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  eval_every: 7\n")
    res = invoke("config", "infusion", "-d", "digits", "--config", cfg, "--explain", "algo.omega=0.02")
    assert res.exit_code == 0, res.output
    lines = {line.split(" = ")[0]: line for line in res.output.splitlines()}
    assert "[override]" in lines["algo.omega"] and "ω" in lines["algo.omega"]
    assert "[file]" in lines["train.eval_every"]
    assert "[preset]" in lines["train.lr"]  # infusion's image preset: Adam 1e-3
    assert "[preset]" in lines["algo.net.hidden"]  # the digits preset
    assert "[default]" in lines["train.log_every"] and "report training metrics" in lines["train.log_every"]
    # given on the command line, not defaults (they were labelled [default])
    assert "[argument]" in lines["algorithm"] and "[argument]" in lines["dataset"]
    cfg.write_text("algorithm: infusion\ndataset: mnist\n")  # the file's dataset loses to --dataset
    res = invoke("config", "infusion", "-d", "digits", "--config", cfg, "--explain")
    lines = {line.split(" = ")[0]: line for line in res.output.splitlines()}
    assert "'digits'" in lines["dataset"] and "[argument]" in lines["dataset"]


def test_runs_refuses_a_folder_that_is_not_a_store(tmp_path):
    res = invoke("runs", "--results", tmp_path / "nope")
    assert res.exit_code == 2 and "does not exist" in res.output
    res = invoke("runs", "--results", tmp_path)
    assert res.exit_code == 2 and "not a raygen results store" in res.output


def test_runs_filters_and_metric_columns(toy_algorithm, tmp_path):
    for seed in (1, 2):
        res = invoke("train", toy_algorithm, "--dataset", "toy2d:circle", "--steps", 5, "--seed", seed,
                     "--results", tmp_path, "data.toy_samples=200", "train.batch_size=20", "eval.parzen_samples=50",
                     "eval.test_examples=50")
        assert res.exit_code == 0, res.output
    rows = read_runs(tmp_path)
    res = invoke("runs", "--results", tmp_path, "--metric", "test/parzen_ll")
    assert res.exit_code == 0, res.output
    header, *lines = res.output.splitlines()  # not a terminal: plain columns
    # the in-training check and the full evaluation are different protocols: the column names say which is which
    assert header.split() == ["run_id", "algorithm", "dataset", "status", "step", "wall_s", "objective",
                              "valid(quick)", "test(final)", "test/parzen_ll"]
    assert len(lines) == 2
    row = rows.set_index("run_id").loc[lines[0].split()[0]]
    cells = lines[0].split()
    assert cells[4] == "5" and float(cells[9]) == pytest.approx(row["final.test/parzen_ll"], rel=1e-3)
    assert invoke("runs", "--results", tmp_path, "--status", "failed").output.splitlines()[1:] == []
    assert invoke("runs", "--results", tmp_path, "--algorithm", "walkback").output.splitlines()[1:] == []
    assert len(invoke("runs", "--results", tmp_path, "--algorithm", toy_algorithm).output.splitlines()) == 3
    assert invoke("runs", "--results", tmp_path, "--sweep", "nosuchsweep").output.splitlines()[1:] == []


@pytest.mark.ray
def test_workers_run_prints_progress_and_nothing_from_ray(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DISABLE_USAGE_STATS": "1"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-m", "raygen.cli", "train", "walkback", "--dataset", "toy2d:swissroll", "--workers", "2",
         "--steps", "20", "--results", str(tmp_path), *TOY],
        env=env, capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TrainingReport(" not in out.stderr and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "Found multiple active Ray instances" not in out.stderr
    assert "update 20/20" in out.stderr, out.stderr[-3000:]  # rank 0's progress line, as a local run prints it
    assert int(read_runs(tmp_path).iloc[0]["steps"]) == 20
