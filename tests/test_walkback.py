"""Variational Walkback: operators, schedules, the paper loss vs the code ablation, updates, p*, bounds, sampling.

Numerics are checked against torch.distributions and closed forms (a one-step linear-Gaussian chain whose
marginal is Gaussian; the detailed-balance KL of a Gaussian AR(1) and of a rotating Gaussian chain).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raygen.algorithms.walkback import Walkback, WalkbackConfig
from raygen.config import ConfigError, build_config
from raygen.data import load_dataset
from raygen.engine.loop import build, train

TINY = {
    "data.toy_samples": 300,
    "data.max_train": 300,
    "algo.net.hidden": [16, 16],
    "algo.reversibility_steps": 0,
    "eval.likelihood_samples": 4,
    "eval.repeats": 2,
    "eval.final": False,
    "train.progress": False,
}


def _config(dataset: str = "toy2d:swissroll", **overrides):
    return build_config(algorithm="walkback", dataset=dataset, overrides={**TINY, **overrides})


def _algo(dataset: str = "toy2d:swissroll", net: nn.Module | None = None, **overrides) -> Walkback:
    torch.manual_seed(0)
    if net is not None:  # a stub network has no output layer whose F_σ bias init_noise could set
        overrides = {"algo.init_noise": None, **overrides}
    cfg = _config(dataset, **overrides)
    data = load_dataset(cfg.dataset, cfg.data)
    algo = Walkback(cfg, data, net=net)
    algo.setup(data.splits["train"])
    return algo


class Stub(nn.Module):
    """F(s) = [2s + 1, −s] (F_μ, F_σ), recording every input; the dummy parameter only gives Adam something."""

    def __init__(self, mu=lambda s: 2 * s + 1, sigma=lambda s: -s) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.mu, self.sigma = mu, sigma
        self.calls: list[tuple[torch.Tensor, int]] = []

    def forward(self, s: torch.Tensor, step: int = 0) -> torch.Tensor:
        self.calls.append((s.detach().clone(), step))
        return torch.cat([self.mu(s), self.sigma(s)], 1) + 0 * self.w


# ---------------------------------------------------------------------------------------------- operators


def test_gaussian_operator_matches_torch_normal():
    algo = _algo()
    algo.eval()
    s, x = torch.randn(7, 2), torch.randn(7, 2)
    out = algo.net(s, 1)
    a, T = algo.cfg.alpha, 2.5
    tr = algo.transition(s, 1, T)
    mu = (1 - a) * s + a * out[:, :2]
    sigma = T * F.softplus(out[:, 2:])
    torch.testing.assert_close(tr.mean, mu)
    torch.testing.assert_close(tr.std, sigma)
    expected = torch.distributions.Normal(mu, sigma).log_prob(x).sum(1)
    torch.testing.assert_close(tr.log_prob(x), expected)


def test_bernoulli_operator_matches_torch_bernoulli():
    algo = _algo(**{"algo.operator": "bernoulli"})
    algo.eval()
    s = torch.rand(9, 2)
    x = torch.bernoulli(torch.full((9, 2), 0.4))
    out = algo.net(s, 0)
    a, T = algo.cfg.alpha, 3.0
    tr = algo.transition(s, 0, T)
    rho = torch.sigmoid(((1 - a) * s + a * out) / T)
    torch.testing.assert_close(tr.expected(), rho)
    expected = torch.distributions.Bernoulli(probs=rho).log_prob(x).sum(1)
    torch.testing.assert_close(tr.log_prob(x), expected, atol=1e-5, rtol=1e-5)


def test_network_width_must_fit_the_operator():
    wrong = nn.Linear(2, 2)  # a gaussian operator needs 2×D = 4 outputs
    with pytest.raises(ConfigError, match=r"algo\.operator='gaussian'.*algo\.net.*4"):
        _algo(net=_Adapter(wrong))


class _Adapter(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, s, step=0):
        return self.inner(s)


def test_config_rejects_unknown_operator_naming_the_key():
    with pytest.raises(ConfigError, match=r"algo\.operator"):
        _config(**{"algo.operator": "laplace"})


def test_list_schedule_needs_fixed_k_and_temperatures():
    with pytest.raises(ConfigError, match=r"algo\.temperatures"):
        _config(**{"algo.schedule": "list", "algo.k_mode": "fixed"})
    with pytest.raises(ConfigError, match=r"algo\.k_mode"):
        _config(**{"algo.schedule": "list", "algo.temperatures": [1, 2], "algo.k_mode": "random"})


# ---------------------------------------------------------------------------------------------- schedules


def test_geometric_schedule_temperatures_and_initial_t1_steps():
    algo = _algo(**{"algo.schedule": "geometric", "algo.factor": 1.5, "algo.t0": 1.0})
    traj = algo.sampler.trajectory(heating=4, n=2)
    # Algorithm 1: T = 1 for t <= n+1, then multiplied by the factor after each step.
    assert traj.levels == (0, 0, 0, 1, 2, 3)
    assert traj.temperatures == pytest.approx((1, 1, 1, 1.5, 1.5**2, 1.5**3))


def test_sqrt2_schedule_is_the_appendix_schedule():
    algo = _algo(**{"algo.schedule": "sqrt2", "algo.k_mode": "fixed", "algo.walkback_steps": 6})
    traj = algo.sampler.sample(algo.t_max, torch.Generator().manual_seed(0))
    assert traj.K == 6 and traj.n == 0
    assert traj.temperatures == pytest.approx([math.sqrt(2**t) for t in range(6)])


def test_list_schedule_uses_the_given_temperatures():
    temps = [1.0, 1.7, 4.0, 9.5]
    algo = _algo(**{"algo.schedule": "list", "algo.temperatures": temps, "algo.k_mode": "fixed"})
    traj = algo.sampler.sample(algo.t_max, torch.Generator().manual_seed(0))
    assert traj.temperatures == pytest.approx(temps) and traj.levels == (0, 1, 2, 3)


def test_evaluation_trajectory_adds_extra_t1_steps():
    algo = _algo(**{"algo.k_mode": "fixed", "algo.walkback_steps": 4, "algo.extra_steps": 3})
    traj = algo.sampler.evaluation(algo.t_max)
    assert traj.K == 7 and traj.levels == (0, 0, 0, 0, 1, 2, 3)


@pytest.mark.parametrize("t_max, schedule, heating", [(1000.0, "sqrt2", 10), (1025.0, "sqrt2", 11),
                                                       (1000.0, "geometric", 5)])
def test_random_k_is_ceil_log_tmax_plus_uniform_n(t_max, schedule, heating):
    algo = _algo(**{"algo.schedule": schedule, "algo.factor": 2.0, "algo.k_mode": "random", "algo.n1": 3,
                    "algo.t_max_rule": "noise_ratio"})
    algo.data_var.fill_(t_max)
    algo.noise_var.fill_(1.0)
    assert algo.t_max == pytest.approx(t_max)
    # sqrt2: ceil(log2 T_max) as in Algorithm 1; factor 2 on σ is factor 4 on the variance: ceil(log4 T_max).
    g = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(200):
        traj = algo.sampler.sample(algo.t_max, g)
        assert 0 <= traj.n <= 3 and traj.K == heating + traj.n
        seen.add(traj.n)
    assert seen == {0, 1, 2, 3}


def test_fixed_heating_adds_algorithm1_initial_t1_steps_to_a_fixed_number_of_heating_steps():
    algo = _algo(**{"algo.schedule": "geometric", "algo.factor": 1.1, "algo.k_mode": "fixed_heating",
                    "algo.walkback_steps": 4, "algo.n1": 3, "algo.extra_steps": 2})
    assert algo.sampler.num_levels == 4
    g = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(200):
        traj = algo.sampler.sample(algo.t_max, g)
        # Algorithm 1: n ~ U{0..N1} steps at T = 1 (level 0), then the 4 heating steps of Figs 3.8/3.9's ladder.
        assert traj.heating == 4 and traj.levels == (0,) * (traj.n + 1) + (1, 2, 3)
        assert traj.temperatures == pytest.approx([1.1 ** lv for lv in traj.levels])
        seen.add(traj.n)
    assert seen == {0, 1, 2, 3}
    # The sampler's 2 extra T = 1 steps are a trajectory training visits (n = 2 <= N1).
    assert algo.sampler.evaluation(algo.t_max).levels == (0, 0, 0, 1, 2, 3)


def test_points_preset_starts_the_heating_ladder_at_the_data_noise_scale():
    # Figs 3.8/3.9: 30 heating steps, T ×1.1 per step, σ ∝ T. The T=1 noise starts at a tenth of the data std,
    # so the top step's noise (15.9× larger) spans the data rather than exceeding it twenty-fold.
    algo = _algo(**{"algo.net.hidden": [16, 16]})
    x = load_dataset(algo.run_config.dataset, algo.run_config.data).splits["train"]
    data_std = x.double().numpy().std(0)  # numpy, per dimension
    unit = 0.1 * math.sqrt(float((data_std**2).mean()))
    traj = algo.sampler.evaluation(algo.t_max)
    assert traj.heating == 30 and max(traj.temperatures) == pytest.approx(1.1**29)
    with torch.no_grad(), algo._evaluating():
        assert torch.allclose(algo.transition(x, 0, 1.0).std, torch.full_like(x, unit), rtol=1e-4)
        top = algo.transition(x, traj.levels[-1], traj.temperatures[-1]).std
        assert torch.allclose(top, torch.full_like(x, 1.1**29 * unit), rtol=1e-4)
    end = _heated_end_state(algo, x).double().numpy().std(0)
    assert ((end > data_std) & (end < 5 * data_std)).all()
    # The network's own initial noise softplus(F_σ) ≈ 0.69 would heat to a state more than ten times the data's.
    wide = _algo(**{"algo.net.hidden": [16, 16], "algo.init_noise": None})
    assert (_heated_end_state(wide, x).double().numpy().std(0) > 10 * data_std).all()


def test_random_k_is_capped():
    algo = _algo(**{"algo.k_mode": "random", "algo.max_heating_steps": 7, "algo.n1": 0,
                    "algo.t_max_rule": "noise_ratio"})
    algo.data_var.fill_(1e12)
    algo.noise_var.fill_(1.0)
    assert algo.sampler.sample(algo.t_max, torch.Generator()).K == 7


@pytest.mark.parametrize("noise, power", [("variance", 0.5), ("std", 1.0)])
def test_span_schedule_reaches_the_noise_of_sigma2_max_at_the_last_heating_step(noise, power):
    algo = _algo(net=Stub(), **{"algo.schedule": "span", "algo.walkback_steps": 5, "algo.k_mode": "fixed",
                                "algo.temperature_noise": noise, "algo.t_max_rule": "noise_ratio"})
    algo.data_var.fill_(400.0)
    algo.noise_var.fill_(4.0)  # T_max = 100 (a variance ratio)
    traj = algo.sampler.evaluation(algo.t_max)
    top = 100.0 ** (1 / (2 * power))
    assert traj.heating == 5 and traj.levels == (0,) * 6 + (1, 2, 3, 4)
    assert traj.temperatures[5:] == pytest.approx([top ** (lv / 4) for lv in range(5)])
    # The operator's noise at the top temperature is T_max times its T = 1 noise, in variance.
    s = torch.randn(7, 2)
    ratio = algo.transition(s, 4, traj.temperatures[-1]).std.pow(2) / algo.transition(s, 4, 1.0).std.pow(2)
    assert torch.allclose(ratio, torch.full_like(ratio, 100.0))
    # σ ∝ √T (Algorithm 1: "noise of variance Tσ²") or σ ∝ T (§3.3), with softplus(F_σ(s)) = softplus(−s).
    assert torch.allclose(algo.transition(s, 0, 9.0).std, 9.0**power * F.softplus(-s))


def test_isotropic_operator_has_one_std_per_state_and_trains():
    algo = _algo(net=Stub(), **{"algo.covariance": "isotropic", "algo.temperature_noise": "std"})
    s = torch.randn(5, 2)
    std = algo.transition(s, 0, 3.0).std
    assert torch.allclose(std, 3.0 * F.softplus(-s.mean(1, keepdim=True)).expand(5, 2))
    cfg = _config(**{"algo.covariance": "isotropic", "algo.k_mode": "fixed", "algo.walkback_steps": 3,
                     "train.steps": 6, "train.batch_size": 50})
    assert cfg.to_dict()["algo"]["covariance"] == "isotropic"  # the run's stored config says what was trained
    trained = train(cfg, lambda *a, **k: None)
    std = trained.transition(torch.randn(4, 2), 0, 1.0).std
    assert torch.allclose(std[:, :1].expand(4, 2), std)


def test_evaluation_suite_stores_k_heating_steps_and_train_eval():
    from raygen.engine.evaluate import evaluation_suite

    cfg = _config(**{"algo.schedule": "span", "algo.walkback_steps": 3, "algo.k_mode": "random",
                     "algo.extra_steps": 2, "eval.likelihood_samples": 7, "eval.parzen": False,
                     "eval.test_examples": 20, "eval.train_examples": 10})
    algo, dataset = build(cfg)
    metrics, _ = evaluation_suite(algo, dataset, cfg, torch.Generator().manual_seed(0), pictures=False)
    assert metrics["test/importance_k"] == 7 == metrics["train_eval/importance_k"]
    # Table 3.1a's row label is the number of heating steps; the evaluated chain also has 2 extra T = 1 steps.
    assert metrics["test/heating_steps"] == 3 and metrics["test/walkback_steps"] == 5
    assert not any(k.startswith("train/") for k in metrics)


def test_initial_t_max_is_measured_once_with_the_initial_noise_set_from_the_data():
    cfg = _config(**{"algo.schedule": "span", "algo.temperature_noise": "variance", "algo.init_noise": 0.1,
                     "algo.walkback_steps": 4, "algo.t_max_rule": "initial", "algo.net.hidden": [32, 32],
                     "train.steps": 40, "train.batch_size": 100, "train.lr": 1e-2})
    algo, dataset = build(cfg)
    x = dataset.splits["train"].double()
    data_var = float(x.var(0, unbiased=False).mean())  # independent of the module's own statistics
    # softplus(F_σ) starts at a tenth of the data std (RMS over dimensions): T_max = σ²_max/σ² = 1/0.1².
    assert algo.t_max == pytest.approx(100.0, rel=1e-4)
    assert algo.t_max == pytest.approx(data_var / float(algo.noise_var), rel=1e-5)
    before = algo.t_max
    trained = train(cfg, lambda *a, **k: None)
    assert trained.t_max == pytest.approx(before) and float(trained.noise_var) != pytest.approx(float(algo.noise_var))


def _heated_end_state(algo: Walkback, x: torch.Tensor) -> torch.Tensor:
    """s_K of heating trajectories started at x (the q process of Algorithm 1, same operator at each level)."""
    with torch.no_grad(), algo._evaluating():
        s = algo._flat(x)
        for level, temperature in algo.sampler.evaluation(algo.t_max).steps():
            s = algo.transition(s, level, temperature).sample(torch.Generator().manual_seed(level))
    return s


def test_image_heating_ends_broad_relative_to_the_data_on_a_toy():
    # The image preset's heating (span, σ² ∝ T, T_max from the initial noise) on the swiss roll, after training.
    cfg = _config(**{"algo.schedule": "span", "algo.temperature_noise": "variance", "algo.init_noise": 0.1,
                     "algo.max_variance": "squared_range", "algo.walkback_steps": 10, "algo.k_mode": "random",
                     "algo.net.hidden": [32, 32], "train.steps": 200, "train.batch_size": 100, "train.lr": 1e-3})
    algo = train(cfg, lambda *a, **k: None)
    x = load_dataset(cfg.dataset, cfg.data).splits["train"]
    data = x.double().numpy()
    data_std = data.std(0)  # numpy, per dimension
    end = _heated_end_state(algo, x).double().numpy()
    assert (end.std(0) > 2 * data_std).all()
    assert (algo.pstar_var.sqrt().double().numpy() > 2 * data_std).all()  # p* follows the broad s_K
    # The end state has forgotten its start: little correlation between s_K and x in either coordinate.
    for d in range(2):
        assert abs(np.corrcoef(end[:, d], data[:, d])[0, 1]) < 0.3


def test_bernoulli_heating_reaches_near_uniform_states():
    # logits / T with T_max = 100 (t_max_rule auto = fixed for the bernoulli operator).
    cfg = _config("digits", **{"algo.operator": "bernoulli", "data.binarize": "threshold", "algo.schedule": "span",
                               "algo.walkback_steps": 6, "algo.k_mode": "fixed", "algo.net.hidden": [32, 32],
                               "train.steps": 30, "train.batch_size": 50})
    algo = train(cfg, lambda *a, **k: None)
    assert algo.t_max == 100.0
    x = load_dataset(cfg.dataset, cfg.data).splits["train"][:500]
    traj = algo.sampler.evaluation(algo.t_max)
    assert traj.temperatures[-1] == pytest.approx(100.0)
    with torch.no_grad(), algo._evaluating():
        rho = torch.sigmoid(algo.transition(algo._flat(x), traj.levels[-1], traj.temperatures[-1]).logits)
    assert (rho - 0.5).abs().max() < 0.1
    end = _heated_end_state(algo, x)
    # Every pixel of the heated state is close to a fair coin, though many data pixels are always 0.
    pixel_mean = x.reshape(len(x), -1).float().mean(0)
    assert (end.mean(0) - 0.5).abs().max() < 0.15 and (pixel_mean == 0).sum() >= 3


# ---------------------------------------------------------------------------------------------- the loss


def _stub_algo(loss: str, update_mode: str = "online") -> tuple[Walkback, Stub, list[float]]:
    stub = Stub()
    algo = _algo(net=stub, **{"algo.schedule": "list", "algo.temperatures": [1.0, 2.0, 3.0],
                              "algo.k_mode": "fixed", "algo.loss": loss, "algo.update_mode": update_mode})
    stub.calls.clear()
    losses: list[float] = []
    original = algo.update

    def spy(opt, loss_value, **kw):
        losses.append(float(loss_value.detach()))
        original(opt, loss_value, **kw)

    algo.update = spy  # type: ignore[method-assign]
    return algo, stub, losses


def _normal_nll(target: torch.Tensor, at: torch.Tensor, T: float, alpha: float = 0.5) -> float:
    """−mean_b log N(target; μ(at), σ(at)) for the stub F(s) = [2s + 1, −s], by hand."""
    mu = (1 - alpha) * at + alpha * (2 * at + 1)
    sigma = T * F.softplus(-at)
    return float(-torch.distributions.Normal(mu, sigma).log_prob(target).sum(1).mean())


def test_paper_loss_scores_previous_state_given_next():
    algo, stub, losses = _stub_algo("paper")
    batch = torch.randn(5, 2)
    algo.train()
    algo.train_step(batch)
    # Per step: the heating call at s_{t−1}, then the scoring call at s_t.
    assert [lv for _, lv in stub.calls] == [0, 0, 1, 1, 2, 2]
    states = [c[0] for c in stub.calls]
    torch.testing.assert_close(states[0], batch)  # s_0 = x
    assert len(losses) == 3
    for t, T in enumerate([1.0, 2.0, 3.0]):
        s_prev, s_next = states[2 * t], states[2 * t + 1]
        assert losses[t] == pytest.approx(_normal_nll(s_prev, s_next, T), rel=1e-5)
        assert losses[t] != pytest.approx(_normal_nll(s_prev, s_prev, T), rel=1e-3)
        if t + 1 < 3:  # the next step starts from the sampled s_t
            torch.testing.assert_close(states[2 * t + 2], s_next)


def test_original_code_loss_scores_current_state():
    algo, stub, losses = _stub_algo("original_code")
    algo.train()
    algo.train_step(torch.randn(5, 2))
    states = [c[0] for c in stub.calls]
    for t, T in enumerate([1.0, 2.0, 3.0]):
        s_prev = states[2 * t]
        torch.testing.assert_close(states[2 * t + 1], s_prev)
        assert losses[t] == pytest.approx(_normal_nll(s_prev, s_prev, T), rel=1e-5)


def test_accumulated_mode_sums_the_step_losses_into_one_update():
    algo, stub, losses = _stub_algo("paper", "accumulated")
    algo.train()
    algo.train_step(torch.randn(5, 2))
    states = [c[0] for c in stub.calls]
    expected = sum(_normal_nll(states[2 * t], states[2 * t + 1], T) for t, T in enumerate([1.0, 2.0, 3.0]))
    assert len(losses) == 1 and losses[0] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("mode, per_trajectory", [("online", 4), ("accumulated", 1)])
def test_update_count_per_trajectory(mode, per_trajectory):
    algo = _algo(**{"algo.k_mode": "fixed", "algo.walkback_steps": 4, "algo.update_mode": mode})
    algo.train()
    before = [p.detach().clone() for p in algo.net.parameters()]
    algo.train_step(torch.randn(32, 2))
    assert algo.updates == per_trajectory
    assert any(not torch.equal(b, p) for b, p in zip(before, algo.net.parameters()))
    algo.train_step(torch.randn(32, 2))
    assert algo.updates == 2 * per_trajectory


# ---------------------------------------------------------------------------------------------- state


def test_per_step_batch_norm_keeps_separate_running_statistics():
    algo = _algo(**{"algo.k_mode": "fixed", "algo.walkback_steps": 5})
    algo.train()
    norms = algo.net.step_norms()[0].norms
    step0 = {k: v.clone() for k, v in norms[0].state_dict().items()}
    step3 = norms[3].running_mean.clone()
    algo.transition(torch.randn(16, 2) * 3 + 1, 3, 4.0)
    for k, v in norms[0].state_dict().items():
        torch.testing.assert_close(v, step0[k])
    assert not torch.equal(norms[3].running_mean, step3)


def test_pstar_starts_at_data_moments_and_moves_toward_s_K_moments():
    algo = _algo(**{"algo.pstar_momentum": 0.25})
    train = algo_data = load_dataset("toy2d:swissroll", _config().data).splits["train"]
    del algo_data
    torch.testing.assert_close(algo.pstar_mean, train.mean(0))
    torch.testing.assert_close(algo.pstar_var, train.var(0, unbiased=False))
    old_mean, old_var = algo.pstar_mean.clone(), algo.pstar_var.clone()
    s_K = torch.randn(4000, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([5.0, -2.0])
    algo._track_statistics(s_K, None)
    torch.testing.assert_close(algo.pstar_mean, 0.75 * old_mean + 0.25 * s_K.mean(0))
    torch.testing.assert_close(algo.pstar_var, 0.75 * old_var + 0.25 * s_K.var(0, unbiased=False), rtol=1e-4, atol=1e-5)


def test_training_moves_pstar_and_checkpoints_keep_it():
    algo = _algo(**{"algo.k_mode": "fixed", "algo.walkback_steps": 3})
    algo.train()
    start = algo.pstar_var.clone()
    algo.train_step(torch.randn(64, 2))
    assert not torch.equal(algo.pstar_var, start)
    state = algo.state()
    fresh = _algo(**{"algo.k_mode": "fixed", "algo.walkback_steps": 3})
    fresh.load_state(state)
    for name in ("pstar_mean", "pstar_var", "noise_var", "data_var"):
        torch.testing.assert_close(getattr(fresh, name), getattr(algo, name))


# ---------------------------------------------------------------------------------------------- bounds


def _linear_gaussian(sigma: float = 0.5, c: float = 0.0, **overrides) -> Walkback:
    """K = 1: p(x | s_1) = N(a s_1, σ²) with a = (1−α) + αc, p*(s_1) = N(0, 1) ⇒ p(x) = N(0, a² + σ²) per dim."""
    inv_softplus = math.log(math.expm1(sigma))
    stub = Stub(mu=lambda s: c * s, sigma=lambda s: torch.full_like(s, inv_softplus))
    algo = _algo(net=stub, **{"algo.schedule": "list", "algo.temperatures": [1.0], "algo.k_mode": "fixed",
                              "algo.extra_steps": 0, **overrides})
    algo.pstar_mean.zero_()
    algo.pstar_var.fill_(1.0)
    return algo


def test_importance_sampling_converges_to_the_exact_likelihood():
    algo = _linear_gaussian(**{"eval.likelihood_samples": 4000, "eval.repeats": 2, "eval.isotropic": True})
    x = torch.tensor([[0.3, -0.5], [1.0, 0.2], [-0.8, -0.1]])
    exact = torch.distributions.Normal(0.0, math.sqrt(0.25 + 0.25)).log_prob(x).sum(1).mean()
    result = algo.evaluate(x, "test", full=True, generator=torch.Generator().manual_seed(0))
    assert result["importance"] == pytest.approx(float(exact), abs=0.02)
    assert result["lower_bound"] < result["importance"] - 0.05  # the bound is loose for this proposal
    # The operator is already isotropic, so the isotropic-output variant changes nothing.
    assert result["importance_isotropic"] == pytest.approx(result["importance"], abs=1e-9)
    assert result["lower_bound_std"] >= 0 and result["walkback_steps"] == 1


def test_log_weight_is_eq5_written_out():
    """ℓ = Σ_t [log p_T(s_{t−1}|s_t) − log q_T(s_t|s_{t−1})] + log p*(s_K), recomputed step by step with
    torch.distributions along the same path (same generator draws)."""
    algo = _algo(**{"algo.k_mode": "fixed", "algo.walkback_steps": 3, "algo.extra_steps": 2})
    algo.eval()
    traj = algo.sampler.evaluation(algo.t_max)
    assert traj.levels == (0, 0, 0, 1, 2)
    x = torch.randn(6, 2) * 0.5
    with torch.no_grad():
        got = algo.log_weights(x, traj, torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)
        s_prev, expected, nll = x, torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
        for level, T in traj.steps():
            q = algo.transition(s_prev, level, T)
            s = q.mean + q.std * torch.randn(s_prev.shape, generator=g)
            p = algo.transition(s, level, T)
            log_p = torch.distributions.Normal(p.mean, p.std).log_prob(s_prev).sum(1).double()
            expected += log_p - torch.distributions.Normal(q.mean, q.std).log_prob(s).sum(1).double()
            nll -= log_p
            s_prev = s
        expected += torch.distributions.Normal(algo.pstar_mean, algo.pstar_var.sqrt()).log_prob(s_prev).sum(1).double()
    torch.testing.assert_close(got["log_weight"], expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got["loss"], nll, rtol=1e-5, atol=1e-4)


def test_lower_bound_is_below_importance_estimate():
    algo = _algo(**{"algo.k_mode": "fixed", "algo.walkback_steps": 4, "eval.likelihood_samples": 8,
                    "algo.reversibility_steps": 60, "algo.reversibility_chains": 4})
    x = load_dataset("toy2d:swissroll", _config().data).splits["test"][:40]
    result = algo.evaluate(x, "test", full=True, generator=torch.Generator().manual_seed(0))
    assert result["lower_bound"] <= result["importance"]
    assert {"reversibility_kl", "entropy_rate", "reversibility_ratio", "importance_std"} <= set(result)
    quick = algo.evaluate(x, "valid", full=False, generator=torch.Generator().manual_seed(0))
    assert set(quick) == {"lower_bound", "loss", "walkback_steps", "heating_steps"} and math.isfinite(quick["lower_bound"])


def test_bits_per_dim_only_where_the_numbers_are_probabilities_of_discrete_pixels():
    x = load_dataset("digits", _config("digits").data).splits["test"][:6]
    gaussian = _algo("digits", **{"algo.k_mode": "fixed", "algo.walkback_steps": 2})
    out = gaussian.evaluate(x, "test", full=True, generator=torch.Generator().manual_seed(0))
    assert out["bits_per_dim"] == pytest.approx(-out["lower_bound"] / (64 * math.log(2)) + 8)
    assert out["bits_per_dim_importance"] == pytest.approx(-out["importance"] / (64 * math.log(2)) + 8)
    # Without the dequantisation noise a density at grid points bounds no probability: no bits/dim.
    plain = _algo("digits", **{"algo.k_mode": "fixed", "algo.walkback_steps": 2, "eval.dequantize": False})
    assert "bits_per_dim" not in plain.evaluate(x, "test", full=True, generator=torch.Generator().manual_seed(0))
    # Bernoulli operator on binary pixels: the bound is on log P(x) itself, no cell width.
    binary = _algo("digits", **{"algo.k_mode": "fixed", "algo.walkback_steps": 2, "algo.operator": "bernoulli",
                                "data.binarize": "threshold"})
    xb = (x > 0.5).float()
    out = binary.evaluate(xb, "test", full=True, generator=torch.Generator().manual_seed(0))
    assert out["bits_per_dim"] == pytest.approx(-out["lower_bound"] / (64 * math.log(2)))
    toy = _algo(**{"algo.k_mode": "fixed", "algo.walkback_steps": 2})
    points = load_dataset("toy2d:swissroll", _config().data).splits["test"][:6]
    assert "bits_per_dim" not in toy.evaluate(points, "test", full=True, generator=torch.Generator().manual_seed(0))


def test_reversibility_leaves_out_diverging_chains_instead_of_failing():
    # μ = 0.5·s + 0.5·F(s) with F(s) = 40·s: every T = 1 step multiplies the state by 20.5, overflowing float32.
    algo = _algo(net=Stub(mu=lambda s: 40 * s, sigma=lambda s: 0 * s),
                 **{"algo.reversibility_steps": 100, "algo.reversibility_burn_in": 10,
                    "algo.reversibility_chains": 8, "algo.k_mode": "fixed", "algo.walkback_steps": 2})
    out = algo.reversibility(torch.Generator().manual_seed(0))
    assert out["reversibility_chains_finite"] == 0.0 and math.isnan(out["reversibility_ratio"])


def test_sigmoid_mean_output_keeps_an_expansive_network_from_running_away():
    over = {"algo.reversibility_steps": 100, "algo.reversibility_burn_in": 10, "algo.reversibility_chains": 8,
            "algo.k_mode": "fixed", "algo.walkback_steps": 2, "algo.mean_output": "sigmoid"}
    algo = _algo(net=Stub(mu=lambda s: 40 * s, sigma=lambda s: 0 * s - 2.0), **over)
    s = torch.randn(6, 2)
    assert torch.allclose(algo.transition(s, 0, 1.0).mean, 0.5 * s + 0.5 * torch.sigmoid(40 * s))
    out = algo.reversibility(torch.Generator().manual_seed(0))  # the linear F of the test above diverges
    assert out["reversibility_chains_finite"] == 1.0 and math.isfinite(out["reversibility_ratio"])


def test_reversibility_measure_against_closed_forms():
    # μ = a·s with a = 0.5 and a constant σ: a Gaussian AR(1), reversible, so the KL estimate is ≈ 0.
    over = {"algo.reversibility_steps": 400, "algo.reversibility_burn_in": 50, "algo.reversibility_chains": 400}
    reversible = _linear_gaussian(sigma=1.0, c=0.0, **over)
    g = torch.Generator().manual_seed(0)
    assert abs(reversible.reversibility(g)["reversibility_kl"]) < 0.05
    # μ = ρ R s with R a quarter turn: E[log p(s'|s) − log p(s|s')] = (V(1+3ρ²) − 2σ²)/(2σ²), V = 2σ²/(1−ρ²).
    rho = 0.6
    rotate = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    stub_mu = lambda s: (rho * s @ rotate.T - 0.5 * s) / 0.5
    rotating = _algo(net=Stub(mu=stub_mu, sigma=lambda s: torch.full_like(s, math.log(math.expm1(1.0)))),
                     **{"algo.schedule": "list", "algo.temperatures": [1.0], "algo.k_mode": "fixed", **over})
    V = 2 / (1 - rho**2)
    expected = (V * (1 + 3 * rho**2) - 2) / 2
    result = rotating.reversibility(g)
    assert result["reversibility_kl"] == pytest.approx(expected, rel=0.1)
    assert result["reversibility_ratio"] == pytest.approx(result["reversibility_kl"] / abs(result["entropy_rate"]))


# ---------------------------------------------------------------------------------------------- sampling


def test_inpainting_never_changes_clamped_entries():
    algo = _algo("digits", **{"algo.k_mode": "fixed", "algo.walkback_steps": 3})
    x = load_dataset("digits", _config("digits").data).splits["test"][:6]
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., :4, :] = True
    filled = algo.inpaint(x, mask, generator=torch.Generator().manual_seed(0))
    assert torch.equal(filled[mask], x[mask])
    assert not torch.equal(filled[~mask], x[~mask])


def test_samples_chains_and_artifacts_have_the_documented_shapes():
    algo = _algo("digits", **{"algo.k_mode": "fixed", "algo.walkback_steps": 3, "algo.extra_steps": 2,
                              "eval.chain_steps": 20, "eval.sample_count": 4, "eval.chain_count": 2})
    g = torch.Generator().manual_seed(0)
    s = algo.sample(5, generator=g)
    assert s.shape == (5, 1, 8, 8) and s.min() >= 0 and s.max() <= 1  # clip='output' for images
    assert algo.cooling_chain(3, generator=g).shape == (3 + 2 + 2, 3, 1, 8, 8)
    assert algo.chains(3, 25, every=10, generator=g).shape == (3, 3, 1, 8, 8)
    data = load_dataset("digits", algo.run_config.data)
    names = [a.name for a in algo.artifacts(data, generator=g)]
    assert names == ["samples.png", "chains.png", "long_chain.png", "inpainting.png"]
    points = _algo(**{"algo.k_mode": "fixed", "algo.walkback_steps": 3})
    pdata = load_dataset("toy2d:swissroll", points.run_config.data)
    arts = points.artifacts(pdata, generator=g)
    assert [a.name for a in arts] == ["samples.png", "chains.png"] and all(a.data[:4] == b"\x89PNG" for a in arts)


def test_presets_follow_the_papers():
    points = build_config(algorithm="walkback", dataset="toy2d:circle")
    assert (points.algo.schedule, points.algo.factor, points.algo.k_mode, points.algo.walkback_steps,
            points.algo.init_noise, points.algo.temperature_noise) == (
        "geometric", 1.1, "fixed_heating", 30, 0.1, "std")
    images = build_config(algorithm="walkback", dataset="digits")
    assert images.train.lr == 1e-4 and images.train.batch_size == 100
    # The image heating regime: 30 heating steps (appendix) from T = 1 to T_max, noise variance ∝ T.
    assert (images.algo.schedule, images.algo.temperature_noise, images.algo.walkback_steps,
            images.algo.max_variance, images.algo.init_noise, images.algo.mean_output) == (
        "span", "variance", 30, "squared_range", 0.1, "sigmoid")
    assert isinstance(images.algo, WalkbackConfig)


# ---------------------------------------------------------------------------------------------- training


def test_short_training_on_swissroll_improves_the_valid_lower_bound():
    over = {"data.toy_samples": 2000, "data.max_train": 2000, "algo.walkback_steps": 10, "train.steps": 400,
            "train.batch_size": 200, "train.lr": 1e-3, "train.eval_every": 400, "train.log_every": 100, "train.eval_examples": 500,
            "algo.net.hidden": [32, 32]}
    cfg = _config(**over)
    untrained, data = build(cfg)
    untrained.eval()
    with torch.no_grad():
        before = untrained.evaluate(data.splits["valid"][:500], "valid", full=False,
                                    generator=torch.Generator().manual_seed(0))["lower_bound"]
    reports: list[tuple[int, dict]] = []
    train(cfg, lambda step, metrics, **kw: reports.append((step, metrics)))
    valid = [m["valid/lower_bound"] for _, m in reports if "valid/lower_bound" in m]
    assert valid and valid[-1] > before + 1.0
    assert any("train/loss" in m for _, m in reports)


@pytest.mark.parametrize("value", ["inf", "1e30"])
def test_init_noise_that_cannot_be_a_noise_scale_is_refused_in_one_line(value):
    """init_noise=inf trained into a NaN loss (the error advised a lower learning rate) and 1e30 squared past
    float32 into an infinite σ², T_max = 0 and a NaN evaluation traceback: both are refused, naming the key."""
    with pytest.raises(ConfigError, match="init_noise"):
        build(_config(**{"algo.init_noise": value}))
