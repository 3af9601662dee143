"""NET diffusion baseline: the lower bound on a one-dimensional Gaussian against its closed form.

With data N(m, s²) the true reverse conditionals q(y_{t−1} | y_t) are Gaussian and known; plugging them in as
the model's reverse process, the bound becomes log q(y_0) − E_{q(y_T|y_0)}[log q(y_T) − log N(y_T; 0, 1)], all
Gaussian integrals computed here by hand (independently of the module's KL terms)."""

import math

import pytest
import torch

from raygen.algorithms.diffusion import NET
from raygen.config import build_config
from raygen.data.base import Dataset

M, S = 0.7, 0.4


def _points(x):
    return Dataset(name="stub", kind="points", shape=(x.shape[1],), splits={"train": x, "valid": x, "test": x})


def _net(steps=50, **extra):
    x = (M + S * torch.randn(200, 1, generator=torch.Generator().manual_seed(0)))
    cfg = build_config(algorithm="net", dataset="toy2d:circle", overrides={
        "algo.steps": steps, "algo.beta_end": 0.1, "algo.scale": 1.0, "algo.shift": 0.0, "algo.hidden": [16], **extra,
    })
    algo = NET(cfg, _points(x)).double()
    algo.setup(x)
    return algo, x.double()


def _normal_expect_log(c, w, mu, v):
    """E_{X~N(c, w)} log N(X; mu, v)."""
    return -0.5 * math.log(2 * math.pi * v) - ((c - mu) ** 2 + w) / (2 * v)


def test_bound_with_the_exact_reverse_process_matches_the_closed_form():
    algo, _ = _net()
    alpha_bar = [1.0] + algo.alpha_bar.tolist()  # ᾱ_0 = 1

    def marginal(k):
        return math.sqrt(alpha_bar[k]) * M, alpha_bar[k] * S * S + 1 - alpha_bar[k]

    table = []  # per t = 1..T: (μ_{t−1}, μ_t, cov/v_t, conditional std) of q(y_{t−1} | y_t) for N(M, S²) data
    for t in range(1, len(alpha_bar)):
        (mu_p, v_p), (mu_t, v_t) = marginal(t - 1), marginal(t)
        cov = math.sqrt(1 - float(algo.betas[t - 1])) * v_p
        table.append((mu_p, mu_t, cov / v_t, math.sqrt(v_p - cov * cov / v_t)))
    table = torch.tensor(table, dtype=torch.float64)

    def oracle(y, t):
        mu_p, mu_t, gain, std = table[t - 1].T
        return mu_p[:, None] + gain[:, None] * (y - mu_t[:, None]), std[:, None].expand_as(y)

    algo.reverse = oracle
    x0 = torch.tensor([[0.2], [0.7], [1.5]], dtype=torch.float64)
    reps = 4000
    with torch.no_grad():
        lb = algo.lower_bound(x0.repeat(reps, 1), torch.Generator().manual_seed(1)).view(reps, 3)
    ab_t = alpha_bar[-1]
    mu_T, v_T = marginal(len(alpha_bar) - 1)
    for i, x in enumerate(x0[:, 0].tolist()):
        c, w = math.sqrt(ab_t) * x, 1 - ab_t
        exact = (-0.5 * math.log(2 * math.pi * S * S) - (x - M) ** 2 / (2 * S * S)
                 - (_normal_expect_log(c, w, mu_T, v_T) - _normal_expect_log(c, w, 0.0, 1.0)))
        se = float(lb[:, i].std()) / math.sqrt(reps)
        assert float(lb[:, i].mean()) == pytest.approx(exact, abs=4 * se + 1e-9), (i, float(lb[:, i].mean()), exact)
        assert se < 0.03  # the check is sharp: 4 SE ≈ 0.1 nats


def test_bound_drawn_terms_are_unbiased_for_the_full_sum():
    algo, x = _net(steps=20)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        full = algo.lower_bound(x[:4].repeat(2000, 1), g).view(2000, 4)
        drawn = algo.lower_bound(x[:4].repeat(2000, 1), g, timesteps=5).view(2000, 4)
    se = ((full.var(0) + drawn.var(0)) / 2000).sqrt()
    assert bool(((full.mean(0) - drawn.mean(0)).abs() < 4 * se).all()), (full.mean(0), drawn.mean(0), se)


