"""IS/FID (eval.inception_path) and the classifier stand-in (eval.classifier_score) in the evaluation suite:
closed-form values on constructed samples, and a real run that reports them."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

import raygen
from raygen.cli import app
from raygen.config import build_config
from raygen.data.base import Dataset
from raygen.engine.evaluate import evaluation_suite

K = 4  # classes of the constructed images


class ClassOfMean(torch.nn.Module):
    """The extractor interface: logits peaked at class round(3·mean pixel) (≈ one-hot), features = pixels."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = x.mean(dim=(1, 2, 3))
        centres = torch.arange(4, dtype=x.dtype) / 3
        return -1e4 * (m[:, None] - centres) ** 2, x[:, 0].reshape(len(x), -1)


def class_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i has class i % K: every pixel (i % K)/3 plus small noise (so covariances are full rank)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % K
    x = labels.float()[:, None, None, None] / 3 + 0.01 * torch.randn(n, 1, 4, 4, generator=g)
    return x.clamp(0, 1), labels


class Replay:
    """A stand-in model whose samples are given images, in order (nothing else of an Algorithm is used)."""

    device = torch.device("cpu")

    def __init__(self, images: torch.Tensor):
        self.images, self.drawn = images, 0

    def eval(self):
        return self

    def evaluate(self, data, split, *, full, generator):
        return {}

    def sample(self, n, *, generator=None):
        out = self.images[self.drawn : self.drawn + n]
        self.drawn += n
        return out.reshape(n, -1)


@pytest.fixture
def scripted(tmp_path):
    path = tmp_path / "extractor.pt"
    torch.jit.script(ClassOfMean()).save(str(path))
    return path


def test_suite_scores_replayed_test_images_in_closed_form(scripted):
    test, test_labels = class_images(40, 0)
    train, train_labels = class_images(200, 1)
    data = Dataset("stub", "image", (1, 4, 4), {"train": train, "valid": test, "test": test},
                   labels={"train": train_labels, "valid": test_labels, "test": test_labels})
    cfg = build_config(algorithm="infusion", dataset="digits", overrides={
        "eval.splits": ["test"], "eval.parzen": False, "eval.inception_path": str(scripted),
        "eval.inception_samples": 40, "eval.inception_splits": 2, "eval.classifier_score": True,
        "eval.classifier_steps": 300})
    # the samples are the test images themselves, reversed: same set, so both FIDs are 0 (up to sqrtm rounding)
    metrics, _ = evaluation_suite(Replay(test.flip(0)), data, cfg, torch.Generator(), pictures=False)
    # one-hot p(y|x), each split of 20 holds 5 of each of the K classes: IS = exp(log K) = K exactly
    assert metrics["test/inception_score"] == pytest.approx(K, rel=1e-6)
    assert metrics["test/inception_score_std"] == pytest.approx(0, abs=1e-6)
    assert abs(metrics["test/fid"]) < 1e-6
    # a classifier of the data's own labels separates the K constant images: close to K, never above
    assert 0.9 * K < metrics["test/classifier_score"] <= K + 1e-9
    assert abs(metrics["test/classifier_fid"]) < 1e-4


def test_nothing_asked_nothing_reported():
    test, _ = class_images(8, 0)
    data = Dataset("stub", "image", (1, 4, 4), {"train": test, "valid": test, "test": test})
    cfg = build_config(algorithm="infusion", dataset="digits", overrides={"eval.splits": ["test"], "eval.parzen": False})
    metrics, _ = evaluation_suite(Replay(test), data, cfg, torch.Generator(), pictures=False)
    assert metrics == {}


def test_a_run_reports_the_scores(tmp_path, scripted):
    run = raygen.train("infusion", "digits", steps=2, results=str(tmp_path / "r"), overrides={
        "algo.steps": 2, "algo.sampling_steps": 2, "algo.net": {"hidden": [16]}, "train.batch_size": 20,
        "train.progress": False, "train.eval_every": 2, "train.eval_examples": 20, "eval.splits": ["test"],
        "eval.test_examples": 10, "eval.repeats": 1, "eval.likelihood_samples": 2, "eval.parzen": False,
        "eval.sample_count": 4, "eval.inception_path": str(scripted), "eval.inception_samples": 30,
        "eval.inception_splits": 3, "eval.classifier_score": True, "eval.classifier_steps": 20})
    final = run.final
    for key in ("inception_score", "inception_score_std", "fid", "classifier_score", "classifier_score_std",
                "classifier_fid"):
        assert math.isfinite(final[f"test/{key}"]), key
    assert 1.0 - 1e-9 <= final["test/inception_score"] <= K + 1e-9  # IS lies in [1, number of classes]
    # a sweep may optimise them: the declared names cover what the store holds
    from raygen.engine.sweep_spec import metric_known, reported_metrics
    from raygen.results import read_metrics

    rows = read_metrics(tmp_path / "r")
    stored = {f"{s}/{m}" for s, m in zip(rows["split"], rows["metric"])}
    assert "test/fid" in stored
    assert sorted(n for n in stored if not metric_known(n, reported_metrics(run.config))) == []


def test_missing_extractor_is_refused_before_training(tmp_path):
    res = CliRunner().invoke(app, ["train", "infusion", "--dataset", "digits", "--steps", "1", "--results",
                                   str(tmp_path), f"eval.inception_path={tmp_path / 'nope.pt'}"])
    assert res.exit_code != 0 and "eval.inception_path: no such file" in res.output
    assert "Traceback" not in res.output
