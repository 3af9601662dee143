"""Variational Walkback (VW): learn a transition operator by walking back its own heated trajectories.

Sources: Goyal, Ke, Ganguli, Bengio, "Variational Walkback", NIPS 2017 (Algorithm 1, eqs 5 and 10, §3.3) and
Goyal's thesis (2018), chapter 3 and its appendix §3.12–3.16. raygen follows the paper; where the public code
(anirudh9119/walkback_nips17) differs, the code's behaviour is a named option, off by default.

The objective lives in `Walkback.train_step` (one heating trajectory per minibatch, Algorithm 1) and the bound
in `Walkback.log_weights` (eq 5; eq 10 averages its exponential over k paths). Everything else is plumbing.

Notation (paper): s_0 = x is a data point; the heating (inference) process q draws s_t ~ q_{T_t}(·|s_{t−1}) for
t = 1..K with rising temperatures T_t; the cooling (generative) process draws s_K ~ p*, then
s_{t−1} ~ p_{T_t}(·|s_t). p and q are the *same* transition operator p_T(s'|s) (§2: "the p and q chains will
share the same parameters"). The operator at heating step t is indexed by its *level* ℓ_t (below), which picks
its per-step batch-norm slot.

Choices where the paper is silent or inconsistent (each is also documented beside its config field):

* Temperature and noise. §3.3 sets σ = T·softplus(F_σ(s)), so the noise *standard deviation* is proportional
  to T (`temperature_noise="std"`), while Algorithm 1 says the operator "injects noise of variance Tσ²" and §3.2
  that the injected noise "has variance linearly proportional to temperature"; the original code also uses
  σ = √(T·softplus) (`temperature_noise="variance"`). The two readings agree for Algorithm 1's doubling if the
  appendix schedule T_t = T0·√(2^t) is read with σ ∝ T (`schedule="sqrt2"`, the non-image default). With a
  factor f and σ ∝ T^p the variance grows by f^(2p) per step, so ceil(log T_max / log f^(2p)) heating steps
  take it from σ² to σ²_max, Algorithm 1's ceil(log2 T_max) for f^(2p) = 2.
* Heating images (the image default; issue: with the settings above images never heated). The image
  experiments have K = 30 heating steps (appendix), Table 3.1a compares 5/10/15 steps as "the effect of longer
  annealing", and the heated end state must be "a broad Gaussian" from which the first cooling step "can move
  the state across the whole domain of the data". Under Algorithm 1's T_max = σ²_max/σ² with σ² the operator's
  current T=1 noise, nothing heats: a freshly initialised operator's noise (softplus(0)² ≈ 0.48) exceeds the
  variance of [0,1] pixels (≈ 0.07), so T_max < 1, and during training the learnt T=1 noise grows past the
  data's spread (measured on digits: 0.04 → 0.48 std in 1 000 updates, T_max 44 → 0.3), so a re-estimated T_max
  collapses. Under the appendix's literal σ = T·softplus with T up to 2^15 the end state blows up instead
  (p* std ≈ 1 500 on [0,1] pixels). The reading under which the regime exists, and the image default:
  - noise variance ∝ T (`temperature_noise="variance"`, Algorithm 1's own wording);
  - K heating steps fixed (`walkback_steps`, 30 as in the appendix; 5/10/15 for Table 3.1a) that span
    T = 1 to T_max geometrically (`schedule="span"`), so more steps anneal the same range more slowly — the
    tightness condition of §3.1 — and K does not depend on a moving T_max; `k_mode="random"` still adds
    Algorithm 1's n ~ U{0..N1} initial T = 1 steps;
  - T_max = σ²_max/σ² with σ² the T=1 noise of the operator *as initialised*, softplus(F_σ) set to a tenth of
    the data std (`init_noise=0.1`, `t_max_rule="initial"`): the temperatures come from the data, not from the
    network's arbitrary initial scale or its transient noise level;
  - σ²_max = the squared range of the pixels (`max_variance="squared_range"`, Algorithm 1's "or squared
    diameter"): the top step's noise spans [0, 1], so s_K has forgotten x and p* is wide.
  The alternatives stay available by name: `t_max_rule="noise_ratio"` (re-estimated, Algorithm 1 literally),
  `schedule="sqrt2"|"geometric"` with `k_mode`, `temperature_noise="std"`, `max_variance="data_variance"`.
* Heating toys (the points default; issue: the swiss-roll bound peaked early and fell, and the selected model
  drew a blob). Figs 3.8/3.9 heat for 30 steps with T ×1.1 per step. Under σ = T·softplus(F_σ) the top step's
  noise is 1.1^29 ≈ 15.9 times the T=1 noise, which "can move the state across the whole domain of the data"
  (§3.3) only if the T=1 noise is near the data's own noise scale: 15.9 × 0.05 ≈ 0.8 on toys spanning ±1.
  From the network's own initial noise softplus(0) ≈ 0.69 the top noise is ≈ 11 (s_K std ≈ 19 against a data
  std of 0.48), and training then spends its first ~1 000 updates shrinking σ toward the roll's thickness
  (0.69 → 0.06 by 3 000 updates; the walkback fit's fixed point), with the heated end state, p* (an EMA that lags it) and
  the bound all moving with it: the validation bound peaked at σ ≈ 0.28, where the sampler's mean output is a
  blob, and fell as σ approached the scale that draws the roll (measured; see docs/reproduction.md). The
  default therefore starts softplus(F_σ) at a tenth of the data std (`init_noise=0.1`, as for images) and
  uses Algorithm 1's n ~ U{0..N1} initial T=1 steps with the 30 fixed heating steps
  (`k_mode="fixed_heating"`): with n = 0 (`k_mode="fixed"`, the appendix and the original code) the
  `extra_steps` T=1 steps of the evaluated sampler are never trained (≈ 0.9 nats of bound on average over
  updates 1 500–3 000 of the swiss roll).
* Bernoulli heating. The operator divides its logits by T (§3.3), which does heat toward fair coins, but its
  noise ρ(1−ρ) ≤ 1/4 never grows with T, so a variance-ratio T_max stays near 1. For it `t_max_rule="auto"`
  means a fixed top temperature (`t_max`, 100: |logit| ≤ 10 gives ρ within 0.5 ± 0.025).
* Levels. Algorithm 1 keeps T = 1 for the steps t ≤ n+1 and multiplies after each later step, so step t has
  temperature T0·f^ℓ_t with ℓ_t = max(0, t−1−n). All T = 1 steps share level 0, i.e. the same operator and
  the same batch-norm slot: Proposition 1's proof needs the T = 1 steps to apply one operator, and level 0 is
  the operator run by the long T = 1 chains.
* σ² (the noise at T = 1) is estimated as the mean over dimensions of softplus(F_σ(s_0))² at the data (for
  the Bernoulli operator: the mean of ρ(1−ρ) at T = 1), kept as an exponential moving average over training
  trajectories (`noise_momentum`; used by `t_max_rule="noise_ratio"`, reported as `noise_std`). σ²_max is the
  data variance (or squared range) averaged over dimensions (the same per-dimension units as σ²).
* Model selection: Algorithm 1 trains "until convergence monitoring L on a validation set and doing early
  stopping": the loop keeps the state with the best `valid/lower_bound` and evaluates it (train.select_*,
  train.patience).
* The model whose bound is reported is the sampler: cooling through the levels of a heating trajectory with
  n = `extra_steps` (so its last extra_steps + 1 steps run the T = 1 operator), which is exactly "annealed
  cooling followed by extra steps at T = 1".
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from raygen.algorithms.base import Algorithm, Artifact
from raygen.config import AlgoConfig, ConfigError, RunConfig
from raygen.data.base import Dataset
from raygen.metrics.chains import reversibility_ratio
from raygen.metrics.likelihood import (
    bernoulli_log_prob,
    bits_per_dim_estimates,
    dequantize,
    gaussian_log_prob,
    importance_estimates,
    summarise_repeats,
)
from raygen.nets.conv import ConvConfig, ConvOperator, build_step_operator
from raygen.nets.mlp import MLPConfig

log = logging.getLogger(__name__)

Operator = Literal["gaussian", "bernoulli"]
ScheduleName = Literal["geometric", "sqrt2", "list", "span"]


class WalkbackConfig(AlgoConfig):
    """Every knob of Variational Walkback; defaults are the paper's values (or, where it gives none, ours)."""

    operator: Operator = Field(
        "gaussian",
        description="transition operator (§3.3): gaussian μ=(1−α)s+αF_μ(s), σ=T·softplus(F_σ(s)) for real "
        "data; bernoulli ρ=sigmoid(((1−α)s+αF_ρ(s))/T) for binary data",
    )
    alpha: float = Field(
        0.5, gt=0, le=1, description="α mixing the state into the operator's output (§3.3 gives no value; the "
        "original code uses 0.5)"
    )
    covariance: Literal["diagonal", "isotropic"] = Field(
        "diagonal",
        description="gaussian noise covariance: diagonal σ=T·softplus(F_σ(s)) per dimension (Table 3.1a: 'Gaussian "
        "noise with diagonal covariance'), or isotropic, one σ per state, T·softplus(mean over dimensions of "
        "F_σ(s)), trained so (Table 3.1b: 'VW with isotropic Gaussian output'; §3.3 calls its operator isotropic)",
    )
    mean_output: Literal["linear", "sigmoid"] = Field(
        "linear",
        description="gaussian F_μ: linear (the network's output, §3.3 leaves F arbitrary) or sigmoid, F_μ in [0,1] "
        "(image default: μ=(1−α)s+αF_μ is then a contraction toward the pixel box, so heated trajectories and long "
        "T=1 chains cannot run away; with a linear F_μ digits runs reached |s_K| ≈ 2·10^5 and the bound's mean "
        "was ruled by those paths)",
    )
    min_std: float = Field(
        0.0, ge=0, description="floor added to softplus(F_σ) before scaling by T (not in the paper; 0 = paper)"
    )
    net: MLPConfig = Field(
        MLPConfig(),
        description="F network: out width 2·D (gaussian: F_μ, F_σ) or D (bernoulli); per-step batch norm "
        "(§3.15) with running statistics per step (the original code used batch statistics at sampling)",
    )
    architecture: Literal["mlp", "conv"] = Field(
        "mlp",
        description="F network: mlp (algo.net) or conv, VW's image architecture (algo.conv: strided conv "
        "encoder, fully connected middle, deconvolution heads for F_μ and F_σ, per-step batch norm; images only)",
    )
    conv: ConvConfig = Field(ConvConfig(), description="the convolutional F network (algo.architecture=conv)")
    schedule: ScheduleName = Field(
        "sqrt2",
        description="temperature schedule by name: sqrt2 T_ℓ=T0·√(2^ℓ) (appendix §3.12; doubles the noise "
        "variance per step as Algorithm 1 does under temperature_noise=std), geometric T_ℓ=T0·factor^ℓ, list "
        "(explicit temperatures), span (walkback_steps heating temperatures rising geometrically from T0 to "
        "the temperature whose noise variance is σ²_max: the heated end state always spans the data, and more "
        "steps anneal more slowly, Table 3.1a's 'effect of longer annealing')",
    )
    temperature_noise: Literal["std", "variance"] = Field(
        "std",
        description="how T enters the Gaussian noise: std σ=T·softplus(F_σ) (§3.3 formula), variance "
        "σ=√T·softplus(F_σ), i.e. noise variance Tσ² (Algorithm 1's caption, §3.2 'variance linearly "
        "proportional to temperature', and the original code)",
    )
    t_max_rule: Literal["auto", "noise_ratio", "initial", "fixed"] = Field(
        "auto",
        description="T_max (a ratio of noise variances; for the bernoulli operator the top temperature itself): "
        "noise_ratio = σ²_max/σ² re-estimated as training goes (Algorithm 1; σ² the operator's noise at T=1), "
        "initial = σ²_max/σ² measured once on the initialised operator (see init_noise) and then kept, "
        "fixed = algo.t_max; auto = initial for the gaussian operator (the learnt T=1 noise grows past the data "
        "spread early in training, which would collapse a re-estimated T_max to 1), fixed for the bernoulli one "
        "(its noise ρ(1−ρ) ≤ 1/4 cannot grow with T, so a variance ratio never heats it)",
    )
    t_max: float = Field(
        100.0, gt=1, description="T_max of t_max_rule=fixed (bernoulli: logits/100, so |logit| ≤ 10 gives "
        "ρ within 0.5 ± 0.025 at the top, a near-uniform heated state)"
    )
    max_variance: Literal["data_variance", "squared_range"] = Field(
        "data_variance",
        description="σ²_max (Algorithm 1: 'data variance (or squared diameter)'), per dimension averaged over "
        "dimensions: the data variance, or the squared range (max − min)² of the training data",
    )
    init_noise: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="gaussian operator: initial T=1 noise std softplus(F_σ) as a fraction of the data "
        "std, set through the F_σ output bias (None: the network's own initialisation, softplus(≈0) ≈ 0.69, "
        "wider than [0,1] image data, so the noise-ratio T_max starts below 1 and nothing heats; on the toys the "
        "×1.1 ladder's top noise is then 15.9 × 0.69 ≈ 11 against data within ±1; 0.1 is the image and toy preset)",
    )
    factor: float = Field(
        2.0, gt=1, description="geometric schedule factor (Algorithm 1: 2; toy data, Figs 3.8/3.9: 1.1)"
    )
    temperatures: tuple[float, ...] = Field(
        (), description="explicit heating temperatures T_1..T_K for schedule=list (K = their number)"
    )
    t0: float = Field(1.0, gt=0, description="initial temperature T0 (appendix §3.12: 1.0)")
    k_mode: Literal["random", "fixed", "fixed_heating"] = Field(
        "random",
        description="random: K = heating steps + n, n ~ U{0..n1}, heating steps from T_max (Algorithm 1); "
        "fixed: K = walkback_steps, n = 0 (appendix §3.12 and the original code: K = 30); fixed_heating: "
        "walkback_steps heating steps + n, n ~ U{0..n1} initial T=1 steps (Algorithm 1's n with the fixed "
        "heating of Figs 3.8/3.9; the toy default: it trains the T=1 steps that sampling's extra_steps run)",
    )
    walkback_steps: int = Field(
        30, ge=1, description="K for k_mode=fixed (appendix §3.12: 30); heating steps of k_mode=fixed_heating and "
        "of schedule=span (Table 3.1a: 5, 10, 15), to which k_mode=random adds n ~ U{0..N1} initial T=1 steps"
    )
    n1: int = Field(
        5, ge=0, description="N1, the largest number of initial T=1 steps (Algorithm 1 requires N1 > 1 and gives "
        "no value; 5 matches the 5 extra T=1 sampling steps of the original code)"
    )
    max_heating_steps: int = Field(
        30, ge=1, description="cap on the heating steps of k_mode=random (the thesis trains with K = 30)"
    )
    loss: Literal["paper", "original_code"] = Field(
        "paper",
        description="paper: log p_T(s_{t−1}|s_t), the previous state scored from the next one (Algorithm 1); "
        "original_code: the current state scored under the operator computed from it (ablation)",
    )
    update_mode: Literal["online", "accumulated"] = Field(
        "online",
        description="online: one optimizer update per walkback step (Algorithm 1; §3.15: better); "
        "accumulated: gradients summed over the trajectory, one update",
    )
    pstar_momentum: float = Field(
        0.02, ge=0, le=1, description="EMA rate moving p* toward the moments of s_K after each trajectory "
        "(Algorithm 1 'accumulated 1st and 2nd moment statistics'; 0 keeps the data moments)"
    )
    noise_momentum: float = Field(
        0.05, gt=0, le=1, description="EMA rate of the σ² (noise at T=1) estimate that sets T_max"
    )
    min_variance: float = Field(1e-4, gt=0, description="floor on p*'s per-dimension variance")
    dequantize_train: bool = Field(
        True, description="add U(0,1/256) to real-valued image batches (§5: uniform noise added to MNIST, "
        "as per Theis et al. 2016)"
    )
    extra_steps: int = Field(
        5, ge=0, description="T=1 steps after the annealed cooling when sampling (appendix §3.12 'a few extra "
        "steps'; original code: 5)"
    )
    output: Literal["mean", "sample"] = Field(
        "mean", description="what sampling returns after the last step: the operator's mean (Fig 3.2) or the state"
    )
    clip: Literal["none", "output", "chain"] = Field(
        "output",
        description="image data only: clip returned samples to [0,1] (output), or every sampling state as the "
        "original code does (chain; the bound then no longer describes the sampler)",
    )
    eval_batch: int = Field(4000, ge=1, description="trajectories evaluated at once (memory only)")
    reversibility_steps: int = Field(
        1000, ge=0, description="length of the T=1 chains of the reversibility measure (§3.14: 1000; 0 = off)"
    )
    reversibility_burn_in: int = Field(50, ge=0, description="steps dropped first (§3.14: 50)")
    reversibility_chains: int = Field(100, ge=1, description="chains averaged by the reversibility measure")

    @model_validator(mode="after")
    def _consistent(self) -> WalkbackConfig:
        if self.schedule == "list":
            if not self.temperatures:
                raise ValueError("algo.schedule='list' needs algo.temperatures (the heating temperatures T_1..T_K)")
            if any(t <= 0 for t in self.temperatures):
                raise ValueError(f"algo.temperatures must all be > 0, got {list(self.temperatures)}")
            if self.k_mode == "random":
                raise ValueError(
                    "algo.schedule='list' fixes K to the number of algo.temperatures: set algo.k_mode='fixed'"
                )
        elif self.temperatures:
            raise ValueError(f"algo.temperatures is only used with algo.schedule='list' (got '{self.schedule}')")
        if self.schedule == "span" and self.walkback_steps < 2:
            raise ValueError("algo.schedule='span' needs algo.walkback_steps >= 2 (from T0 to T_max)")
        if self.reversibility_steps and self.reversibility_burn_in >= self.reversibility_steps:
            raise ValueError("algo.reversibility_burn_in must be smaller than algo.reversibility_steps")
        return self


