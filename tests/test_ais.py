"""AIS for decoder-based models (Wu et al. 2016): checked against exact log-likelihoods computed independently
(torch.distributions.MultivariateNormal for a linear-Gaussian model, numerical quadrature for a nonlinear
decoder with a 1-D latent) and by the BDMC sandwich on simulated data."""

import math

import pytest
import torch
from torch import nn

from raygen.metrics.ais import AISConfig, MLPLogLikelihood, ais_log_likelihood, ais_schedule
from raygen.metrics.likelihood import bernoulli_log_prob, gaussian_log_prob

D64 = torch.float64


def linear_gaussian(latent=2, dim=4, n=16, std=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, latent, generator=g, dtype=D64)
    b = torch.randn(dim, generator=g, dtype=D64)
    z = torch.randn(n, latent, generator=g, dtype=D64)  # z ~ p(z), x ~ p(x|z): z is an exact posterior draw
    x = z @ w.T + b + std * torch.randn(n, dim, generator=g, dtype=D64)
    true = torch.distributions.MultivariateNormal(b, w @ w.T + std**2 * torch.eye(dim, dtype=D64)).log_prob(x)
    return (lambda zz, xx: gaussian_log_prob(xx, zz @ w.T + b, std)), x, z, true


def test_sigmoid_schedule_runs_from_0_to_1_and_is_denser_at_the_ends():
    beta = ais_schedule(100)
    assert beta[0] == 0 and beta[-1] == 1 and len(beta) == 101
    steps = beta.diff()
    assert bool((steps > 0).all())
    assert steps[0] < 0.01 / 2 and steps[-1] < 0.01 / 2 and steps[50] > 0.01  # linear steps are all 0.01
    assert torch.allclose(ais_schedule(4, "linear"), torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=D64))


def test_forward_ais_matches_the_exact_linear_gaussian_log_likelihood():
    fn, x, _, true = linear_gaussian()
    cfg = AISConfig(steps=500, initial_step_size=0.1)
    res = ais_log_likelihood(fn, x, 2, cfg, generator=torch.Generator().manual_seed(1))
    err = res.log_likelihood - true
    assert res.log_weights.shape == (16, 16)
    assert abs(float(err.mean())) < 0.15, err
    assert float(err.abs().max()) < 0.6, err
    assert 0.45 < res.acceptance < 0.85  # adapted toward 0.65


def test_bdmc_sandwiches_the_true_log_likelihood_and_tightens_with_more_distributions():
    fn, x, z, true = linear_gaussian(seed=3)
    gaps = []
    for steps in (20, 300):
        cfg = AISConfig(steps=steps, initial_step_size=0.05)
        g = torch.Generator().manual_seed(steps)
        lower = ais_log_likelihood(fn, x, 2, cfg, generator=g).log_likelihood.mean()
        upper = ais_log_likelihood(fn, x, 2, cfg, generator=g, posterior_samples=z).log_likelihood.mean()
        gaps.append(float(upper - lower))
        if steps == 20:  # short chains: a clear gap, truth strictly inside
            assert float(lower) < float(true.mean()) < float(upper)
    assert gaps[1] < gaps[0] / 3


@pytest.mark.parametrize("gradient", ["autograd", "by hand"])
def test_ais_on_a_nonlinear_decoder_matches_quadrature(gradient):
    g = torch.Generator().manual_seed(5)
    w1, w2 = torch.randn(8, 1, generator=g, dtype=D64), torch.randn(3, 8, generator=g, dtype=D64)
    std = 0.4

    def fn(zz, xx):
        return gaussian_log_prob(xx, torch.tanh(zz @ w1.T) @ w2.T, std)

    z = torch.randn(6, 1, generator=g, dtype=D64)
    x = torch.tanh(z @ w1.T) @ w2.T + std * torch.randn(6, 3, generator=g, dtype=D64)
    grid = torch.linspace(-9, 9, 20001, dtype=D64)[:, None]
    log_joint = torch.stack([fn(grid, xi.expand(len(grid), 3)) for xi in x]) - 0.5 * grid.T**2 - 0.5 * math.log(
        2 * math.pi
    )
    true = torch.logsumexp(log_joint, 1) + math.log(float(grid[1] - grid[0]))
    if gradient == "by hand":  # the same decoder as an nn.Sequential, gradient by MLPLogLikelihood
        net = nn.Sequential(nn.Linear(1, 8, bias=False), nn.Tanh(), nn.Linear(8, 3, bias=False)).double()
        net[0].weight.data, net[2].weight.data = w1, w2
        fn = MLPLogLikelihood(net, "gaussian", std=std)
    # 128 chains instead of 16: the estimate's spread across examples (not its bias) sets the tolerance.
    res = ais_log_likelihood(fn, x, 1, AISConfig(steps=300, chains=128, initial_step_size=0.1), generator=g)
    assert float((res.log_likelihood - true).abs().max()) < 0.1, (res.log_likelihood, true)


