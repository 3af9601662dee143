"""Progress (bar / log lines, showing the objective) and the TensorBoard / MLflow / W&B mirrors of the store."""

from __future__ import annotations

import io
import logging
import re
import sys
import types

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import raygen
from raygen.algorithms import Artifact
from raygen.cli import app
from raygen.config import build_config
from raygen.engine.loggers import (
    Loggers,
    Progress,
    TensorBoardLogger,
    display_mode,
    objective,
    objective_values,
)
from raygen.results import read_metrics, read_runs

SMALL = {"eval.parzen_samples": 50, "eval.test_examples": 50, "eval.train_examples": 50, "data.toy_samples": 200,
         "train.batch_size": 20, "train.log_every": 5, "train.eval_every": 10, "train.checkpoint_every": 10}


def _accumulator(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _store_curves(results, run_id):
    """{'split/metric': [(step, value), ...]} in the order the store wrote them."""
    frame = read_metrics(results, [run_id]).sort_values(["time", "step"], kind="stable")
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in frame.itertuples():
        curves.setdefault(f"{row.split}/{row.metric}", []).append((int(row.step), float(row.value)))
    return curves


# ---------------------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_event_files_hold_every_curve_of_the_store(toy_algorithm, tmp_path):
    pytest.importorskip("tensorboard")
    run = raygen.train(toy_algorithm, "toy2d:circle", results=tmp_path, steps=30, overrides=SMALL,
                       tensorboard=True, progress=False)
    run.evaluate(parzen_samples=40)  # a second writer on the run: its values must reach TensorBoard too

    expected = _store_curves(tmp_path, run.id)
    assert {"train/nll", "valid/nll", "test/nll", "test/parzen_ll"} <= expected.keys()
    acc = _accumulator(tmp_path / "tensorboard" / run.id)
    assert set(acc.Tags()["scalars"]) == set(expected)
    for tag, points in expected.items():
        # two writers leave two event files; TensorBoard reads them in file-name order, which within one second
        # is arbitrary, so the events are put in the order they were written
        got = [(e.step, e.value) for e in sorted(acc.Scalars(tag), key=lambda e: (e.wall_time, e.step))]
        assert [s for s, _ in got] == [s for s, _ in points], tag
        np.testing.assert_allclose([v for _, v in got], [v for _, v in points], rtol=1e-6, err_msg=tag)
    # the training curve really is a curve: one point per log_every updates
    assert [s for s, _ in expected["train/nll"]] == [5, 10, 15, 20, 25, 30]


def test_tensorboard_gets_images_not_other_files(toy_algorithm, tmp_path):
    pytest.importorskip("tensorboard")
    cfg = build_config(algorithm=toy_algorithm, dataset="toy2d:circle", overrides={"log.tensorboard": True})
    pixels = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3) * 5
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    loggers = Loggers([TensorBoardLogger(cfg, "r1", tmp_path)])
    loggers(7, {"valid/x": 1.5}, [Artifact("s.png", "image", buf.getvalue()), Artifact("t.txt", "text", b"hi")])
    loggers.close()

    acc = _accumulator(tmp_path / "tensorboard" / "r1")
    assert acc.Tags()["images"] == ["artifacts/s.png"]
    (event,) = acc.Images("artifacts/s.png")
    assert (event.step, event.width, event.height) == (7, 5, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")),
                                  pixels)
    assert [(e.step, e.value) for e in acc.Scalars("valid/x")] == [(7, 1.5)]


# ---------------------------------------------------------------------------------------------- MLflow, W&B


def test_mlflow_run_holds_every_metric_and_the_config(toy_algorithm, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    run = raygen.train(toy_algorithm, "toy2d:circle", results=tmp_path / "store", steps=20, overrides=SMALL,
                       mlflow=True, mlflow_uri=uri, mlflow_experiment="tests", progress=False)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tests")
    (found,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`raygen.run_id` = '{run.id}'")
    assert found.info.status == "FINISHED"
    assert found.data.params["train.steps"] == "20" and found.data.params["algorithm"] == toy_algorithm
    expected = _store_curves(tmp_path / "store", run.id)
    assert set(found.data.metrics) == set(expected)
    for key, points in expected.items():
        history = sorted(client.get_metric_history(found.info.run_id, key), key=lambda m: (m.timestamp, m.step))
        got = sorted((m.step, m.value) for m in history)
        assert [s for s, _ in got] == sorted(s for s, _ in points), key
        np.testing.assert_allclose([v for _, v in got], [v for _, v in sorted(points)], rtol=1e-12, err_msg=key)


def test_wandb_adapter_sends_every_metric_at_its_update(toy_algorithm, tmp_path, monkeypatch):
    """wandb is an optional extra (not installed in CI): a stand-in module records what the adapter calls."""
    calls = {"init": [], "log": [], "finish": []}

    class FakeRun:
        def log(self, values, step):
            calls["log"].append((step, dict(values)))

        def finish(self, exit_code):
            calls["finish"].append(exit_code)

    def init(**kwargs):
        calls["init"].append(kwargs)
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init, Image=object))
    run = raygen.train(toy_algorithm, "toy2d:circle", results=tmp_path, steps=20, overrides=SMALL, wandb=True,
                       wandb_project="p", wandb_mode="offline", progress=False)
    (kwargs,) = calls["init"]
    assert (kwargs["project"], kwargs["name"], kwargs["mode"], kwargs["resume"]) == ("p", run.id, "offline", "allow")
    assert kwargs["config"]["train"]["steps"] == 20
    sent: dict[str, list[tuple[int, float]]] = {}
    for step, values in calls["log"]:
        for key, value in values.items():
            sent.setdefault(key, []).append((step, value))
    expected = _store_curves(tmp_path, run.id)
    assert sent.keys() == expected.keys()
    for key, points in expected.items():
        assert [s for s, _ in sent[key]] == [s for s, _ in points], key
        np.testing.assert_allclose([v for _, v in sent[key]], [v for _, v in points], rtol=1e-12, err_msg=key)
    assert calls["finish"] == [0]