# ---------------------------------------------------------------------------------------------- schedules


class TemperatureSchedule:
    """Temperature of each heating level ℓ = 0, 1, 2, … (level 0 is T0). A name never changes meaning.

    `t_max` is always a ratio of noise *variances* (Algorithm 1: T_max = σ²_max/σ²); `power` is how the noise
    std grows with T (1: σ ∝ T, 0.5: σ² ∝ T), so temperature T multiplies the variance by T^(2·power).
    """

    name: ClassVar[str]

    def temperature(self, level: int, heating: int = 1, t_max: float = 1.0) -> float:
        raise NotImplementedError

    def heating_steps(self, t_max: float) -> int:
        """Steps whose noise variance rises from σ² to T_max·σ²."""
        raise NotImplementedError


class GeometricSchedule(TemperatureSchedule):
    name = "geometric"

    def __init__(self, t0: float, factor: float, power: float = 1.0) -> None:
        self.t0, self.factor, self.power = t0, factor, power

    def temperature(self, level: int, heating: int = 1, t_max: float = 1.0) -> float:
        return self.t0 * self.factor**level

    def heating_steps(self, t_max: float) -> int:
        # Algorithm 1: ceil(log2 T_max) doublings of the variance; one step multiplies it by factor^(2·power).
        return math.ceil(math.log(max(t_max, 1.0)) / (2 * self.power * math.log(self.factor)) - 1e-9)