def small_decoder(act, bias=True):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 7, bias=bias), act, nn.Linear(7, 5), act, nn.Linear(5, 6, bias=bias)).double()


@pytest.mark.parametrize("act", [nn.Tanh(), nn.ReLU(), nn.LeakyReLU(0.2), nn.Sigmoid()], ids=lambda a: type(a).__name__)
@pytest.mark.parametrize("obs", ["bernoulli", "gaussian-linear", "gaussian-sigmoid", "gaussian-per-dim"])
@pytest.mark.parametrize("rows", [9, 300])  # few and many rows take different matrix-product forms
def test_mlp_gradient_by_hand_matches_autograd(act, obs, rows):
    net = small_decoder(act, bias=obs != "gaussian-linear")
    g = torch.Generator().manual_seed(1)
    z = torch.randn(rows, 3, generator=g, dtype=D64)
    x = torch.rand(rows, 6, generator=g, dtype=D64)
    std = torch.rand(6, generator=g, dtype=D64) + 0.2 if obs == "gaussian-per-dim" else 0.3
    if obs == "bernoulli":
        x = (x > 0.5).double()
        fn, ref = MLPLogLikelihood(net), lambda zz: bernoulli_log_prob(x, net(zz))
    else:
        out = "sigmoid" if obs == "gaussian-sigmoid" else "linear"
        fn = MLPLogLikelihood(net, "gaussian", std=std, mean_output=out)
        ref = lambda zz: gaussian_log_prob(x, torch.sigmoid(net(zz)) if out == "sigmoid" else net(zz), std)
    zz = z.clone().requires_grad_(True)
    ll_ref = ref(zz)
    (g_ref,) = torch.autograd.grad(ll_ref.sum(), zz)
    ll, grad = fn.value_and_grad(z, x)
    assert torch.allclose(ll, ll_ref, rtol=1e-12, atol=1e-10)
    assert torch.allclose(grad, g_ref, rtol=1e-10, atol=1e-10)
    assert torch.allclose(fn(z, x), ll_ref, rtol=1e-12, atol=1e-10)
    no_value, grad_only = fn.value_and_grad(z, x, value=False)  # HMC's inner leapfrog steps: gradient only
    assert no_value is None and torch.equal(grad_only, grad)
    assert torch.equal(z, zz.detach())  # the input is not modified


def test_mlp_gradient_by_hand_gives_the_same_ais_run_as_autograd():
    # Same kernel, same random numbers: the only difference is how ∇ log p(x|z) is computed (float64 rounding).
    net = small_decoder(nn.Tanh())
    x = (torch.rand(4, 6, generator=torch.Generator().manual_seed(2), dtype=D64) > 0.5).double()
    cfg = AISConfig(steps=30, initial_step_size=0.05)
    by_hand = ais_log_likelihood(MLPLogLikelihood(net), x, 3, cfg, generator=torch.Generator().manual_seed(3))
    auto = ais_log_likelihood(
        lambda zz, xx: bernoulli_log_prob(xx, net(zz)), x, 3, cfg, generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(by_hand.log_weights, auto.log_weights, rtol=0, atol=1e-9)
    assert by_hand.acceptance == auto.acceptance and torch.allclose(by_hand.step_size, auto.step_size)


def test_mlp_log_likelihood_refuses_what_it_cannot_differentiate():
    with pytest.raises(TypeError, match="expected nn.Linear at position 0"):
        MLPLogLikelihood(nn.Sequential(nn.Tanh(), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="unsupported activation ELU"):
        MLPLogLikelihood(nn.Sequential(nn.Linear(2, 2), nn.ELU(), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="must end in an nn.Linear"):
        MLPLogLikelihood(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
    with pytest.raises(ValueError, match="needs std"):
        MLPLogLikelihood(nn.Sequential(nn.Linear(2, 2)), "gaussian")
    with pytest.raises(ValueError, match="std must be > 0"):
        MLPLogLikelihood(nn.Sequential(nn.Linear(2, 2)), "gaussian", std=0.0)


def test_example_batching_does_not_change_the_estimator():
    fn, x, _, true = linear_gaussian(n=6)
    cfg = AISConfig(steps=200, initial_step_size=0.1, batch_examples=1)
    res = ais_log_likelihood(fn, x, 2, cfg, generator=torch.Generator().manual_seed(2))
    assert res.log_likelihood.shape == (6,) and res.step_size.shape == (6,)
    assert float((res.log_likelihood - true).abs().max()) < 0.8


def test_bad_inputs_give_clear_errors():
    fn, x, z, _ = linear_gaussian(n=3)
    with pytest.raises(ValueError, match="posterior_samples must have shape"):
        ais_log_likelihood(fn, x, 2, AISConfig(steps=2), posterior_samples=z[:2])
    with pytest.raises(ValueError, match="one value per row"):
        ais_log_likelihood(lambda zz, xx: zz, x, 2, AISConfig(steps=2))
    with pytest.raises(ValueError, match="initial_step_size"):
        AISConfig(initial_step_size=1.0)
