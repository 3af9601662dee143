"""GSN / walkback denoising autoencoder: the walkback loss of a linear-Gaussian DAE against its closed form,
the salt-and-pepper corruption's statistics, and training on points."""

import math

import pytest
import torch

from raygen.algorithms.gsn import GSN
from raygen.config import build_config
from raygen.data.base import Dataset

D64 = torch.float64


def _points(x):
    return Dataset(name="stub", kind="points", shape=(x.shape[1],), splits={"train": x, "valid": x, "test": x})


def test_walkback_loss_of_a_linear_gaussian_dae_matches_its_closed_form():
    d, sigma, s = 3, 0.3, 0.2
    x = torch.randn(4, d, generator=torch.Generator().manual_seed(0), dtype=D64)
    cfg = build_config(algorithm="gsn", dataset="toy2d:circle", overrides={
        "algo.hidden": [], "algo.noise": sigma, "algo.reconstruction_std": s, "algo.walkback_steps": 2,
    })
    torch.manual_seed(0)  # the network's initial weights
    algo = GSN(cfg, _points(x.float())).double()
    w, b = algo.net[0].weight.detach(), algo.net[0].bias.detach()

    def expected_nll(mean, cov):  # E −log N(x; W x̃ + b, s²I) for x̃ ~ N(mean, cov)
        resid = x - mean @ w.T - b
        sq = (resid**2).sum(1) + torch.trace(w @ cov @ w.T)
        return 0.5 * d * math.log(2 * math.pi * s * s) + sq / (2 * s * s)

    eye = torch.eye(d, dtype=D64)
    step1 = expected_nll(x, sigma**2 * eye)  # x̃_1 = x + σε
    # x_1 ~ N(W x̃_1 + b, s²I), x̃_2 = x_1 + σε'': mean W x + b, covariance σ² W Wᵀ + (s² + σ²) I
    step2 = expected_nll(x @ w.T + b, sigma**2 * w @ w.T + (s * s + sigma**2) * eye)
    exact = (step1 + step2) / 2
    reps = 20_000
    with torch.no_grad():
        mc = algo.walkback_loss(x.repeat(reps, 1), torch.Generator().manual_seed(1)).view(reps, 4)
    se = mc.std(0) / math.sqrt(reps)
    assert bool(((mc.mean(0) - exact).abs() < 4 * se).all()), (mc.mean(0), exact, se)
    # the second (walkback) step moves the loss far beyond the tolerance: a loss without it would fail
    assert float((exact - step1).abs().sum()) > 20 * float(se.sum())


def test_salt_and_pepper_hits_the_configured_fraction_with_fair_coins():
    cfg = build_config(algorithm="gsn", dataset="digits", overrides={"algo.hidden": [4]})
    x = torch.full((400, 1, 8, 8), 0.5)
    algo = GSN(cfg, Dataset(name="digits", kind="image", shape=(1, 8, 8), splits={"train": x, "valid": x, "test": x}))
    out = algo.corrupt(x.reshape(400, -1), torch.Generator().manual_seed(0))
    hit = out != 0.5
    assert float(hit.double().mean()) == pytest.approx(0.4, abs=0.01)
    assert float(out[hit].mean()) == pytest.approx(0.5, abs=0.02)  # salt and pepper equally often
    assert set(out[hit].unique().tolist()) == {0.0, 1.0}


def test_gsn_trains_on_points_and_samples_near_the_data():
    torch.manual_seed(0)
    x = torch.randn(400, 2) * 0.1 + torch.tensor([1.0, -2.0])
    algo = GSN(build_config(algorithm="gsn", dataset="toy2d:circle", overrides={"train.lr": 3e-3}), _points(x))
    algo.setup(x)
    g = torch.Generator().manual_seed(0)
    before = algo.evaluate(x, "valid", full=False, generator=g)["loss"]
    for i in range(200):
        algo.train_step(x[(i % 4) * 100 : (i % 4 + 1) * 100])
    after = algo.evaluate(x, "valid", full=False, generator=g)["loss"]
    assert algo.updates == 200 and after < before - 5, (before, after)
    samples = algo.sample(500, generator=g)
    assert float((samples.mean(0) - torch.tensor([1.0, -2.0])).abs().max()) < 0.2


def test_salt_and_pepper_refuses_points():
    with pytest.raises(ValueError, match="need \\[0, 1\\] images"):
        cfg = build_config(algorithm="gsn", dataset="toy2d:circle", overrides={"algo.corruption": "salt_pepper"})
        GSN(cfg, _points(torch.randn(4, 2)))