class Sqrt2Schedule(GeometricSchedule):
    """Appendix §3.12: heating T_t = T0·√(2^t); sampling uses the exactly reversed schedule."""

    name = "sqrt2"

    def __init__(self, t0: float, power: float = 1.0) -> None:
        super().__init__(t0, math.sqrt(2.0), power)


class ListSchedule(TemperatureSchedule):
    name = "list"

    def __init__(self, temperatures: tuple[float, ...]) -> None:
        self.temperatures = tuple(float(t) for t in temperatures)

    def temperature(self, level: int, heating: int = 1, t_max: float = 1.0) -> float:
        return self.temperatures[level]

    def heating_steps(self, t_max: float) -> int:
        return len(self.temperatures)


class SpanSchedule(TemperatureSchedule):
    """`heating` temperatures rising geometrically from T0 (level 0) to T_top (level heating − 1), T_top being
    the temperature whose noise variance is T_max·σ² = σ²_max: T_top = T_max^(1/(2·power)). The number of steps
    sets only how slowly the same range is crossed (the tightness condition of §3.1: slow annealing)."""

    name = "span"

    def __init__(self, t0: float, steps: int, power: float = 1.0) -> None:
        self.t0, self.steps, self.power = t0, steps, power

    def temperature(self, level: int, heating: int = 1, t_max: float = 1.0) -> float:
        top = max(t_max, 1.0) ** (1.0 / (2 * self.power))
        if heating < 2 or top <= self.t0:
            return self.t0
        return self.t0 * (top / self.t0) ** (level / (heating - 1))

    def heating_steps(self, t_max: float) -> int:
        return self.steps


