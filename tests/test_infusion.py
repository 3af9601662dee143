"""Infusion Training (raygen/algorithms/infusion.py), checked against independent computations.

References: closed forms (the infusion-rate schedules, a one-step linear-Gaussian chain whose p(x) is
Gaussian), torch.distributions (operator and mixture-proposal densities), scipy.stats, binomial
tolerances for the infusion mask, finite differences for the reparametrised gradients, and forward
hooks recording what the batch-norm layers actually saw for the statistics pass.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch import nn
from torch.distributions import Categorical, MixtureSameFamily, Normal

from raygen.algorithms.infusion import Infusion, infusion_rates, step_weights
from raygen.config import ConfigError, build_config
from raygen.data.base import Dataset
from raygen.engine.loop import train
from raygen.metrics import importance_estimates


class StubOperator(nn.Module):
    """Raw outputs under test control: mean head a·z + b, variance head a constant per step index."""

    def __init__(self, a: float = 1.0, b: float = 0.0, var_raw: tuple[float, ...] = (0.0,)) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))
        self.b = float(b)
        self.var_raw = var_raw

    def forward(self, z: torch.Tensor, step: int) -> torch.Tensor:
        c = self.var_raw[min(step, len(self.var_raw) - 1)]
        return torch.cat([self.a * z + self.b, torch.full_like(z, c)], -1)


def _points(train: torch.Tensor, test: torch.Tensor | None = None) -> Dataset:
    test = train if test is None else test
    return Dataset(name="stub", kind="points", shape=(train.shape[1],), splits={"train": train, "valid": test, "test": test})


def _stub_algo(train: torch.Tensor, net: nn.Module, test: torch.Tensor | None = None, **overrides) -> Infusion:
    cfg = build_config(algorithm="infusion", dataset="toy2d:circle", overrides=overrides)
    assert cfg.algo.mean_output == "linear"  # the points preset; the stub's mean head is then a·z + b
    algo = Infusion(cfg, _points(train, test), net=net)
    algo.setup(train)
    return algo


def _var(raw: float, beta: float = 0.1, eps: float = 1e-4) -> float:
    return beta / (1 + math.exp(-raw)) + eps  # §3.5: β·sigmoid(head) + ε


# ---------------------------------------------------------------- schedules, weights, config


def test_infusion_rate_schedules_exact_values():
    assert infusion_rates("increasing", 0.1, 0.02, 5) == pytest.approx([0.1, 0.12, 0.14, 0.16, 0.18], abs=1e-15)
    assert infusion_rates("constant", 0.06, 0.02, 4) == [0.06] * 4
    cfg = build_config(algorithm="infusion", dataset="digits", overrides={"algo.net.hidden": [8]})
    algo = Infusion(cfg, _digits_like())
    # Paper MNIST defaults (§3.5): T = 15, α⁽⁰⁾ = 0, ω = 0.01.
    assert algo.alphas == pytest.approx([0.01 * t for t in range(15)], abs=1e-15)


def test_step_weights_are_t_over_T():
    assert step_weights("linear", 4) == [0.25, 0.5, 0.75, 1.0]
    assert step_weights("uniform", 3) == [1.0, 1.0, 1.0]


def _digits_like() -> Dataset:
    x = torch.rand(40, 1, 8, 8)
    return Dataset(name="digits", kind="image", shape=(1, 8, 8), splits={"train": x, "valid": x, "test": x})


def test_unknown_schedule_is_rejected_naming_the_key():
    with pytest.raises(ConfigError, match=r"algo\.schedule"):
        build_config(algorithm="infusion", dataset="digits", overrides={"algo.schedule": "cosine"})
    with pytest.raises(ConfigError, match=r"algo\.procedure"):
        build_config(algorithm="infusion", dataset="digits", overrides={"algo.procedure": "elbo"})


def test_infusion_rate_above_one_is_rejected_naming_the_keys():
    with pytest.raises(ConfigError, match=r"algo\.omega.*algo\.steps"):
        build_config(algorithm="infusion", dataset="digits", overrides={"algo.omega": 0.1, "algo.steps": 15})


def test_presets_follow_the_data_kind():
    image = build_config(algorithm="infusion", dataset="digits")
    points = build_config(algorithm="infusion", dataset="toy2d:swissroll")
    assert image.algo.mean_output == "sigmoid" and image.train.batch_size == 100
    assert image.algo.steps == 15 and image.algo.sampling_steps == 30
    # MNIST keeps the paper's 2×1200 operator and the original code's Adam 1e-3; 8×8 digits (not in the paper)
    # get a smaller operator trained at a higher rate (dataset preset: the 1000-update first run).
    mnist = build_config(algorithm="infusion", dataset="mnist")
    assert mnist.algo.net.hidden == (1200, 1200) and mnist.train.lr == 1e-3
    assert len(image.algo.net.hidden) == 2 and max(image.algo.net.hidden) < 1200 and image.train.lr > 1e-3
    assert points.algo.mean_output == "linear" and points.algo.net.hidden == (128, 128) and points.algo.omega == 0.05


def test_network_with_wrong_output_size_is_rejected():
    class Wrong(nn.Module):
        def forward(self, z, step):
            return z

    cfg = build_config(algorithm="infusion", dataset="toy2d:circle")
    with pytest.raises(ValueError, match="2×D = 4"):
        Infusion(cfg, _points(torch.randn(10, 2)), net=Wrong())


# ---------------------------------------------------------------- densities


def test_operator_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    cfg = build_config(algorithm="infusion", dataset="digits", overrides={"algo.net.hidden": [16, 16]})
    algo = Infusion(cfg, _digits_like()).eval()
    z, target = torch.rand(5, 64), torch.rand(5, 64)
    for t in (1, 3, 15, 30):  # 30 > T: sampling reuses step T's batch norm
        h = algo.net(z, min(t, 15) - 1)
        mean = torch.sigmoid(h[:, :64])
        var = 0.1 * torch.sigmoid(h[:, 64:]) + 1e-4
        expected = Normal(mean, var.sqrt()).log_prob(target).sum(-1)
        torch.testing.assert_close(algo.log_prob_step(target, z, t), expected, rtol=1e-5, atol=1e-4)


def test_log_q_is_the_exact_mixture_density():
    algo = _stub_algo(torch.randn(20, 3), StubOperator())
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3)
    mean, std = torch.randn(6, 3), torch.rand(6, 3) + 0.05
    for alpha in (0.0, 0.3, 1.0):
        z, _ = algo.infuse(mean, std, x, alpha, g)
        mix = MixtureSameFamily(
            Categorical(probs=torch.tensor([1 - alpha, alpha]).expand(6, 3, 2)),
            Normal(torch.stack([mean, x], -1), torch.stack([std, torch.full_like(std, 0.01)], -1)),
        )
        expected = (Normal(mean, std).log_prob(z) - mix.log_prob(z)).sum(-1)
        torch.testing.assert_close(algo._log_ratio(z, mean, std, x, alpha), expected, rtol=1e-4, atol=1e-4)


def test_infusion_mask_takes_the_target_with_probability_alpha():
    # Operator mean 0 far from the target 10: a state dimension is near 10 iff the target was infused.
    n, dim = 4000, 5
    algo = _stub_algo(torch.randn(50, dim), StubOperator(a=0.0), **{
        "algo.steps": 6, "algo.alpha0": 0.1, "algo.omega": 0.1})
    x = torch.full((n, dim), 10.0)
    frames = algo.infusion_chain(x, generator=torch.Generator().manual_seed(2))
    assert frames.shape == (7, n, dim)  # z̃⁽⁰⁾..z̃⁽⁵⁾ and the final mean
    for t, alpha in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]):
        infused = (frames[t] - 10).abs() < 0.1
        tol = 5 * math.sqrt(alpha * (1 - alpha) / infused.numel())
        assert abs(infused.float().mean().item() - alpha) < tol, t
        # δ_x is a Gaussian of std target_std around x (footnote 1; 0.01 as the original code).
        assert (frames[t][infused] - 10).std().item() == pytest.approx(0.01, rel=0.05)


# ---------------------------------------------------------------- objectives


def test_denoising_loss_is_the_t_over_T_weighted_sum_of_step_nlls():
    var_raw = (-1.0, 0.0, 1.0, 2.0)  # a different, known variance for each step
    algo = _stub_algo(torch.randn(30, 2), StubOperator(a=0.0, b=0.3, var_raw=var_raw), **{
        "algo.steps": 4})
    x = torch.randn(7, 2)
    terms = algo.chain_terms(x, torch.Generator().manual_seed(3))
    # Mean 0.3 whatever the input, so −log p⁽ᵗ⁾(x | z̃⁽ᵗ⁻¹⁾) is known independently of the chain's draws.
    nll = torch.stack([-Normal(0.3, math.sqrt(_var(c))).log_prob(x).sum(-1) for c in var_raw], 1)
    torch.testing.assert_close(terms["nll_steps"], nll)
    eta = torch.tensor([1 / 4, 2 / 4, 3 / 4, 4 / 4])  # η⁽ᵗ⁾/η₀ = t/T (footnote 3)
    torch.testing.assert_close(terms["loss"], (nll * eta).sum(-1))


def _finite_difference(algo: Infusion, x: torch.Tensor, seed: int, h: float = 1e-5) -> float:
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            algo.net.a += sign * h
        torch.manual_seed(seed)  # same noise and masks: the loss is then a smooth function of a
        with torch.no_grad():
            values.append(algo.chain_terms(x)["loss"].double().sum().item())
        with torch.no_grad():
            algo.net.a -= sign * h
    return (values[0] - values[1]) / (2 * h)


@pytest.mark.parametrize("procedure", ["lower_bound", "denoising"])
def test_lower_bound_procedure_backpropagates_through_the_chain_sampling(procedure):
    torch.set_default_dtype(torch.float64)
    try:
        algo = _stub_algo(torch.randn(30, 3), StubOperator(a=0.7, b=0.1, var_raw=(0.5,)), **{
            "algo.steps": 3, "algo.alpha0": 0.2, "algo.omega": 0.2, "algo.procedure": procedure})
        x = torch.randn(8, 3)
        torch.manual_seed(4)
        algo.chain_terms(x)["loss"].sum().backward()
        autograd = algo.net.a.grad.item()
        fd = _finite_difference(algo, x, seed=4)
    finally:
        torch.set_default_dtype(torch.float32)
    if procedure == "lower_bound":  # reparametrised (§3.3.4.1): the full derivative of the sampled loss
        assert autograd == pytest.approx(fd, rel=1e-4)
    else:  # denoising: the chain is an input, so autograd misses the path through the samples
        assert abs(autograd - fd) > 1e-2 * abs(fd)


def test_lower_bound_procedure_with_uniform_weights_maximises_the_bound():
    algo = _stub_algo(torch.randn(30, 3), StubOperator(a=0.5, var_raw=(0.0,)), **{
        "algo.steps": 4, "algo.alpha0": 0.0, "algo.omega": 0.2, "algo.procedure": "lower_bound",
        "algo.step_weights": "uniform"})
    terms = algo.chain_terms(torch.randn(5, 3), torch.Generator().manual_seed(5))
    # α⁽⁰⁾ = 0 makes log p⁽⁰⁾ − log q⁽⁰⁾ = 0, so the loss is exactly −ℓ.
    torch.testing.assert_close(terms["loss"].detach(), -terms["lower_bound"])


# ---------------------------------------------------------------- likelihood estimates


def test_importance_estimate_converges_to_exact_log_likelihood_one_step_linear_gaussian():
    # T = 1: z⁽⁰⁾ ~ p⁽⁰⁾ = N(m, s²) (fitted), x | z⁽⁰⁾ ~ N(a·z⁽⁰⁾ + b, v)  ⇒  p(x) = N(a·m + b, a²s² + v).
    torch.manual_seed(6)
    train = torch.randn(4000, 2) * torch.tensor([0.5, 1.5]) + torch.tensor([1.0, -2.0])
    a, b, raw = 0.8, 0.2, 1.0
    algo = _stub_algo(train, StubOperator(a=a, b=b, var_raw=(raw,)), **{
        "algo.steps": 1, "algo.alpha0": 0.3, "algo.net.batch_norm": "none", "algo.var_scale": 0.5})
    m, s = train.double().mean(0), (train.double().var(0, unbiased=False) + 1e-5).sqrt()
    v = _var(raw, beta=0.5)
    x = torch.tensor([[1.5, -2.5], [0.2, 0.0], [1.0, -4.0]])
    exact = norm.logpdf(x.double().numpy(), (a * m + b).numpy(), (a * a * s * s + v).sqrt().numpy()).sum(-1)
    ell, _ = algo.log_weights(x, 20_000, torch.Generator().manual_seed(7))
    est = importance_estimates(ell)
    assert (est["importance"] >= est["lower_bound"]).all()
    torch.testing.assert_close(est["importance"], torch.from_numpy(exact), atol=0.03, rtol=0)
    assert (est["lower_bound"] < torch.from_numpy(exact) - 0.1).all()  # the bound is strictly loose here


def test_full_evaluation_reports_lb_below_is_with_repeat_std_and_isotropic_variant():
    torch.manual_seed(8)
    overrides = {"algo.net.hidden": [16], "algo.steps": 3, "eval.repeats": 3, "eval.likelihood_samples": 5,
                 "eval.isotropic": True, "train.batch_size": 10}
    cfg = build_config(algorithm="infusion", dataset="digits", overrides=overrides)
    data = _digits_like()
    algo = Infusion(cfg, data)
    algo.setup(data.splits["train"])
    algo.eval()
    out = algo.evaluate(data.splits["test"][:12], "test", full=True, generator=torch.Generator().manual_seed(9))
    expected = {"lower_bound", "lower_bound_std", "importance", "importance_std", "importance_isotropic",
                "importance_isotropic_std", "isotropic_variance", "bits_per_dim", "bits_per_dim_std",
                "bits_per_dim_importance", "bits_per_dim_importance_std"}
    assert set(out) == expected
    assert out["importance"] >= out["lower_bound"]
    # Dequantised 8x8 images: bits/dim = −ℓ/(64 ln 2) + 8, and its spread over repeats scales the same way.
    assert out["bits_per_dim"] == pytest.approx(-out["lower_bound"] / (64 * math.log(2)) + 8)
    assert out["bits_per_dim_importance"] == pytest.approx(-out["importance"] / (64 * math.log(2)) + 8)
    assert out["bits_per_dim_std"] == pytest.approx(out["lower_bound_std"] / (64 * math.log(2)))
    assert out["lower_bound_std"] > 0 and out["importance_std"] > 0  # repeats draw fresh chains and noise
    # The isotropic variance maximises E[log N(x; μ, s²I)]: the mean squared output error on the train set.
    assert 0 < out["isotropic_variance"] < 1


def test_isotropic_variant_uses_the_fitted_variance_on_the_same_chains():
    # Output mean b whatever the input: the fitted s² and the change of output density are known exactly.
    b, raw = 0.4, 0.0
    train_x = torch.randn(200, 2)
    algo = _stub_algo(train_x, StubOperator(a=0.0, b=b, var_raw=(raw,)), **{"algo.steps": 2})
    s2 = algo.fit_isotropic_variance(torch.Generator().manual_seed(10))
    assert s2 == pytest.approx(((train_x.double() - b) ** 2).mean().item(), rel=1e-6)
    x = torch.randn(4, 2)
    ell, ell_iso = algo.log_weights(x, 3, torch.Generator().manual_seed(11), iso_var=s2)
    diagonal_ell, _ = algo.log_weights(x, 3, torch.Generator().manual_seed(11))
    torch.testing.assert_close(ell, diagonal_ell)  # the same chains
    shift = (Normal(b, math.sqrt(s2)).log_prob(x) - Normal(b, math.sqrt(_var(raw))).log_prob(x)).sum(-1)
    torch.testing.assert_close(ell_iso - ell, shift.double()[:, None].expand(4, 3), rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- batch norm: the App. A.1 statistics pass


def _record_bn_inputs(algo: Infusion) -> dict[nn.Module, list[torch.Tensor]]:
    seen: dict[nn.Module, list[torch.Tensor]] = {}
    for bn in algo._batch_norms():
        seen[bn] = []

        def hook(module, args, store=seen[bn]):
            if module.training and module.track_running_stats:  # only what updates the running statistics
                store.append(args[0].detach().clone())

        bn.register_forward_pre_hook(hook)
    return seen


def test_statistics_pass_uses_exact_per_step_training_set_statistics():
    torch.manual_seed(12)
    cfg = build_config(algorithm="infusion", dataset="digits", overrides={
        "algo.net.hidden": [16, 8], "algo.steps": 3, "train.batch_size": 100, "eval.repeats": 1,
        "eval.likelihood_samples": 2})
    train_x, test_x = torch.rand(250, 1, 8, 8), torch.rand(30, 1, 8, 8)
    data = Dataset(name="digits", kind="image", shape=(1, 8, 8),
                   splits={"train": train_x, "valid": test_x, "test": test_x})
    algo = Infusion(cfg, data)
    algo.setup(train_x)
    seen = _record_bn_inputs(algo)
    assert len(seen) == 2 * 3  # 2 hidden layers × 3 steps, each its own BatchNorm1d
    algo.eval()
    algo.evaluate(test_x, "test", full=True, generator=torch.Generator().manual_seed(13))
    for bn, batches in seen.items():
        # The pass ran over the entire training set (250 examples in 3 minibatches), not over the test split.
        assert sum(len(b) for b in batches) == 250 and len(batches) == 3
        rows = torch.cat(batches)
        torch.testing.assert_close(bn.running_mean, rows.mean(0), rtol=1e-5, atol=1e-6)
        within = sum(len(b) * b.var(0) for b in batches) / 250  # example-weighted within-minibatch variance
        torch.testing.assert_close(bn.running_var, within, rtol=1e-5, atol=1e-6)
        assert bn.momentum == 0.1  # training momentum restored after the pass


def test_quick_evaluation_uses_batch_statistics_and_leaves_running_statistics_alone():
    torch.manual_seed(14)
    cfg = build_config(algorithm="infusion", dataset="digits", overrides={"algo.net.hidden": [16], "algo.steps": 2})
    data = _digits_like()
    algo = Infusion(cfg, data)
    algo.setup(data.splits["train"])
    before = {k: v.clone() for k, v in algo.state_dict().items()}
    algo.eval()
    out = algo.evaluate(data.splits["valid"], "valid", full=False, generator=torch.Generator().manual_seed(15))
    assert set(out) == {"lower_bound"} and math.isfinite(out["lower_bound"])
    for k, v in algo.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not algo.net.training  # mode restored


# ---------------------------------------------------------------- sampling, inpainting, pictures, training


def test_sampling_chains_and_inpainting_shapes_and_clamping():
    torch.manual_seed(16)
    cfg = build_config(algorithm="infusion", dataset="digits", overrides={
        "algo.net.hidden": [16], "algo.steps": 3, "algo.sampling_steps": 5})
    data = _digits_like()
    algo = Infusion(cfg, data)
    algo.setup(data.splits["train"])
    g = torch.Generator().manual_seed(17)
    samples = algo.sample(7, generator=g)
    assert samples.shape == (7, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1  # sigmoid means
    assert algo.chains(3, generator=g).shape == (6, 3, 1, 8, 8)  # z⁽⁰⁾ + 5 sampling steps (> T = 3)
    x = data.splits["test"][:4]
    mask = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    mask[:, :, :4] = True
    filled = algo.inpaint(x, mask, generator=g)
    assert torch.equal(filled[mask], x[mask])  # the known half stays clamped
    assert not torch.equal(filled[~mask], x[~mask])


def test_artifacts_for_images_and_points():
    torch.manual_seed(18)
    cfg = build_config(algorithm="infusion", dataset="digits", overrides={
        "algo.net.hidden": [8], "algo.steps": 2, "algo.sampling_steps": 3, "eval.sample_count": 8,
        "eval.chain_count": 2})
    data = _digits_like()
    algo = Infusion(cfg, data)
    algo.setup(data.splits["train"])
    names = [a.name for a in algo.artifacts(data, generator=torch.Generator().manual_seed(19))]
    assert names == ["samples.png", "chains.png", "infusion_chains.png", "inpainting.png"]
    points = _stub_algo(torch.randn(50, 2), StubOperator(), **{"eval.sample_count": 20})
    arts = points.artifacts(_points(torch.randn(50, 2)), generator=torch.Generator().manual_seed(20))
    assert [a.name for a in arts] == ["samples.png", "chains.png"]
    assert all(a.data[:4] == b"\x89PNG" for a in arts)


def test_short_training_on_digits_improves_the_valid_lower_bound():
    cfg = build_config(algorithm="infusion", dataset="digits", overrides={
        "algo.net.hidden": [64, 64], "algo.steps": 5, "algo.omega": 0.05, "train.steps": 80,
        "train.eval_every": 10, "train.log_every": 10, "train.eval_examples": 200, "eval.final": False,
        "train.checkpoint_every": 1000})
    reports: list[tuple[int, dict[str, float]]] = []
    train(cfg, lambda step, metrics, checkpoint=None, artifacts=(): reports.append((step, metrics)))
    valid = [m["valid/lower_bound"] for _, m in reports if "valid/lower_bound" in m]
    assert len(valid) == 8
    assert valid[-1] > valid[0] + 40  # nats per example (about +60 in practice)
    train_metrics = [m for _, m in reports if "train/loss" in m][-1]
    assert {"train/lower_bound", "train/nll_step1", "train/nll_step5"} <= set(train_metrics)


def test_training_bound_cadence_changes_metrics_only():
    params = []
    for every in (1, 3):
        cfg = build_config(algorithm="infusion", dataset="digits", overrides={
            "algo.net.hidden": [16], "algo.steps": 3, "algo.train_bound_every": every})
        torch.manual_seed(21)
        data = _digits_like()
        algo = Infusion(cfg, data)
        algo.setup(data.splits["train"])
        algo.train()
        keys = [set(algo.train_step(data.splits["train"][:10])) for _ in range(4)]
        has_bound = ["lower_bound" in k for k in keys]
        assert has_bound == ([True] * 4 if every == 1 else [True, False, False, True])
        params.append(torch.cat([p.detach().flatten() for p in algo.parameters()]))
    assert torch.equal(params[0], params[1])  # same updates and the same random stream
