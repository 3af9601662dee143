"""Parzen-window estimator vs an independent scipy per-point computation (explicit loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import raygen.metrics.parzen as parzen_mod
from raygen.metrics import parzen_evaluate, parzen_log_likelihood, select_parzen_sigma


def scipy_parzen(samples: np.ndarray, data: np.ndarray, sigma: float) -> np.ndarray:
    """Mixture of N isotropic Gaussians, one per sample, scored point by point with scipy's density."""
    n, d = samples.shape
    cov = sigma**2 * np.eye(d)
    out = []
    for x in data:
        comp = [multivariate_normal(mean=s, cov=cov).logpdf(x) for s in samples]
        out.append(logsumexp(comp) - math.log(n))
    return np.array(out)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("batch_size", [1, 7, 23, 100])
def test_matches_scipy_with_numpy_inputs_at_batch_boundaries(rng, batch_size):
    samples = rng.normal(size=(37, 5))
    data = rng.normal(size=(23, 5))
    ll = parzen_log_likelihood(samples, data, 0.7, batch_size=batch_size)
    assert ll.dtype == torch.float64 and ll.shape == (23,)
    np.testing.assert_allclose(ll.numpy(), scipy_parzen(samples, data, 0.7), rtol=1e-10, atol=1e-9)


def test_matches_scipy_with_float32_tensor_inputs(rng):
    samples = rng.random(size=(40, 6)).astype(np.float32)
    data = rng.random(size=(11, 6)).astype(np.float32)
    ll = parzen_log_likelihood(torch.from_numpy(samples), torch.from_numpy(data), 0.17, batch_size=4)
    ref = scipy_parzen(samples.astype(np.float64), data.astype(np.float64), 0.17)
    np.testing.assert_allclose(ll.numpy(), ref, rtol=1e-9, atol=1e-8)


def test_chunking_over_samples_matches_scipy(rng, monkeypatch):
    # A tiny block cap forces several sample chunks per data batch (the running logsumexp path).
    monkeypatch.setattr(parzen_mod, "_MAX_BLOCK", 9)
    samples = rng.normal(size=(29, 3))
    data = rng.normal(size=(10, 3))
    ll = parzen_log_likelihood(samples, data, 0.5, batch_size=4)  # chunks of 2 samples
    np.testing.assert_allclose(ll.numpy(), scipy_parzen(samples, data, 0.5), rtol=1e-10, atol=1e-9)


def test_far_points_do_not_underflow(rng):
    # exp(−‖x−s‖²/2σ²) underflows to 0 here; the log-domain result must still be finite and exact.
    samples = rng.normal(size=(20, 4))
    data = rng.normal(size=(5, 4)) + 50.0
    ll = parzen_log_likelihood(samples, data, 0.1)
    assert torch.isfinite(ll).all()
    np.testing.assert_allclose(ll.numpy(), scipy_parzen(samples, data, 0.1), rtol=1e-10)


def test_point_on_a_sample_is_exact_for_a_single_sample():
    # One sample, x = s: log N(x; s, σ²I) = −(D/2) log(2πσ²), checked in closed form.
    s = np.full((1, 3), 0.25)
    ll = parzen_log_likelihood(s, s, 0.3)
    assert float(ll[0]) == pytest.approx(-1.5 * math.log(2 * math.pi * 0.09), rel=1e-12)


def test_sigma_selection_uses_only_validation_and_matches_scipy(rng):
    sigmas = [0.05, 0.2, 0.5, 2.0]
    samples = rng.normal(size=(60, 2))
    valid = rng.normal(size=(30, 2))  # same distribution as the samples: a moderate σ wins
    test = rng.normal(size=(30, 2)) * 6.0  # far more spread: the test set alone would pick the largest σ
    valid_means = {s: scipy_parzen(samples, valid, s).mean() for s in sigmas}
    test_means = {s: scipy_parzen(samples, test, s).mean() for s in sigmas}
    valid_best = max(valid_means, key=valid_means.get)
    test_best = max(test_means, key=test_means.get)
    assert valid_best != test_best  # otherwise the test below proves nothing

    best, scores = select_parzen_sigma(samples, valid, sigmas, batch_size=8)
    assert best == valid_best
    assert set(scores) == set(sigmas)
    for s in sigmas:
        assert scores[s] == pytest.approx(valid_means[s], rel=1e-10)

    out = parzen_evaluate(samples, valid, test, sigmas, batch_size=8)
    assert out["parzen_sigma"] == valid_best
    ref = scipy_parzen(samples, test, valid_best)
    assert out["parzen_ll"] == pytest.approx(ref.mean(), rel=1e-10)
    assert out["parzen_ll_se"] == pytest.approx(ref.std(ddof=1) / math.sqrt(len(ref)), rel=1e-9)


def test_evaluate_single_test_point_has_zero_se(rng):
    samples = rng.normal(size=(10, 2))
    out = parzen_evaluate(samples, samples[:3], samples[:1], [0.5])
    assert out["parzen_ll_se"] == 0.0


@pytest.mark.parametrize(
    "samples, data, sigma, match",
    [
        (np.zeros(5), np.zeros((2, 5)), 0.1, "samples must be 2-D"),
        (np.zeros((3, 5)), np.zeros((2, 4)), 0.1, "same number of dimensions"),
        (np.zeros((3, 5)), np.full((2, 5), np.nan), 0.1, "data contains NaN"),
        (np.zeros((3, 5)), np.zeros((2, 5)), 0.0, "sigma must be a finite number > 0"),
        (np.zeros((3, 5)), np.zeros((2, 5)), -1.0, "sigma must be a finite number > 0"),
        (np.zeros((0, 5)), np.zeros((2, 5)), 0.1, "samples is empty"),
    ],
)
def test_bad_inputs_raise_clear_errors(samples, data, sigma, match):
    with pytest.raises(ValueError, match=match):
        parzen_log_likelihood(samples, data, sigma)


def test_bad_batch_size_type_and_grid():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="batch_size"):
        parzen_log_likelihood(x, x, 0.1, batch_size=0)
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        parzen_log_likelihood([[0.0, 1.0]], x, 0.1)
    with pytest.raises(ValueError, match="sigmas is empty"):
        select_parzen_sigma(x, x, [])
    with pytest.raises(ValueError, match="every sigma"):
        select_parzen_sigma(x, x, [0.1, -0.2])
