"""VAE baseline: the ELBO of a linear-Gaussian VAE against its closed form, the IWAE and AIS evaluations
against the exact marginal (torch.distributions.MultivariateNormal), and training on digits."""

import math

import pytest
import torch

from raygen.algorithms.vae import VAE
from raygen.config import build_config
from raygen.data.base import Dataset

D64 = torch.float64


def _points(x: torch.Tensor) -> Dataset:
    return Dataset(name="stub", kind="points", shape=(x.shape[1],), splits={"train": x, "valid": x, "test": x})


def linear_vae(dim=4, latent=2, std=1.0, seed=0):
    """A VAE whose encoder and decoder are affine maps: p(x|z) = N(Wz + b, s²I), q(z|x) = N(Ax + c, diag e^(Bx+d))."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, dim, generator=g)
    cfg = build_config(algorithm="vae", dataset="toy2d:circle", overrides={
        "algo.latent": latent, "algo.encoder_hidden": [], "algo.decoder_hidden": [], "algo.mean_output": "linear",
        "algo.init_std": std, "algo.min_std": 1e-6,
    })
    vae = VAE(cfg, _points(x)).double()
    with torch.no_grad():
        for p in vae.parameters():
            if p is not vae.raw_std:
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=D64))
    return vae, x.double()


def closed_form_elbo(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """E_q[log N(x; Wz + b, s²I)] − KL(q ‖ N(0, I)) for q = N(m, diag v), written out independently."""
    w, b = vae.decoder[0].weight, vae.decoder[0].bias
    s2 = vae.observation_std() ** 2
    h = vae.encoder(x)
    m, v = h[:, : vae.latent], h[:, vae.latent :].exp()
    resid = x - m @ w.T - b
    expected_sq = resid**2 + (w**2 @ v.T).T  # E_q (x_i − w_i·z − b_i)² = resid² + Σ_j w_ij² v_j
    rec = (-0.5 * torch.log(2 * math.pi * s2) - expected_sq / (2 * s2)).sum(1)
    kl = 0.5 * (v + m**2 - 1 - v.log()).sum(1)
    return rec - kl


def test_linear_gaussian_elbo_matches_its_closed_form():
    vae, x = linear_vae()
    with torch.no_grad():
        reps = 50_000
        terms = vae.elbo_terms(x.repeat(reps, 1), torch.Generator().manual_seed(1))
        mc = terms["elbo"].view(reps, len(x))
        exact = closed_form_elbo(vae, x)
    se = mc.std(0) / math.sqrt(reps)
    assert bool(((mc.mean(0) - exact).abs() < 4 * se + 1e-9).all()), (mc.mean(0), exact, se)
    assert bool((se < 0.05).all())  # the check is sharp


def test_iwae_and_ais_approach_the_exact_marginal_from_below():
    vae, x = linear_vae(seed=1)
    w, b = vae.decoder[0].weight.detach(), vae.decoder[0].bias.detach()
    cov = w @ w.T + torch.diag(vae.observation_std().detach() ** 2)
    exact = torch.distributions.MultivariateNormal(b, cov).log_prob(x)
    # A good proposal, so that k = 4000 samples suffice: the exact posterior's mean and its covariance's
    # diagonal (the posterior N(S Wᵀ(x − b)/s², S), S = (I + WᵀW/s²)⁻¹, is linear-Gaussian).
    s2 = vae.observation_std().detach() ** 2
    post_cov = torch.linalg.inv(torch.eye(2, dtype=D64) + w.T @ (w / s2[:, None]))
    a = post_cov @ (w / s2[:, None]).T
    with torch.no_grad():
        enc = vae.encoder[0]
        enc.weight.zero_()
        enc.weight[:2] = a
        enc.bias[:2] = -a @ b
        enc.bias[2:] = post_cov.diagonal().log()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        elbo = closed_form_elbo(vae, x)
        ell = vae.iwae_log_weights(x, 4000, g)
    iwae = torch.logsumexp(ell, 1) - math.log(4000)
    assert bool((elbo < iwae).all())
    assert float((iwae - exact).abs().max()) < 0.05
    res = vae.ais(x, g, vae.cfg.ais.model_copy(update={"steps": 300, "initial_step_size": 0.1}))
    assert float((res.log_likelihood - exact).abs().max()) < 0.3


def test_vae_trains_on_digits_and_its_elbo_rises():
    cfg = build_config(algorithm="vae", dataset="digits", overrides={
        "algo.latent": 10, "algo.decoder_hidden": [32], "algo.encoder_hidden": [32], "train.lr": 3e-3,
    })
    torch.manual_seed(0)
    x = torch.rand(200, 1, 8, 8).round()
    vae = VAE(cfg, Dataset(name="digits", kind="image", shape=(1, 8, 8), splits={"train": x, "valid": x, "test": x}))
    g = torch.Generator().manual_seed(0)
    before = vae.evaluate(x, "valid", full=False, generator=g)["lower_bound"]
    for i in range(60):
        vae.train_step(x[(i % 4) * 50 : (i % 4 + 1) * 50])
    after = vae.evaluate(x, "valid", full=False, generator=g)["lower_bound"]
    assert vae.updates == 60 and after > before + 20, (before, after)
    assert vae.sample(7, generator=g).shape == (7, 1, 8, 8)


def test_bernoulli_decoder_refuses_points():
    cfg = build_config(algorithm="vae", dataset="toy2d:circle", overrides={"algo.observation": "bernoulli"})
    with pytest.raises(ValueError, match="Bernoulli decoder needs"):
        VAE(cfg, _points(torch.randn(4, 2)))


def test_bernoulli_vae_on_binary_images_reports_bits_per_dim_without_a_bin_width():
    cfg = build_config(algorithm="vae", dataset="digits", overrides={
        "algo.latent": 2, "algo.decoder_hidden": [8], "algo.encoder_hidden": [8], "algo.observation": "bernoulli",
        "eval.repeats": 2, "eval.likelihood_samples": 5})
    x = (torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    vae = VAE(cfg, Dataset(name="digits", kind="image", shape=(1, 8, 8), splits={"train": x, "valid": x, "test": x},
                           binary=True))
    vae.setup(x)
    out = vae.evaluate(x, "test", full=True, generator=torch.Generator().manual_seed(1))
    assert out["bits_per_dim"] == pytest.approx(-out["lower_bound"] / (64 * math.log(2)))
    assert out["bits_per_dim_importance"] == pytest.approx(-out["importance"] / (64 * math.log(2)))
    assert out["importance"] >= out["lower_bound"]


def test_ais_falls_back_to_autograd_for_a_decoder_the_hand_gradient_does_not_know():
    """MLPLogLikelihood refuses layers it has no gradient for (here an ELU); the VAE's AIS then goes through
    autograd instead of failing the evaluation after training."""
    from raygen.metrics.ais import AISConfig, MLPLogLikelihood

    vae, x = linear_vae(seed=3)
    cfg = AISConfig(steps=30, chains=4)
    plain = vae.ais(x, torch.Generator().manual_seed(0), cfg).log_likelihood
    assert isinstance(vae._ais_log_likelihood(), MLPLogLikelihood)
    vae.decoder = torch.nn.Sequential(*vae.decoder, torch.nn.ELU(), torch.nn.Linear(4, 4).double())
    with pytest.raises(ValueError, match="ELU"):
        MLPLogLikelihood(vae.decoder, "gaussian", std=1.0)
    out = vae.ais(x, torch.Generator().manual_seed(0), cfg)
    assert out.log_likelihood.shape == plain.shape and bool(torch.isfinite(out.log_likelihood).all())
