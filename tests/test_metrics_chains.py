"""Reversibility on Gaussian chains with known answers; nearest neighbours vs brute-force numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal

import raygen.metrics.chains as chains_mod
from raygen.metrics import nearest_neighbours, reversibility_ratio


def rotating_ar_chain(rho: float, theta: float, runs: int, steps: int, seed: int = 0):
    """s' = ρ R(θ) s + √(1−ρ²) ε in 2-D, started from its stationary law N(0, I).

    θ = 0 is the ordinary AR(1) chain, which is reversible. For θ ≠ 0 the chain keeps N(0, I) (R is
    orthogonal) but rotates, so it is not: in closed form
        E[log p(s'|s) − log p(s|s')] = 4ρ² sin²θ / (1 − ρ²),
    and its entropy rate is the conditional differential entropy log(2πe(1 − ρ²)) (2-D).
    Log-probabilities come from torch.distributions, independently of the code under test.
    """
    g = torch.Generator().manual_seed(seed)
    rot = torch.tensor(
        [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64
    )
    noise_std = math.sqrt(1 - rho * rho)
    s = torch.randn(runs, 2, generator=g, dtype=torch.float64)
    fwd, bwd = [], []
    for _ in range(steps):
        mean_next = rho * s @ rot.T
        s_next = mean_next + noise_std * torch.randn(runs, 2, generator=g, dtype=torch.float64)
        fwd.append(Independent(Normal(mean_next, noise_std), 1).log_prob(s_next))
        bwd.append(Independent(Normal(rho * s_next @ rot.T, noise_std), 1).log_prob(s))
        s = s_next
    return torch.stack(fwd, dim=1), torch.stack(bwd, dim=1)  # (runs, steps)


def test_reversible_ar1_chain_has_zero_kl():
    rho = 0.9
    lf, lb = rotating_ar_chain(rho, 0.0, runs=50, steps=400)
    out = reversibility_ratio(lf, lb, burn_in=50)
    assert abs(out["reversibility_kl"]) < 0.01
    assert abs(out["reversibility_ratio"]) < 0.02
    assert out["entropy_rate"] == pytest.approx(math.log(2 * math.pi * math.e * (1 - rho * rho)), abs=0.03)


def test_irreversible_rotating_chain_matches_closed_form():
    rho, theta = 0.9, 0.5
    lf, lb = rotating_ar_chain(rho, theta, runs=100, steps=400)
    out = reversibility_ratio(lf, lb, burn_in=50)
    kl = 4 * rho**2 * math.sin(theta) ** 2 / (1 - rho**2)
    entropy = math.log(2 * math.pi * math.e * (1 - rho * rho))
    assert out["reversibility_kl"] == pytest.approx(kl, rel=0.05)
    assert out["entropy_rate"] == pytest.approx(entropy, abs=0.03)
    assert out["reversibility_ratio"] == pytest.approx(kl / abs(entropy), rel=0.06)
    assert out["reversibility_ratio"] > 1.0  # clearly positive, far from the reversible case


def test_burn_in_steps_are_dropped_and_values_hand_checked():
    lf = torch.full((3, 60), -2.0)
    lb = torch.full((3, 60), -3.0)
    lf[:, :10] = 500.0  # garbage during burn-in must not count
    out = reversibility_ratio(lf, lb, burn_in=10)
    assert out == pytest.approx({"reversibility_kl": 1.0, "entropy_rate": 2.0, "reversibility_ratio": 0.5})
    assert reversibility_ratio(lf, lb, burn_in=0)["reversibility_kl"] != pytest.approx(1.0)


def test_reversibility_bad_inputs():
    x = torch.zeros(2, 60)
    with pytest.raises(ValueError, match="same shape"):
        reversibility_ratio(x, torch.zeros(2, 59))
    with pytest.raises(ValueError, match="drops all"):
        reversibility_ratio(x, x, burn_in=60)
    with pytest.raises(ValueError, match="runs × steps"):
        reversibility_ratio(torch.zeros(60), torch.zeros(60))
    assert math.isnan(reversibility_ratio(x, x, burn_in=0)["reversibility_ratio"])  # H = 0: undefined


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_nearest_neighbours_match_brute_force(batch_size):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 7)).astype(np.float32)  # passed as a float32 tensor below
    samples = rng.normal(size=(13, 7))
    samples[4] = train[31]  # an exact copy must be found at distance 0
    idx, dist = nearest_neighbours(samples, torch.from_numpy(train), batch_size=batch_size)
    all_d = np.linalg.norm(samples[:, None, :] - train[None, :, :].astype(np.float64), axis=2)
    np.testing.assert_array_equal(idx.numpy(), all_d.argmin(axis=1))
    np.testing.assert_allclose(dist.numpy(), all_d.min(axis=1), rtol=1e-12)
    assert idx[4] == 31 and float(dist[4]) == 0.0
    assert idx.dtype == torch.int64 and dist.dtype == torch.float64


def test_nearest_neighbours_dimension_mismatch():
    with pytest.raises(ValueError, match="same number of dimensions"):
        nearest_neighbours(np.zeros((2, 3)), np.zeros((4, 5)))


def test_nearest_neighbours_chunked_train_scan_and_ties(monkeypatch):
    # A tiny block cap splits the training set into chunks of 2 rows (batch_size=3): the running minimum
    # across chunks must still find the brute-force answer, and a tie must go to the lowest index.
    monkeypatch.setattr(chains_mod, "_MAX_BLOCK", 6)
    rng = np.random.default_rng(1)
    train = rng.normal(size=(41, 4))
    train[40] = train[5]  # duplicate rows in different chunks
    samples = rng.normal(size=(10, 4))
    samples[2] = train[5]
    idx, dist = nearest_neighbours(samples, train, batch_size=3)
    all_d = np.linalg.norm(samples[:, None, :] - train[None, :, :], axis=2)
    np.testing.assert_array_equal(idx.numpy(), all_d.argmin(axis=1))
    np.testing.assert_allclose(dist.numpy(), all_d.min(axis=1), rtol=1e-12)
    assert idx[2] == 5