def make_schedule(cfg: WalkbackConfig) -> TemperatureSchedule:
    # How the noise std grows with T. The bernoulli operator divides its logits by T: its t_max is the top
    # temperature itself, which power 0.5 makes SpanSchedule reach (T_top = t_max^(1/(2·power))).
    power = 1.0 if cfg.temperature_noise == "std" and cfg.operator == "gaussian" else 0.5
    if cfg.schedule == "geometric":
        return GeometricSchedule(cfg.t0, cfg.factor, power)
    if cfg.schedule == "sqrt2":
        return Sqrt2Schedule(cfg.t0, power)
    if cfg.schedule == "list":
        return ListSchedule(cfg.temperatures)
    if cfg.schedule == "span":
        return SpanSchedule(cfg.t0, cfg.walkback_steps, power)
    raise NotImplementedError(cfg.schedule)


@dataclass(frozen=True)
class Trajectory:
    """Levels and temperatures of the heating steps t = 1..K (cooling visits them in reverse)."""

    levels: tuple[int, ...]
    temperatures: tuple[float, ...]
    n: int  # initial T = 1 steps before heating starts (Algorithm 1)

    @property
    def K(self) -> int:
        return len(self.levels)

    @property
    def heating(self) -> int:
        """Heating steps (K − n): the paper's 'number of steps' of Table 3.1a, without the T = 1 steps."""
        return self.K - self.n

    def steps(self) -> list[tuple[int, float]]:
        return list(zip(self.levels, self.temperatures))


class TrajectorySampler:
    """Chooses K and n for each trajectory: Algorithm 1's random length, or a fixed K (appendix, code)."""

    def __init__(self, cfg: WalkbackConfig, schedule: TemperatureSchedule) -> None:
        self.cfg, self.schedule = cfg, schedule

    @property
    def num_levels(self) -> int:
        """Distinct operators (batch-norm slots) any trajectory can use."""
        if self.cfg.schedule == "list":
            return len(self.cfg.temperatures)
        if self.cfg.schedule == "span":
            return self.cfg.walkback_steps
        return self.cfg.max_heating_steps if self.cfg.k_mode == "random" else self.cfg.walkback_steps

    def heating_steps(self, t_max: float) -> int:
        if self.cfg.schedule in ("list", "span"):
            return self.schedule.heating_steps(t_max)
        if self.cfg.k_mode in ("fixed", "fixed_heating"):
            return self.cfg.walkback_steps
        return min(max(self.schedule.heating_steps(t_max), 1), self.cfg.max_heating_steps)

    def trajectory(self, heating: int, n: int, t_max: float = 1.0) -> Trajectory:
        """K = heating + n steps; T = T0 for t ≤ n+1, then multiplied after each step (Algorithm 1)."""
        levels = tuple(max(0, t - 1 - n) for t in range(1, heating + n + 1))
        return Trajectory(levels, tuple(self.schedule.temperature(lv, heating, t_max) for lv in levels), n)

    def sample(self, t_max: float, generator: torch.Generator) -> Trajectory:
        """A training trajectory: n ~ U{0..N1}, K = ceil(log T_max / log f²) + n (random), K = walkback_steps + n
        (fixed_heating) or K fixed, n = 0 (schedule=span: K = walkback_steps + n, n ~ U{0..N1} unless fixed)."""
        n = 0
        if self.cfg.k_mode != "fixed":
            n = int(torch.randint(0, self.cfg.n1 + 1, (1,), generator=generator))
        return self.trajectory(self.heating_steps(t_max), n, t_max)

    def evaluation(self, t_max: float) -> Trajectory:
        """The sampler's trajectory: its reverse is the annealed cooling followed by `extra_steps` at T = 1."""
        return self.trajectory(self.heating_steps(t_max), self.cfg.extra_steps, t_max)


# ---------------------------------------------------------------------------------------------- operator


