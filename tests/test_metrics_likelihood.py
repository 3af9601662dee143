"""Lower bound / importance sampling, repeat statistics, dequantisation and log-densities.

References: scipy (logsumexp, norm), torch.distributions, and a linear-Gaussian model with closed-form p(x).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import bernoulli, norm
from torch.distributions import Bernoulli, Normal

from raygen.metrics import (
    bernoulli_log_prob,
    bits_per_dim,
    bits_per_dim_estimates,
    dequantize,
    gaussian_log_prob,
    importance_estimates,
    mean_std,
    summarise_repeats,
)

# ---------------------------------------------------------------- importance_estimates


def test_importance_estimates_match_numpy_and_scipy():
    lw = np.random.default_rng(0).normal(size=(6, 9)) * 30 - 500  # hundreds of nats, as in real models
    out = importance_estimates(torch.from_numpy(lw))
    np.testing.assert_allclose(out["lower_bound"].numpy(), lw.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(out["importance"].numpy(), logsumexp(lw, axis=1) - math.log(9), rtol=1e-12)
    assert (out["importance"] >= out["lower_bound"]).all()  # Jensen, same samples
    assert out["importance"].dtype == torch.float64


def test_one_sample_gives_equal_bound_and_estimate():
    lw = torch.tensor([[-3.0], [-7.5]])
    out = importance_estimates(lw)
    assert torch.equal(out["lower_bound"], out["importance"])


def test_minus_inf_weight_is_allowed_nan_is_not():
    out = importance_estimates(torch.tensor([[0.0, -math.inf]]))
    assert out["lower_bound"][0] == -math.inf
    assert float(out["importance"][0]) == pytest.approx(-math.log(2))
    with pytest.raises(ValueError, match="NaN"):
        importance_estimates(torch.tensor([[0.0, math.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        importance_estimates(torch.zeros(4))


def test_non_finite_weights_are_a_divergence_of_the_run():
    """A model that diverged only in its evaluation (walkback init_noise=1e30 gave NaN weights) ended the run
    with a traceback: the error is one `is_divergence` knows, which the CLI prints in one line."""
    from raygen.engine.sweep import is_divergence

    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError) as err:
            importance_estimates(torch.tensor([[0.0, bad]]))
        assert is_divergence(err.value)


def test_importance_sampling_converges_to_exact_linear_gaussian_likelihood():
    # z ~ N(0, 1), x | z ~ N(a z, s²)  ⇒  p(x) = N(0, a² + s²); posterior N(m, v) with v = 1/(1 + a²/s²),
    # m = v a x / s². The proposal q(z|x) is deliberately not the posterior (shifted mean, 1.5× wider).
    a, s, k = 2.0, 0.5, 20_000
    x = torch.tensor([-1.5, 0.3, 2.0], dtype=torch.float64)
    post_var = 1.0 / (1.0 + a * a / (s * s))
    post_mean = post_var * a * x / (s * s)
    q_mean, q_std = 0.8 * post_mean + 0.1, 1.5 * math.sqrt(post_var)
    gen = torch.Generator().manual_seed(0)
    z = q_mean[:, None] + q_std * torch.randn(3, k, generator=gen, dtype=torch.float64)  # (N, k)
    log_joint = Normal(0.0, 1.0).log_prob(z) + Normal(a * z, s).log_prob(x[:, None])
    log_q = Normal(q_mean[:, None], q_std).log_prob(z)
    out = importance_estimates(log_joint - log_q)

    exact = torch.from_numpy(norm.logpdf(x.numpy(), scale=math.sqrt(a * a + s * s)))
    # KL(q ‖ posterior) in closed form: the gap the lower bound must show.
    kl = math.log(math.sqrt(post_var) / q_std) + (q_std**2 + (q_mean - post_mean) ** 2) / (2 * post_var) - 0.5
    assert (kl > 0.2).all()
    assert torch.allclose(out["importance"], exact, atol=0.02)
    assert (out["lower_bound"] < exact - 0.15).all()
    assert torch.allclose(out["lower_bound"], exact - kl, atol=0.05)


# ---------------------------------------------------------------- repeats


def test_mean_std_matches_numpy_ddof1():
    vals = [1.0, 2.5, -0.5, 4.0]
    m, s = mean_std(vals)
    assert m == pytest.approx(np.mean(vals)) and s == pytest.approx(np.std(vals, ddof=1))
    m2, s2 = mean_std(torch.tensor(vals))
    assert (m2, s2) == pytest.approx((m, s))
    assert mean_std([3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])


def test_summarise_repeats_names_and_values():
    reps = [{"test/is": -90.0, "test/lb": -95.0}, {"test/is": -92.0, "test/lb": -96.0}]
    out = summarise_repeats(reps)
    assert set(out) == {"test/is", "test/is_std", "test/lb", "test/lb_std"}
    assert out["test/is"] == pytest.approx(-91.0)
    assert out["test/is_std"] == pytest.approx(np.std([-90.0, -92.0], ddof=1))
    assert out["test/lb_std"] == pytest.approx(np.std([-95.0, -96.0], ddof=1))
    with pytest.raises(ValueError, match="repeats must match"):
        summarise_repeats([{"a": 1.0}, {"b": 2.0}])


# ---------------------------------------------------------------- dequantize


def test_dequantize_adds_seeded_uniform_noise_below_one_level():
    x = torch.rand(200, 50, generator=torch.Generator().manual_seed(1))
    y1 = dequantize(x, torch.Generator().manual_seed(7))
    y2 = dequantize(x, torch.Generator().manual_seed(7))
    y3 = dequantize(x, torch.Generator().manual_seed(8))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    noise = y1 - x
    assert y1.dtype == x.dtype and y1.shape == x.shape
    assert noise.min() >= 0 and noise.max() <= 1 / 256 + 1e-7
    assert float(noise.mean()) == pytest.approx(1 / 512, rel=0.02)  # U(0, 1/256) has mean 1/512
    assert float((dequantize(x, None, scale=0.5) - x).max()) > 1 / 256  # scale is honoured
    with pytest.raises(TypeError, match="floating-point"):
        dequantize(torch.zeros(3, dtype=torch.int64), None)


# ---------------------------------------------------------------- log-densities


def test_gaussian_log_prob_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g)
    mean = torch.randn(4, 3, 5, 5, generator=g)
    std = torch.rand(4, 3, 5, 5, generator=g) + 0.05
    ref = Normal(mean, std).log_prob(x).sum(dim=(1, 2, 3))
    assert torch.allclose(gaussian_log_prob(x, mean, std), ref, rtol=1e-5, atol=1e-4)
    # Scalar std broadcasts; extreme values stay finite and exact.
    ref2 = Normal(mean, 0.3).log_prob(x * 100).sum(dim=(1, 2, 3))
    assert torch.allclose(gaussian_log_prob(x * 100, mean, 0.3), ref2, rtol=1e-5)
    # Per-example, gradient flows to the mean and the std.
    m = mean.clone().requires_grad_()
    sd = std.clone().requires_grad_()
    gaussian_log_prob(x, m, sd).sum().backward()
    assert torch.isfinite(m.grad).all() and torch.isfinite(sd.grad).all()
    with pytest.raises(ValueError, match="std must be > 0"):
        gaussian_log_prob(x, mean, torch.zeros_like(std))


def test_bernoulli_log_prob_logits_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 28, 28, generator=g) > 0.5).float()
    logits = torch.randn(6, 28, 28, generator=g) * 5
    ref = Bernoulli(logits=logits).log_prob(x).sum(dim=(1, 2))
    assert torch.allclose(bernoulli_log_prob(x, logits), ref, rtol=1e-5, atol=1e-4)
    # Saturated logits stay finite and exact (−100 for the wrong pixel, ~0 for the right one).
    big = torch.tensor([[100.0, -100.0]])
    out = bernoulli_log_prob(torch.tensor([[0.0, 0.0]]), big)
    assert torch.isfinite(out).all() and float(out[0]) == pytest.approx(-100.0, abs=1e-6)


def test_bernoulli_log_prob_probs_matches_torch_and_handles_zero_one():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(5, 10, generator=g) > 0.5).double()
    p = torch.rand(5, 10, generator=g, dtype=torch.float64)
    ref = Bernoulli(probs=p).log_prob(x).sum(dim=1)
    assert torch.allclose(bernoulli_log_prob(x, p, logits=False), ref, rtol=1e-10)
    # p exactly 0 or 1 on matching pixels: log-prob 0, not NaN; on the wrong pixel: −inf.
    exact = bernoulli_log_prob(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]]), logits=False)
    assert float(exact[0]) == 0.0
    wrong = bernoulli_log_prob(torch.tensor([[1.0]]), torch.tensor([[0.0]]), logits=False)
    assert float(wrong[0]) == -math.inf
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        bernoulli_log_prob(x, p + 1.0, logits=False)


# ---------------------------------------------------------------- bits per dimension


def test_bits_per_dim_of_the_uniform_density_is_eight_bits():
    # p = 1 on [0, 1]^D: the discretised model gives each of 256 levels per dimension 1/256, i.e. 8 bits.
    assert bits_per_dim(0.0, 3072) == pytest.approx(8.0, abs=1e-12)


def test_bits_per_dim_bounds_the_exact_discrete_probability_of_a_dequantised_gaussian():
    """8-bit data x, a factorial Gaussian p, w = 1/256: P(x) = Π (Φ((x+w−μ)/σ) − Φ((x−μ)/σ)) exactly (scipy),
    and E_u[log p(x+u)] has a closed form. The conversion must bound −log2 P(x)/D from above, tightly."""
    rng = np.random.default_rng(0)
    d, w = 3072, 1 / 256
    mu, sigma = rng.uniform(0.2, 0.8, size=d), rng.uniform(0.05, 0.3, size=d)
    x = np.clip(np.round((mu + sigma * rng.standard_normal(d)) * 255), 0, 255) / 255  # data the model fits
    upper = x > mu  # the survival function keeps the cell's mass accurate in the upper tail
    cell = np.where(upper, norm.sf(x, mu, sigma) - norm.sf(x + w, mu, sigma),
                    norm.cdf(x + w, mu, sigma) - norm.cdf(x, mu, sigma))
    exact = -np.log(cell).sum() / (d * math.log(2))
    # E over u ~ U(0, w) of (x + u − μ)² = (x − μ)² + (x − μ) w + w²/3
    expected_sq = (x - mu) ** 2 + (x - mu) * w + w**2 / 3
    mean_log_density = (-0.5 * np.log(2 * math.pi * sigma**2) - expected_sq / (2 * sigma**2)).sum()
    got = bits_per_dim(mean_log_density, d)
    assert got >= exact
    assert got - exact < 1e-3
    # An example the model finds likelier costs fewer bits.
    assert bits_per_dim(mean_log_density + d, d) == pytest.approx(got - 1 / math.log(2))


def test_bits_per_dim_of_discrete_pixels_is_the_negative_log2_probability():
    rng = np.random.default_rng(1)
    x, p = rng.integers(0, 2, size=784), rng.uniform(0.05, 0.95, size=784)
    log_p = bernoulli.logpmf(x, p).sum()
    assert bits_per_dim(log_p, 784, bin_width=None) == pytest.approx(-np.log2(bernoulli.pmf(x, p)).sum() / 784)


def test_bits_per_dim_estimates_names_and_bad_input():
    out = bits_per_dim_estimates({"lower_bound": -100.0, "importance": -90.0, "loss": 3.0}, 10)
    assert out == {"bits_per_dim": pytest.approx(bits_per_dim(-100.0, 10)),
                   "bits_per_dim_importance": pytest.approx(bits_per_dim(-90.0, 10))}
    assert out["bits_per_dim_importance"] < out["bits_per_dim"]  # a higher likelihood estimate, fewer bits
    with pytest.raises(ValueError, match="dims"):
        bits_per_dim(-1.0, 0)
    with pytest.raises(ValueError, match="bin_width"):
        bits_per_dim(-1.0, 4, bin_width=0.0)