def test_net_training_raises_the_bound_and_bits_per_dim_on_digits():
    algo, x = _net(steps=20)
    algo.float()
    g = torch.Generator().manual_seed(0)
    before = algo.evaluate(x, "valid", full=False, generator=g)["lower_bound"]
    torch.manual_seed(0)
    for i in range(150):
        algo.train_step(x[(i % 2) * 100 : (i % 2 + 1) * 100].float())
    after = algo.evaluate(x, "valid", full=False, generator=g)["lower_bound"]
    assert algo.updates == 150 and after > before + 0.3, (before, after)
    assert algo.sample(5, generator=g).shape == (5, 1)
    images = torch.rand(6, 1, 4, 4)
    cfg = build_config(algorithm="net", dataset="digits", overrides={
        "algo.steps": 5, "algo.hidden": [8], "eval.repeats": 2})
    net = NET(cfg, Dataset(name="digits", kind="image", shape=(1, 4, 4),
                           splits={"train": images, "valid": images, "test": images}))
    out = net.evaluate(images, "test", full=True, generator=g)
    assert out["bits_per_dim"] == pytest.approx(-(out["lower_bound"] + 16 * math.log(1 / 256)) / (16 * math.log(2)))


def test_ddpm_mean_with_the_true_noise_is_the_forward_posterior_mean():
    from raygen.algorithms.diffusion import DDPM

    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    cfg = build_config(algorithm="ddpm", dataset="toy2d:circle", overrides={
        "algo.steps": 30, "algo.scale": 1.0, "algo.shift": 0.0, "algo.hidden": [8], "algo.variance": "posterior"})
    algo = DDPM(cfg, _points(x)).double()
    y0 = x.double()
    t = torch.randint(2, 31, (50,), generator=torch.Generator().manual_seed(1))
    betas = algo.betas
    ab = torch.cumprod(1 - betas, 0)
    b, a_t, a_prev = betas[t - 1, None], ab[t - 1, None], ab[t - 2, None]
    eps = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    yt = a_t.sqrt() * y0 + (1 - a_t).sqrt() * eps
    algo.epsilon = lambda y, tt: eps  # the true noise
    mean, std = algo.reverse(yt, t)
    # Ho et al. eq. 7: μ̃ = √ᾱ_{t−1} β_t/(1 − ᾱ_t) y_0 + √(1 − β_t)(1 − ᾱ_{t−1})/(1 − ᾱ_t) y_t, β̃ = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t
    expected = a_prev.sqrt() * b / (1 - a_t) * y0 + (1 - b).sqrt() * (1 - a_prev) / (1 - a_t) * yt
    assert torch.allclose(mean, expected, atol=1e-10)
    assert torch.allclose(std, ((1 - a_prev) / (1 - a_t) * b).sqrt().expand_as(std), atol=1e-12)


def test_ddpm_simple_objective_trains():
    from raygen.algorithms.diffusion import DDPM

    x = M + S * torch.randn(200, 1, generator=torch.Generator().manual_seed(0))
    # strong noise (β up to 0.3) so that ε is predictable from y_t for most t
    cfg = build_config(algorithm="ddpm", dataset="toy2d:circle", overrides={
        "algo.steps": 20, "algo.hidden": [32], "algo.beta_end": 0.3, "train.lr": 3e-3})
    algo = DDPM(cfg, _points(x))
    algo.setup(x)
    torch.manual_seed(0)
    losses = [algo.train_step(x[(i % 2) * 100 : (i % 2 + 1) * 100])["loss"] for i in range(200)]
    assert sum(losses[-20:]) / 20 < 0.7 * sum(losses[:20]) / 20
    g = torch.Generator().manual_seed(0)
    assert math.isfinite(algo.evaluate(x, "valid", full=False, generator=g)["lower_bound"])
