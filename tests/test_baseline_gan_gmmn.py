"""GAN and GMMN baselines: the MMD against a direct numpy computation, the updates each loss drives, the
observation std chosen on validation data against exact marginals (torch.distributions.MultivariateNormal)."""

import copy
import math

import numpy as np
import pytest
import torch

from raygen.algorithms.gan import GAN
from raygen.algorithms.gmmn import GMMN, mmd2
from raygen.config import build_config
from raygen.data.base import Dataset


def copy_module(m):
    return copy.deepcopy(m)


def numpy_mmd2(x, y, widths, unbiased):
    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s)) for s in widths)

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if not (unbiased and i == j))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if not (unbiased and i == j))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    if unbiased:
        return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)
    return kxx / n**2 + kyy / m**2 - 2 * kxy / (n * m)


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_matches_a_direct_numpy_computation(unbiased):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.3, size=(5, 3))
    widths = (0.5, 1.0, 3.0)
    got = float(mmd2(torch.from_numpy(x), torch.from_numpy(y), widths, unbiased=unbiased))
    assert got == pytest.approx(numpy_mmd2(x, y, widths, unbiased), rel=1e-10, abs=1e-12)
    assert float(mmd2(torch.from_numpy(x), torch.from_numpy(x), widths)) == pytest.approx(0.0, abs=1e-12)


def test_mmd_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="same D"):
        mmd2(torch.zeros(3, 2), torch.zeros(3, 4), (1.0,))


def _points(x):
    return Dataset(name="stub", kind="points", shape=(x.shape[1],), splits={"train": x, "valid": x, "test": x})


def test_gmmn_training_moves_the_generator_onto_the_data():
    torch.manual_seed(0)
    x = torch.randn(400, 2) * 0.2 + torch.tensor([2.0, -1.0])
    cfg = build_config(algorithm="gmmn", dataset="toy2d:circle", overrides={"train.lr": 1e-2, "train.batch_size": 200})
    algo = GMMN(cfg, _points(x))
    g = torch.Generator().manual_seed(0)
    before = algo.evaluate(x, "valid", full=False, generator=g)["mmd"]
    for i in range(150):
        algo.train_step(x[(i % 2) * 200 : (i % 2 + 1) * 200])
    after = algo.evaluate(x, "valid", full=False, generator=g)["mmd"]
    assert algo.updates == 150 and after < before / 3, (before, after)
    assert algo.sample(1000, generator=g).mean(0).sub(torch.tensor([2.0, -1.0])).abs().max() < 0.15


def test_gan_updates_each_network_only_with_its_own_loss():
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    for frozen, moving in (("discriminator", "decoder"), ("generator", "discriminator")):
        algo = GAN(build_config(algorithm="gan", dataset="toy2d:circle"), _points(x))
        # with one optimizer's learning rate at 0, its network must not move: no other loss may step it
        algo.optimizers()[frozen].param_groups[0]["lr"] = 0.0
        net_frozen = algo.discriminator if frozen == "discriminator" else algo.decoder
        before = [p.detach().clone() for p in net_frozen.parameters()]
        moved = [p.detach().clone() for p in getattr(algo, moving).parameters()]
        metrics = algo.train_step(x)
        assert all(torch.equal(a, b) for a, b in zip(before, net_frozen.parameters()))
        assert all(not torch.equal(a, b) for a, b in zip(moved, getattr(algo, moving).parameters()))
        assert algo.updates == 1  # generator updates are the budget; the discriminator's do not count
    assert set(metrics) == {"d_loss", "g_loss", "d_real", "d_fake"}


def test_gan_generator_losses_are_the_papers_formulas():
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    for kind in ("non_saturating", "minimax"):
        cfg = build_config(algorithm="gan", dataset="toy2d:circle", overrides={"algo.generator_loss": kind})
        algo = GAN(cfg, _points(x))
        algo.optimizers()["discriminator"].param_groups[0]["lr"] = 0.0  # D stays as copied below
        copy = copy_module(algo)
        torch.manual_seed(1)
        metrics = algo.train_step(x)
        torch.manual_seed(1)  # replay the draws: D's fake batch, then G's batch
        torch.randn(len(x), algo.latent)
        z = torch.randn(len(x), algo.latent)
        with torch.no_grad():
            logit = copy.discriminator(copy.decode_mean(z)).double().numpy()
        d = 1 / (1 + np.exp(-logit))
        expected = -np.log(d).mean() if kind == "non_saturating" else np.log(1 - d).mean()
        assert metrics["g_loss"] == pytest.approx(expected, rel=1e-5)


def test_observation_std_is_chosen_where_the_exact_marginal_is_highest():
    torch.manual_seed(0)
    d, latent = 4, 2
    w, b = torch.randn(d, latent), torch.randn(d)
    x = torch.randn(30, latent) @ w.T + b + 0.1 * torch.randn(30, d)
    cfg = build_config(algorithm="gan", dataset="toy2d:circle", overrides={
        "algo.latent": latent, "algo.decoder_hidden": [], "algo.observation_std_grid": [0.02, 0.1, 0.5],
        "algo.std_selection_examples": 30, "algo.std_selection_steps": 200,
        "algo.ais": {"initial_step_size": 0.1, "steps": 50}, "algo.ais_examples": 1,
    })
    algo = GAN(cfg, _points(x))
    with torch.no_grad():
        algo.decoder[0].weight.copy_(w)
        algo.decoder[0].bias.copy_(b)
    exact = {
        s: float(torch.distributions.MultivariateNormal(b, w @ w.T + s * s * torch.eye(d)).log_prob(x).mean())
        for s in (0.02, 0.1, 0.5)
    }
    out = algo.evaluate(x, "test", full=True, generator=torch.Generator().manual_seed(0))
    assert max(exact, key=exact.get) == 0.1
    assert out["observation_std"] == pytest.approx(0.1)


def test_gmmn_ae_needs_budget_beyond_the_autoencoder_phase():
    cfg = build_config(algorithm="gmmn", dataset="digits", overrides={
        "algo.autoencoder": True, "algo.ae_steps": 100, "train.steps": 100,
    })
    x = torch.rand(10, 1, 8, 8)
    with pytest.raises(ValueError, match="leaves no updates for the generator"):
        GMMN(cfg, Dataset(name="digits", kind="image", shape=(1, 8, 8), splits={"train": x, "valid": x, "test": x}))