@pytest.mark.parametrize("switch, module", [("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "tensorboardX")])
def test_a_logger_whose_package_is_missing_is_one_line_naming_the_extra(toy_algorithm, tmp_path, monkeypatch,
                                                                       switch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    res = CliRunner().invoke(app, ["train", toy_algorithm, "--dataset", "toy2d:circle", "--steps", "5",
                                   "--results", str(tmp_path), f"log.{switch}=true"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    expected = (f"error: log.{switch}=true needs the {module} package, which is not installed: "
                f"pip install 'raygen[{switch}]' (or set log.{switch}=false)")
    assert lines == [expected]
    assert read_runs(tmp_path).empty  # refused before the run row was written


def test_a_logger_that_fails_mid_run_is_switched_off_and_the_store_keeps_everything(caplog):
    calls = []

    class Flaky:
        name = "flaky"

        def metrics(self, step, metrics):
            calls.append(step)
            if step == 2:
                raise ConnectionError("server went away")

        def image(self, step, name, data):
            pass

        def flush(self):
            pass

        def close(self, ok):
            calls.append(("closed", ok))

    loggers = Loggers([Flaky()], run_id="r")
    with caplog.at_level(logging.WARNING, logger="raygen.engine.loggers"):
        for step in (1, 2, 3):
            loggers(step, {"train/x": 1.0})
    assert calls == [1, 2, ("closed", False)]  # not called again after failing
    assert "the flaky logger failed (ConnectionError: server went away)" in caplog.text


def test_a_logger_that_cannot_start_leaves_the_run_running(toy_algorithm, tmp_path, caplog):
    pytest.importorskip("mlflow")
    with caplog.at_level(logging.WARNING, logger="raygen.engine.loggers"):
        run = raygen.train(toy_algorithm, "toy2d:circle", results=tmp_path, steps=10, overrides=SMALL,
                           mlflow=True, mlflow_uri="nosuchscheme://x", progress=False)
    assert run.status == "completed"
    assert "the mlflow logger could not start" in caplog.text


# ---------------------------------------------------------------------------------------------- progress


def test_the_objective_is_the_selection_metric_not_the_step_terms():
    walkback = build_config(algorithm="walkback", dataset="toy2d:circle")
    assert objective(walkback) == "lower_bound"  # Walkback.selection
    assert objective(walkback.with_overrides({"train.select_metric": "loss", "train.select_mode": "min"})) == "loss"
    report = {"train/nll_step_01": 1.0, "train/nll_step_02": 2.0, "train/loss": 3.0, "valid/loss": 4.0,
              "valid/lower_bound": -5.0}
    assert objective_values(report, "lower_bound") == {"train/loss": 3.0, "valid/lower_bound": -5.0}


def test_progress_log_lines_when_stderr_is_not_a_terminal(toy_algorithm, tmp_path, caplog):
    assert display_mode() == "lines"  # pytest captures stderr: not a terminal
    with caplog.at_level(logging.INFO, logger="raygen.engine.loggers"):
        run = raygen.train(toy_algorithm, "toy2d:circle", results=tmp_path, steps=30, overrides=SMALL,
                           progress_every=10)
    lines = [r.getMessage() for r in caplog.records if "update " in r.getMessage()]
    assert [re.search(r"update (\d+)/30", line).group(1) for line in lines] == ["10", "20", "30"]
    curve = run.curve("valid/nll")
    for line, step in zip(lines, (10, 20, 30)):
        assert f"valid/nll={curve[step]:.4g}" in line  # the objective (meanfit declares none: nll)
        assert re.search(r"upd/s, \S+ elapsed, ETA \S+$", line), line
    assert lines[-1].endswith("ETA 00:00")


def test_terminal_bar_shows_the_objective_and_log_lines_do_not_collide_with_it(monkeypatch):
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = logging.StreamHandler(sys.stderr)
    raygen_log = logging.getLogger("raygen")
    raygen_log.addHandler(handler)
    monkeypatch.setattr(raygen_log, "level", logging.INFO)
    cfg = build_config(algorithm="walkback", dataset="toy2d:circle", overrides={"train.steps": 20})
    try:
        with Progress(cfg, "run-x", mode="bar") as bar:
            bar.update(5, {"train/nll_step_01": 9.0, "train/loss": 1.25})
            logging.getLogger("raygen.test").info("a log line")
            bar.update(10, {"valid/lower_bound": -3.5})
    finally:
        raygen_log.removeHandler(handler)
    out = terminal.getvalue()
    assert re.search(r"(^|[\r\n])a log line\n", out), repr(out)  # on a line of its own, not after the bar
    assert out.count("a log line") == 1  # once: the redirect must not add a second handler
    last = out.rstrip("\n").split("\r")[-1]
    assert "train/loss=1.25" in last and "valid/lower_bound=-3.5" in last and "10/20" in last
    assert "nll_step" not in out


def test_display_mode_in_a_notebook_kernel(monkeypatch):
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert display_mode() == "notebook"
    assert display_mode(enabled=False) == "off"
    shell.config = {}  # a terminal IPython is not a notebook
    assert display_mode() == "lines"