def _noise(kind: str, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal or U(0,1) noise shaped like `like`, drawn from `generator` (any device) or the global RNG."""
    draw = torch.randn if kind == "normal" else torch.rand
    if generator is None:
        return draw(like.shape, dtype=like.dtype, device=like.device)
    return draw(like.shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


@dataclass
class Transition:
    """p_T(· | s) for a batch of states (B, D): diagonal Gaussian (mean, std) or factorised Bernoulli (logits)."""

    operator: str
    temperature: float
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # already divided by T
    scale: float = 1.0  # gaussian: the factor T (or √T) multiplying softplus(F_σ)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x | s) summed over dimensions, (B,)."""
        if self.operator == "gaussian":
            return gaussian_log_prob(x, self.mean, self.std)
        return bernoulli_log_prob(x, self.logits, logits=True)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.operator == "gaussian":
            return self.mean + self.std * _noise("normal", self.mean, generator)
        return (_noise("uniform", self.logits, generator) < torch.sigmoid(self.logits)).to(self.logits.dtype)

    def expected(self) -> torch.Tensor:
        return self.mean if self.operator == "gaussian" else torch.sigmoid(self.logits)

    def unit_noise_var(self) -> torch.Tensor:
        """Per-example mean over dimensions of the noise variance this operator injects at T = 1, (B,)."""
        if self.operator == "gaussian":
            return (self.std / self.scale).pow(2).mean(1)
        p1 = torch.sigmoid(self.logits * self.temperature)
        return (p1 * (1 - p1)).mean(1)


# ---------------------------------------------------------------------------------------------- algorithm


class Walkback(Algorithm):
    """Variational Walkback (Algorithm 1). `net(s, level) -> (B, 2D | D)` is the F network of §3.3.

    Buffers kept in checkpoints: p*'s per-dimension mean and variance (`pstar_mean`, `pstar_var`), the data
    variance σ²_max (`data_var`) and the running σ² estimate (`noise_var`).
    """

    name = "walkback"
    Config = WalkbackConfig
    metric_names: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("loss", "nll_step_*", "walkback_steps", "heating_steps", "t_max", "top_temperature",
                  "noise_std", "pstar_std"),
        "quick": ("lower_bound", "loss", "walkback_steps", "heating_steps", "t_max"),
        "full": ("lower_bound", "importance", "importance_isotropic", "bits_per_dim", "bits_per_dim_importance",
                 "*_std", "walkback_steps", "heating_steps", "t_max", "reversibility_kl", "entropy_rate",
                 "reversibility_ratio"),
    }
    selection = ("lower_bound", "max")  # model selection on the validation bound (VW Algorithm 1; TAB A.1)
    cfg: WalkbackConfig

    @classmethod
    def presets(cls, dataset_kind: str) -> dict[str, Any]:
        if dataset_kind == "image":
            # The heating regime of the image experiments (module docstring, "Heating images"): K = 30 heating
            # steps (appendix §3.12) spanning T = 1 to T_max = σ²_max/σ², noise variance ∝ T (Algorithm 1),
            # σ²_max the squared range of the pixels ("squared diameter"), σ² the initial T=1 noise, set to a
            # tenth of the data std. Adam 1e-4, batch 100 as in the original code's image scripts.
            return {"algo": {"schedule": "span", "temperature_noise": "variance", "init_noise": 0.1,
                             "max_variance": "squared_range", "walkback_steps": 30, "k_mode": "random",
                             "mean_output": "sigmoid"},
                    "train": {"lr": 1e-4, "batch_size": 100}}
        if dataset_kind == "points":
            # Figs 3.8/3.9: 30 heating steps, temperature ×1.1 per step (σ ∝ T), in the regime the ladder is made
            # for (module docstring, "Heating toys"): the T=1 noise starts at a tenth of the data std and
            # Algorithm 1's n ~ U{0..N1} initial T=1 steps train the steps sampling adds. The original code uses
            # batches of 2500–5000; 500 keeps a CPU run quick, and the 2-D problem needs far fewer than 2×1200
            # units. Adam 1e-4 as for images: at 1e-3 the fixed 30-step runs diverged after ~3000 updates (σ and
            # p* blowing up), with or without gradient clipping at norm 1.
            return {
                "algo": {"schedule": "geometric", "factor": 1.1, "k_mode": "fixed_heating", "walkback_steps": 30,
                         "init_noise": 0.1, "net": {"hidden": [128, 128]}},
                "train": {"lr": 1e-4, "batch_size": 500},
            }
        raise KeyError(f"walkback models image and points data, not '{dataset_kind}' datasets")

    def __init__(self, config: RunConfig, dataset: Dataset, net: nn.Module | None = None) -> None:
        super().__init__(config, dataset)
        cfg = self.cfg
        self.dim = dataset.dim
        self.image = dataset.kind == "image"
        self.binary_data = dataset.binary
        self.schedule = make_schedule(cfg)
        self.sampler = TrajectorySampler(cfg, self.schedule)
        out_dim = 2 * self.dim if cfg.operator == "gaussian" else self.dim
        self.net = net if net is not None else build_step_operator(
            "walkback", cfg.architecture, dataset, out_dim, self.sampler.num_levels, cfg.net, cfg.conv
        )
        self._check_net(out_dim, dataset)
        if cfg.operator == "bernoulli" and not dataset.binary:
            log.warning("walkback: operator=bernoulli on non-binary data '%s': the log-probabilities are "
                        "cross-entropies, not likelihoods", dataset.name)
        self.register_buffer("pstar_mean", torch.zeros(self.dim))
        self.register_buffer("pstar_var", torch.ones(self.dim))
        self.register_buffer("data_var", torch.ones(()))
        self.register_buffer("noise_var", torch.ones(()))
        self.register_buffer("t_max_initial", torch.ones(()))
        self._opt = self.adam(self.net.parameters())
        self._reversibility_cache: tuple[int, dict[str, float]] | None = None

    def _check_net(self, out_dim: int, dataset: Dataset) -> None:
        """Fail before any work if the network's output width does not fit the operator (STYLE §6)."""
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            device = next((p.device for p in self.net.parameters()), torch.device("cpu"))
            width = self.net(torch.zeros(2, self.dim, device=device), 0).shape[-1]
        self.net.train(was)
        if width != out_dim:
            need = "2×D" if self.cfg.operator == "gaussian" else "D"
            raise ConfigError(
                f"algo.operator='{self.cfg.operator}' needs algo.net to output {need} = {out_dim} values per "
                f"example (D = {self.dim} for dataset '{dataset.name}' of shape {tuple(dataset.shape)}), but the "
                f"network outputs {width}; change the network or algo.operator"
            )

    # ------------------------------------------------------------------ the operator (§3.3)
    def transition(self, s: torch.Tensor, level: int, temperature: float) -> Transition:
        """p_T(· | s) at heating level `level` (per-step batch-norm slot) and temperature T. s: (B, D)."""
        out = self.net(s, level)  # (B, 2D) or (B, D)
        a = self.cfg.alpha
        if self.cfg.operator == "gaussian":
            f_mu, f_sigma = out.chunk(2, dim=1)
            if self.cfg.mean_output == "sigmoid":
                f_mu = torch.sigmoid(f_mu)
            if self.cfg.covariance == "isotropic":
                f_sigma = f_sigma.mean(1, keepdim=True).expand_as(f_sigma)
            mean = (1 - a) * s + a * f_mu
            scale = temperature if self.cfg.temperature_noise == "std" else math.sqrt(temperature)
            std = scale * (F.softplus(f_sigma) + self.cfg.min_std)
            return Transition("gaussian", temperature, mean=mean, std=std, scale=scale)
        if self.cfg.operator == "bernoulli":
            return Transition("bernoulli", temperature, logits=((1 - a) * s + a * out) / temperature)
        raise NotImplementedError(self.cfg.operator)

    def pstar(self, n: int) -> Transition:
        """p*(s_K) for n chains: Gaussian with p*'s moments (Bernoulli with its mean for binary states)."""
        mean = self.pstar_mean.expand(n, self.dim)
        if self.cfg.operator == "gaussian":
            return Transition("gaussian", 1.0, mean=mean, std=self.pstar_var.sqrt().expand(n, self.dim))
        return Transition("bernoulli", 1.0, logits=torch.logit(mean.clamp(1e-4, 1 - 1e-4)))

    @property
    def t_max_rule(self) -> str:
        if self.cfg.t_max_rule == "auto":
            return "initial" if self.cfg.operator == "gaussian" else "fixed"
        return self.cfg.t_max_rule

    @property
    def t_max(self) -> float:
        """T_max = σ²_max / σ² (Algorithm 1) with the current or the initial σ², or algo.t_max (fixed)."""
        if self.t_max_rule == "fixed":
            return float(self.cfg.t_max)
        if self.t_max_rule == "initial":
            return float(self.t_max_initial)
        return float(self.data_var / self.noise_var.clamp_min(1e-12))

    # ------------------------------------------------------------------ data-dependent set-up
    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(len(x), self.dim).float()

    def _dequantizes(self, enabled: bool) -> bool:
        return enabled and self.image and self.cfg.operator == "gaussian"

    def _bits_per_dim(self, estimates: dict[str, float], dequantized: bool) -> dict[str, float]:
        """bits/dim where the estimates bound the probability of discrete pixels: a Bernoulli operator on binary
        images, or a Gaussian one on dequantised 8-bit images. Anything else has no bits/dim."""
        if self.image and self.cfg.operator == "bernoulli" and self.binary_data:
            return bits_per_dim_estimates(estimates, self.dim, bin_width=None)
        if self._dequantizes(dequantized):
            return bits_per_dim_estimates(estimates, self.dim)
        return {}

    def _dequantize(self, x: torch.Tensor, enabled: bool, generator: torch.Generator | None) -> torch.Tensor:
        if self._dequantizes(enabled):
            if generator is not None and generator.device != x.device:  # e.g. the loop's CPU generator, CUDA data
                return dequantize(x.to(generator.device), generator).to(x.device)
            return dequantize(x, generator)
        return x

    @contextlib.contextmanager
    def _bn_statistics_untouched(self) -> Iterator[None]:
        saved = {k: v.clone() for k, v in self.net.named_buffers()}
        try:
            yield
        finally:
            current = dict(self.net.named_buffers())
            for k, v in saved.items():
                current[k].copy_(v)

    def setup(self, train: torch.Tensor) -> None:
        """p* ← N(data mean, data variance); σ²_max ← mean data variance; σ² ← the operator's noise at the data."""
        x = self._flat(train)
        var = x.var(0, unbiased=False) if len(x) > 1 else torch.ones_like(x[0])
        self.pstar_mean.copy_(x.mean(0))
        self.pstar_var.copy_(var.clamp_min(self.cfg.min_variance))
        if self.cfg.max_variance == "squared_range":
            sigma2_max = (x.max(0).values - x.min(0).values).pow(2).mean()
        else:
            sigma2_max = var.mean()
        self.data_var.copy_(sigma2_max.clamp_min(self.cfg.min_variance))
        if self.cfg.init_noise is not None and self.cfg.operator == "gaussian":
            self._init_noise(self.cfg.init_noise * float(var.mean().sqrt()))
        batch = x[: self.run_config.train.batch_size]
        if len(batch) > 1:  # batch statistics need two examples; the estimate leaves the BN buffers alone
            with torch.no_grad(), self._bn_statistics_untouched():
                was = self.net.training
                self.net.train()
                first = self.transition(batch, 0, self.cfg.t0)
                self.net.train(was)
            self.noise_var.copy_(first.unit_noise_var().mean())
            if not bool(torch.isfinite(self.noise_var)):  # e.g. init_noise=1e30: σ² overflows float32, T_max = 0
                raise ConfigError(f"algo.init_noise={self.cfg.init_noise:g} makes the initial T=1 noise variance "
                                  "overflow (it is a fraction of the data std; the preset is 0.1)")
        self.t_max_initial.copy_(self.data_var / self.noise_var.clamp_min(1e-12))
        log.info("walkback: σ²_max=%.4g, σ²=%.4g, T_max=%.4g", float(self.data_var), float(self.noise_var), self.t_max)

    @torch.no_grad()
    def _init_noise(self, std: float) -> None:
        """Start softplus(F_σ) at `std` everywhere: the F_σ half of the output layer gets zero weights (they
        still receive gradients) and bias softplus⁻¹(std)."""
        std = max(std, 1e-6)
        if isinstance(self.net, ConvOperator):  # F_σ is the conv operator's second head
            self.net.start_head(1, std + math.log(-math.expm1(-std)))
            return
        head = getattr(self.net, "head", None)
        if not isinstance(head, nn.Linear) or head.bias is None:
            raise ConfigError("algo.init_noise needs the built-in StepMLP network (a Linear output layer `head`)")
        head.weight[self.dim :].zero_()
        head.bias[self.dim :].fill_(std + math.log(-math.expm1(-std)))  # softplus⁻¹(y) = y + log(1 − e^{−y})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"operator": self._opt}

    def load_model(self, model_state: dict[str, Any]) -> None:
        if "t_max_initial" not in model_state:  # checkpoints written before t_max_rule=initial existed
            model_state = {**model_state, "t_max_initial": model_state["data_var"] / model_state["noise_var"]}
        super().load_model(model_state)
        self._reversibility_cache = None

    # ------------------------------------------------------------------ training (Algorithm 1)
    def _trajectory_generator(self) -> torch.Generator:
        # K must be identical on every data-parallel worker (each update all-reduces gradients), so it is
        # drawn from a generator determined by the seed and the update count, not from the worker's RNG.
        return torch.Generator().manual_seed(self.run_config.seed * 1_000_003 + self.updates)

    def step_nll(self, s_prev: torch.Tensor, s_next: torch.Tensor, level: int, temperature: float) -> torch.Tensor:
        """The per-example training loss of one walkback step, (B,).

        paper: −log p_T(s_{t−1} | s_t): the operator evaluated at the *next* state scores the previous one.
        original_code: −log p_T(s_{t−1} | s_{t−1}): the current state scored under the operator computed from
        it (what the public code trains; an ablation).
        """
        if self.cfg.loss == "paper":
            return -self.transition(s_next, level, temperature).log_prob(s_prev)
        if self.cfg.loss == "original_code":
            return -self.transition(s_prev, level, temperature).log_prob(s_prev)
        raise NotImplementedError(self.cfg.loss)

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        """One heating trajectory from the minibatch, walked back step by step (Algorithm 1)."""
        cfg = self.cfg
        x = self._dequantize(self._flat(batch), cfg.dequantize_train, None)
        traj = self.sampler.sample(self.t_max, self._trajectory_generator())
        s_prev = x
        total: torch.Tensor | None = None
        metrics: dict[str, float] = {}
        unit_var = None
        # Online mode makes one update per walkback step, so a trajectory can end past train.steps. The budget is
        # exact: once it is spent (and at least one update was made), the rest of the trajectory is still walked
        # (p* tracks the moments of s_K, and the step metrics stay comparable) but makes no further update.
        budget, start = self.run_config.train.steps, self.updates
        for t, (level, temperature) in enumerate(traj.steps(), start=1):
            with torch.no_grad():  # the heating step is sampled with the current θ (θ_q ← θ_p, §3)
                q = self.transition(s_prev, level, temperature)
                s_next = q.sample()
            if t == 1:
                unit_var = q.unit_noise_var().mean()
            spent = cfg.update_mode == "online" and self.updates >= budget and self.updates > start
            with torch.set_grad_enabled(torch.is_grad_enabled() and not spent):
                nll = self.step_nll(s_prev, s_next, level, temperature).mean()
            if cfg.update_mode == "online":
                if not spent:
                    self.update(self._opt, nll)
            elif cfg.update_mode == "accumulated":
                total = nll if total is None else total + nll
            else:
                raise NotImplementedError(cfg.update_mode)
            metrics[f"nll_step_{t:02d}"] = float(nll.detach())
            s_prev = s_next
        if total is not None:
            self.update(self._opt, total)
        self._track_statistics(s_prev, unit_var)
        metrics["loss"] = sum(v for k, v in metrics.items() if k.startswith("nll_step_"))
        metrics.update(walkback_steps=float(traj.K), heating_steps=float(traj.heating), t_max=self.t_max,
                       top_temperature=max(traj.temperatures), end_std=float(s_prev.std(0).mean()),
                       noise_std=float(self.noise_var.sqrt()),
                       pstar_std=float(self.pstar_var.sqrt().mean()))
        return metrics

    @torch.no_grad()
    def _track_statistics(self, s_K: torch.Tensor, unit_var: torch.Tensor | None) -> None:
        """p* ← EMA toward the moments of s_K; σ² ← EMA toward the operator's noise at the data (Algorithm 1)."""
        m = self.cfg.pstar_momentum
        if m > 0:
            moments = self.ctx.all_reduce_mean(torch.stack([s_K.mean(0), s_K.pow(2).mean(0)]))
            var = (moments[1] - moments[0].pow(2)).clamp_min(self.cfg.min_variance)
            self.pstar_mean.lerp_(moments[0].to(self.pstar_mean), m)
            self.pstar_var.lerp_(var.to(self.pstar_var), m).clamp_min_(self.cfg.min_variance)
        if unit_var is not None:
            unit_var = self.ctx.all_reduce_mean(unit_var.reshape(1))[0]
            self.noise_var.lerp_(unit_var.to(self.noise_var), self.cfg.noise_momentum)

    # ------------------------------------------------------------------ bound (eq 5) and importance sampling (eq 10)
    def log_weights(
        self, x: torch.Tensor, traj: Trajectory, generator: torch.Generator | None = None, *, isotropic: bool = False
    ) -> dict[str, torch.Tensor]:
        """One heating path s_1..s_K ~ q(·|x) per row of x (B, D); per-example terms, each (B,).

        log_weight ℓ = Σ_{t=1..K} [log p_{T_t}(s_{t−1} | s_t) − log q_{T_t}(s_t | s_{t−1})] + log p*(s_K), in
        nats (higher is better), with s_0 = x and q_{T_t} = p_{T_t} (the same operator at level ℓ_t). Its mean is
        eq 5's single-trajectory bound; eq 10 is log mean_j exp(ℓ_j) over k paths. Eq 10 also divides by
        q_{T0}(x), the data density: conditioned on one example that factor is an unknown constant, and keeping
        it would estimate log p(x) − log q(x), so the per-example estimate of log p(x) leaves it out.
        loss: the configured training loss summed over the steps (−Σ_t log p_T(s_{t−1}|s_t) for the paper).
        log_weight_isotropic (gaussian, if asked): ℓ with the output step p_{T_1}(x | s_1) replaced by an isotropic
        Gaussian N(μ(s_1), σ̄²I), σ̄² the mean over dimensions of the operator's own variances at s_1
        (the papers do not say how their fixed variance was chosen; this one needs no data).
        """
        s_prev = x
        log_w = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        loss = torch.zeros_like(log_w)
        out: dict[str, torch.Tensor] = {}
        steps = traj.steps()
        reuse: Transition | None = None
        for t, (level, temperature) in enumerate(steps, start=1):
            q = reuse if reuse is not None else self.transition(s_prev, level, temperature)
            s = q.sample(generator)
            p = self.transition(s, level, temperature)
            # On the T = 1 stretch consecutive steps share one operator: p at s_t is the next step's q.
            reuse = p if t < len(steps) and steps[t] == (level, temperature) else None
            log_p = p.log_prob(s_prev)
            log_w += (log_p - q.log_prob(s)).double()
            loss -= (log_p if self.cfg.loss == "paper" else q.log_prob(s_prev)).double()
            if t == 1 and isotropic and self.cfg.operator == "gaussian":
                iso_std = p.std.pow(2).mean(1, keepdim=True).sqrt()
                out["output_delta"] = (gaussian_log_prob(s_prev, p.mean, iso_std) - log_p).double()
            s_prev = s
        log_w += self.pstar(len(x)).log_prob(s_prev).double()
        out.update(log_weight=log_w, loss=loss)
        if "output_delta" in out:
            out["log_weight_isotropic"] = log_w + out.pop("output_delta")
        return out

    def evaluate(self, data: torch.Tensor, split: str, *, full: bool, generator: torch.Generator) -> dict[str, float]:
        """quick: eq 5 on one path per example (`lower_bound`) and the training loss (`loss`).

        full: eq 5 and eq 10 from k = eval.likelihood_samples paths per example, repeated eval.repeats times
        (mean and `_std`), with U(0,1/256) dequantisation of real-valued images when eval.dequantize (fresh noise
        per repeat), bits/dim where the numbers bound a probability of discrete pixels (Table 3.2), the
        isotropic-output variant when eval.isotropic, and the reversibility measure (§3.14).
        """
        ec = self.run_config.eval
        with self._evaluating():
            traj = self.sampler.evaluation(self.t_max)
            x_raw = self._flat(data)
            if not full:
                terms = self._paths(self._dequantize(x_raw, ec.dequantize, generator), 1, traj, generator)
                return {"lower_bound": float(terms["log_weight"].mean()), "loss": float(terms["loss"].mean()),
                        "walkback_steps": float(traj.K), "heating_steps": float(traj.heating)}
            isotropic = ec.isotropic and self.cfg.operator == "gaussian"
            if ec.isotropic and not isotropic:
                log.info("walkback: eval.isotropic applies to the gaussian operator only; skipped")
            repeats = []
            for _ in range(ec.repeats):
                x = self._dequantize(x_raw, ec.dequantize, generator)
                terms = self._paths(x, ec.likelihood_samples, traj, generator, isotropic=isotropic)
                est = importance_estimates(terms["log_weight"])
                row = {"lower_bound": float(est["lower_bound"].mean()), "importance": float(est["importance"].mean())}
                row.update(self._bits_per_dim(row, ec.dequantize))
                if isotropic:
                    row["importance_isotropic"] = float(importance_estimates(terms["log_weight_isotropic"])
                                                        ["importance"].mean())
                repeats.append(row)
            result = summarise_repeats(repeats)
            result["walkback_steps"] = float(traj.K)
            result["heating_steps"] = float(traj.heating)  # Table 3.1a's 'N steps' (without the T = 1 steps)
            result["t_max"] = self.t_max
            if self.cfg.reversibility_steps:
                # A property of the operator alone: measured once per model state, reported with every split.
                if self._reversibility_cache is None or self._reversibility_cache[0] != self.updates:
                    self._reversibility_cache = (self.updates, self.reversibility(generator))
                result.update(self._reversibility_cache[1])
            return result

    def _paths(self, x: torch.Tensor, k: int, traj: Trajectory, generator: torch.Generator | None,
               *, isotropic: bool = False) -> dict[str, torch.Tensor]:
        """k paths per example, in chunks of eval_batch rows; each term reshaped to (N, k)."""
        rows = x.repeat_interleave(k, dim=0)
        chunks = [self.log_weights(rows[i : i + self.cfg.eval_batch], traj, generator, isotropic=isotropic)
                  for i in range(0, len(rows), self.cfg.eval_batch)]
        return {key: torch.cat([c[key] for c in chunks]).reshape(len(x), k) for key in chunks[0]}

    def reversibility(self, generator: torch.Generator | None = None) -> dict[str, float]:
        """§3.14: chains at T = 1 started from the sampler, log p(s_{t+1}|s_t) vs log p(s_t|s_{t+1}) after burn-in."""
        cfg = self.cfg
        with self._evaluating():
            s = self._cool(cfg.reversibility_chains, generator)[1][-1]
            forward, backward = [], []
            p = self.transition(s, 0, 1.0)
            for _ in range(cfg.reversibility_steps):
                s_next = p.sample(generator)
                p_next = self.transition(s_next, 0, 1.0)
                forward.append(p.log_prob(s_next))
                backward.append(p_next.log_prob(s))
                s, p = s_next, p_next
            lf, lb = torch.stack(forward, 1), torch.stack(backward, 1)
            # A learnt operator iterated 1 000 times can run away (F is unbounded); such chains have no finite
            # log-probabilities. They are left out of the measure and counted, rather than failing the whole
            # evaluation suite.
            finite = (torch.isfinite(lf) & torch.isfinite(lb)).all(1)
            kept = int(finite.sum())
            if kept < len(finite):
                log.warning("walkback: %d of %d reversibility chains diverged (non-finite log-probabilities)",
                            len(finite) - kept, len(finite))
            if kept == 0:
                nan = float("nan")
                out = {"reversibility_kl": nan, "entropy_rate": nan, "reversibility_ratio": nan}
            else:
                out = reversibility_ratio(lf[finite], lb[finite], cfg.reversibility_burn_in)
            out["reversibility_chains_finite"] = kept / len(finite)
            return out

    # ------------------------------------------------------------------ sampling
    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was)

    def _clip(self, s: torch.Tensor, where: str) -> torch.Tensor:
        if self.image and (self.cfg.clip == where or (where == "output" and self.cfg.clip == "chain")):
            return s.clamp(0.0, 1.0)
        return s

    def _cool(
        self, n: int, generator: torch.Generator | None, *, known: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Annealed cooling from p* through the reversed evaluation trajectory (its last extra_steps + 1 steps
        run the T = 1 operator). Returns (output (n, D), states [s_K, …, s_0]). With `mask`, the entries where
        mask is True are reset to `known` after every step (inpainting)."""
        traj = self.sampler.evaluation(self.t_max)
        s = self.pstar(n).sample(generator)
        if mask is not None:
            s = torch.where(mask, known, s)
        states = [s]
        last: Transition | None = None
        for level, temperature in reversed(traj.steps()):
            last = self.transition(s, level, temperature)
            s = self._clip(last.sample(generator), "chain")
            if mask is not None:
                s = torch.where(mask, known, s)
            states.append(s)
        assert last is not None
        out = last.expected() if self.cfg.output == "mean" else s
        if mask is not None:
            out = torch.where(mask, known, out)
        return self._clip(out, "output"), states

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples (n, *shape): annealed cooling from p*, then extra_steps at T = 1; the last step's mean by default."""
        chunk = max(self.cfg.eval_batch, 1)
        with self._evaluating():
            outs = [self._cool(min(chunk, n - i), generator)[0] for i in range(0, n, chunk)]
        return torch.cat(outs).reshape(n, *self.shape)

    def cooling_chain(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The states of n sampling chains, (K + extra_steps + 2, n, *shape): s_K, …, s_0, then the output."""
        with self._evaluating():
            out, states = self._cool(n, generator)
        return torch.stack([*states, out]).reshape(-1, n, *self.shape)

    def chains(self, n: int, steps: int, *, every: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
        """n chains of `steps` T = 1 transitions started from the sampler's final states; every `every`-th state,
        (steps // every + 1, n, *shape). Arbitrarily long: only the kept states are stored."""
        if steps < 0 or every < 1:
            raise ValueError(f"chains needs steps >= 0 and every >= 1, got steps={steps}, every={every}")
        with self._evaluating():
            s = self._cool(n, generator)[1][-1]
            kept = [s]
            for i in range(1, steps + 1):
                s = self._clip(self.transition(s, 0, 1.0).sample(generator), "chain")
                if i % every == 0:
                    kept.append(s)
        return torch.stack(kept).reshape(-1, n, *self.shape)

    def inpaint(self, x: torch.Tensor, mask: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill the entries of x (N, *shape) where mask is False; entries where mask is True are clamped to x at
        every sampling step (§5 'Image Inpainting') and returned unchanged."""
        if mask.shape != x.shape:
            raise ValueError(f"inpaint: mask shape {tuple(mask.shape)} must equal x shape {tuple(x.shape)}")
        with self._evaluating():
            known = self._flat(x)
            out, _ = self._cool(len(x), generator, known=known, mask=mask.reshape(len(x), -1).bool())
        return out.reshape(x.shape)

    def artifacts(self, dataset: Dataset, *, generator: torch.Generator) -> list[Artifact]:
        """images: samples, cooling chains, a long T=1 chain (every 10th) and inpainting; points: scatter, chains."""
        from raygen import plots

        ec = self.run_config.eval
        if dataset.kind == "points":
            n = max(ec.sample_count, 1000)  # a scatter needs many points
            data = dataset.splits["train"][:2000]
            chain = self.cooling_chain(n, generator=generator)
            return [
                Artifact("samples.png", "image", plots.points_png(self.sample(n, generator=generator), data,
                                                                  title="walkback samples")),
                Artifact("chains.png", "image", plots.point_chains_png(chain, data, every=5)),
            ]
        shape = dataset.image_shape
        if shape is None:
            return []
        m = ec.chain_count
        chain = self.cooling_chain(m, generator=generator).reshape(-1, m, *shape)
        long_steps = ec.chain_steps or 200
        long = self.chains(m, long_steps, every=10, generator=generator).reshape(-1, m, *shape)
        test = dataset.splits["test"][:m].to(self.device).reshape(-1, *shape)
        mask = torch.zeros_like(test, dtype=torch.bool)
        mask[..., : shape[-2] // 2, :] = True  # the top half is known; the bottom half is filled in
        filled = self.inpaint(test, mask, generator=generator)
        rows = torch.stack([test, torch.where(mask, test, torch.zeros_like(test)), filled], 1).reshape(-1, *shape)
        samples = self.sample(ec.sample_count, generator=generator).reshape(-1, *shape)
        return [
            Artifact("samples.png", "image", plots.image_grid_png(samples, nrow=8, title="walkback samples")),
            Artifact("chains.png", "image", plots.chains_png(chain, title="cooling chain (last: output)")),
            Artifact("long_chain.png", "image",
                     plots.chains_png(long, title=f"T=1 chain, every 10th of {long_steps} steps")),
            Artifact("inpainting.png", "image",
                     plots.image_grid_png(rows, nrow=3, title="test | top half kept | bottom filled")),
        ]
