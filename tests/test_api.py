"""The Python API (raygen.train / raygen.open / Run / Store), driven as a notebook would."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import raygen
from raygen.cli import app
from raygen.config import ConfigError
from raygen.results import read_artifacts, read_metrics

SMALL = {"eval.parzen_samples": 50, "eval.test_examples": 50, "eval.train_examples": 50, "eval.repeats": 2,
         "data.toy_samples": 200, "train.batch_size": 20, "train.log_every": 5, "train.eval_every": 10,
         "train.checkpoint_every": 10}


def test_import_is_light_and_dir_shows_the_api():
    code = ("import sys, raygen; heavy = [m for m in ('torch', 'pandas', 'ray', 'pyarrow') if m in sys.modules];"
            "print(heavy, sorted(n for n in dir(raygen) if not n.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy, names = out.strip().split("] ", 1)
    assert heavy == "["
    for name in ("train", "open", "sweep", "Run", "Store", "sample_run", "evaluate_run"):
        assert f"'{name}'" in names


def test_notebook_train_sample_read(tmp_path):
    """train → read results → sample → evaluate → reopen the store, all through the public API."""
    run = raygen.train("walkback", "toy2d:circle", results=tmp_path, steps=20, seed=3, overrides=SMALL,
                       progress=False)
    assert run.status == "completed"
    assert run.config.algorithm == "walkback" and run.config.seed == 3 and run.config.train.steps == 20

    # metrics: the run's rows of the store, and final values = each metric's latest finite value
    metrics = run.metrics
    assert len(metrics) == len(read_metrics(tmp_path)) and set(metrics.run_id) == {run.id}
    last = metrics[(metrics.split == "test") & (metrics.metric == "lower_bound")].value.iloc[-1]
    assert run.final["test/lower_bound"] == pytest.approx(last)
    curve = run.curve("valid/lower_bound")
    assert list(curve.index) == sorted(curve.index) and curve.index[-1] == run.row["steps"]
    with pytest.raises(KeyError, match="no metric 'valid/nope'"):
        run.curve("valid/nope")
    assert {"samples.png", "checkpoint.pt"} <= set(run.artifacts.name)

    # samples as an array: shaped like the data, reproducible by seed
    x = run.sample(32, seed=5)
    assert x.shape == (32, 2) and np.isfinite(x).all()
    np.testing.assert_array_equal(run.sample(32, seed=5), x)
    assert not np.array_equal(run.sample(32, seed=6), x)
    before = len(run.artifacts)
    run.sample(8, seed=7, pictures=True)
    pictures = run.artifacts.iloc[before:]
    assert set(pictures.name) == {"sample-seed7-samples.png", "sample-seed7-chains.png"}
    for path in pictures.path:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # evaluate again: the numbers are returned, stored, and become the final values
    values = run.evaluate(parzen_samples=40, seed=1)
    assert run.final["test/parzen_ll"] == pytest.approx(values["test/parzen_ll"])
    stored = run.metrics
    assert (stored[(stored.split == "test") & (stored.metric == "parzen_ll")].value.iloc[-1]
            == pytest.approx(values["test/parzen_ll"]))

    # the store, reopened as another notebook cell would
    store = raygen.open(tmp_path)
    assert list(store.runs.run_id) == [run.id] and list(store.runs.status) == ["completed"]
    assert store.run("latest").id == run.id == store.run(run.id[:12]).id
    assert len(store.metrics) == len(stored)
    assert set(store.artifacts.name) == set(read_artifacts(tmp_path).name)


def test_samples_come_from_the_trained_model(toy_algorithm, tmp_path):
    """MeanFit is a diagonal Gaussian: Run.sample's array must have the checkpoint's mean and std."""
    run = raygen.train(toy_algorithm, "toy2d:circle", results=tmp_path, steps=30, overrides={**SMALL, "train.lr": 0.05},
                       progress=False)
    payload = torch.load(run.files / "checkpoint.pt", weights_only=True)
    chosen = payload["selection"]
    state = chosen["best_model"] if chosen["best_step"] != payload["algorithm"]["updates"] else \
        payload["algorithm"]["model"]  # the validation-selected model, which the final evaluation scored
    mean, std = state["mean"].numpy(), state["log_std"].exp().numpy()
    x = run.sample(20_000, seed=0)
    se = std / np.sqrt(len(x))
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se)
    np.testing.assert_allclose(x.std(0), std, rtol=0.05)


def test_evaluate_and_sample_use_the_validation_selected_model(toy_algorithm, tmp_path):
    """The final checkpoint holds the last update and, beside it, the state selected on validation, which is
    the one the final evaluation scored: `evaluate` and `sample` must score and draw from that one too."""
    run = raygen.train(toy_algorithm, "toy2d:circle", results=tmp_path, steps=30,
                       overrides={**SMALL, "train.eval_every": 10}, progress=False)
    path = run.files / "checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    # make the selected state an earlier, clearly different one (a mean far from the data)
    selected = {"mean": torch.tensor([3.0, -2.0]), "log_std": torch.tensor([0.5, -0.25])}
    payload["selection"].update(best_step=10, best_model=selected)
    torch.save(payload, path)

    from raygen.config import build_config
    from raygen.data import load_dataset

    config = build_config(algorithm=toy_algorithm, dataset="toy2d:circle", overrides=SMALL)
    data = load_dataset(config.dataset, config.data).splits["test"][: SMALL["eval.test_examples"]].reshape(-1, 2)
    expected = -torch.distributions.Normal(selected["mean"], selected["log_std"].exp()).log_prob(data).sum(1).mean()
    assert run.evaluate()["test/nll"] == pytest.approx(float(expected), rel=1e-6)
    x = run.sample(20_000, seed=0)
    np.testing.assert_allclose(x.mean(0), selected["mean"].numpy(), atol=0.05)


def test_cli_and_api_share_sampling(toy_algorithm, tmp_path):
    run = raygen.train(toy_algorithm, "toy2d:circle", results=tmp_path, steps=10, overrides=SMALL, progress=False)
    res = CliRunner().invoke(app, ["sample", run.id, "--results", str(tmp_path), "--seed", "4", "--n", "8"])
    assert res.exit_code == 0, res.output
    cli_file = run.files / "sample-seed4-params.txt"
    cli_bytes = cli_file.read_bytes()
    cli_file.unlink()
    out = raygen.sample_run(tmp_path, run.id, n=8, seed=4)
    assert out.paths == [cli_file] and cli_file.read_bytes() == cli_bytes
    assert out.array.shape == (8, 2)


def test_bad_input_is_a_clear_error(toy_algorithm, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a raygen results store"):
        raygen.open(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="unknown config key 'lrr'"):
        raygen.train(toy_algorithm, "toy2d:circle", results=tmp_path, lrr=1.0)
    run = raygen.train(toy_algorithm, "toy2d:circle", results=tmp_path, steps=5, overrides=SMALL, progress=False)
    with pytest.raises(KeyError, match="not found"):
        raygen.open(tmp_path).run("nosuchrun")
    with pytest.raises(ConfigError, match="only eval.\\* overrides, got train.lr"):
        raygen.evaluate_run(tmp_path, run.id, {"train.lr": 1.0})
    with pytest.raises(ConfigError, match="unknown config key 'eval.nope'"):
        run.evaluate(nope=1)
