"""Annealed importance sampling (AIS) of log p(x) for decoder-based generative models.

Wu, Burda, Salakhutdinov & Grosse (2016), "On the quantitative analysis of decoder-based generative models",
the source of the VAE/GAN/GMMN rows of VW Table 3.1b and Infusion TAB 3.1. The model is a prior
p(z) = N(0, I) over a latent z and a decoder observation model p(x | z) (Bernoulli, or a Gaussian around the
generator's output for GANs and GMMNs). AIS moves K independent chains per example along the geometric path

    p_t(z) ∝ p(z) · p(x | z)^β_t,    0 = β_0 < β_1 < … < β_T = 1,

from the prior (whose normaliser is 1) to the unnormalised posterior (whose normaliser is p(x)). Each chain
starts at z_0 ~ p(z) and accumulates the log-weight Σ_t (β_t − β_{t−1}) log p(x | z_{t−1}), with z_t drawn from an
HMC transition that leaves p_t invariant. exp(log-weight) is an unbiased estimate of p(x), so

    forward estimate = logsumexp_k(log w_k) − log K     (a stochastic lower bound: E[estimate] ≤ log p(x))

Run backwards from an exact posterior sample (which simulated data provide: draw z ~ p(z), then x ~ p(x | z)),
the same weights estimate 1/p(x) unbiasedly, which gives a stochastic upper bound (reverse AIS). The two
together are bidirectional Monte Carlo (BDMC, Grosse, Ghahramani & Adams 2015): on simulated data the true
log p(x) lies between them, and their gap bounds the error of the forward estimate.

Settings (Wu et al. §3–4): sigmoid schedule, HMC with 10 leapfrog steps and a step size adapted toward
0.65 acceptance, 16 independent chains, 1 000 (quick) to 10 000 (paper) intermediate distributions. The paper
gives no adaptation rule; we use the multiplicative rule of the Theano HMC tutorial that its code builds on
(a moving average of the acceptance rate, ×1.02 above the target, ×0.98 below, clamped), one step size per
example shared by its chains. The schedule's sigmoid radius 4 is that of Grosse et al. 2013 (not stated in
Wu et al.). Dequantisation of real-valued data (U(0, 1/256)) is the caller's business (`dequantize`).

Chains × examples are one tensor of R = K·N rows (row k·N + n is chain k of example n), so every HMC step
is one batched decoder pass for all of them; `batch_examples` bounds N per pass for memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator

from raygen.config import Section

# log p(x | z) for rows: z (R, L), x (R, ...) -> (R,), differentiable in z.
LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AISConfig(Section):
    """AIS settings; defaults are Wu et al. (2016)'s quick setting (set steps=10000 for the paper's)."""

    steps: int = Field(
        1000, ge=1, description="intermediate distributions T (Wu et al.: 1 000 quick, 10 000 for the tables)"
    )
    chains: int = Field(16, ge=1, description="independent chains per example (Wu et al.: 16)")
    schedule: Literal["sigmoid", "linear"] = Field(
        "sigmoid", description="β_t schedule: sigmoid (Wu et al., after Grosse et al. 2013) or linear"
    )
    sigmoid_radius: float = Field(
        4.0, gt=0, description="δ of the sigmoid schedule σ(δ(2t/T − 1)), rescaled to [0, 1] (Grosse et al.: 4)"
    )
    leapfrog_steps: int = Field(10, ge=1, description="leapfrog steps per HMC transition (Wu et al.: 10)")
    initial_step_size: float = Field(0.01, gt=0, description="HMC step size before adaptation")
    target_acceptance: float = Field(
        0.65, gt=0, lt=1, description="acceptance rate the step size is adapted toward (Wu et al.: 0.65)"
    )
    step_size_increase: float = Field(1.02, gt=1, description="step-size factor when acceptance is above target")
    step_size_decrease: float = Field(0.98, gt=0, lt=1, description="step-size factor when below target")
    acceptance_decay: float = Field(
        0.9, ge=0, lt=1, description="moving average of the acceptance rate: avg ← d·avg + (1−d)·rate"
    )
    min_step_size: float = Field(1e-4, gt=0)
    max_step_size: float = Field(0.5, gt=0)
    batch_examples: int | None = Field(
        100, ge=1, description="examples per batched pass (rows = chains × examples; memory only, not results)"
    )

    @model_validator(mode="after")
    def _step_bounds(self) -> AISConfig:
        if not self.min_step_size <= self.initial_step_size <= self.max_step_size:
            raise ValueError(
                f"AIS step sizes must satisfy min_step_size ≤ initial_step_size ≤ max_step_size; got "
                f"{self.min_step_size} ≤ {self.initial_step_size} ≤ {self.max_step_size}"
            )
        return self


@dataclass(frozen=True)
class AISResult:
    """log_likelihood: per-example estimate of log p(x) (N,) — a stochastic lower bound from forward AIS, an
    upper bound from reverse AIS. log_weights: (K, N), the chains' log-weights (of p(x) forward, of 1/p(x)
    reverse). acceptance: mean HMC acceptance rate; step_size: (N,) final adapted step sizes."""

    log_likelihood: torch.Tensor
    log_weights: torch.Tensor
    acceptance: float
    step_size: torch.Tensor
    reverse: bool


def ais_schedule(steps: int, kind: str = "sigmoid", radius: float = 4.0) -> torch.Tensor:
    """β_0 = 0 < … < β_T = 1 (float64, T+1 values). sigmoid: σ(δ(2t/T − 1)) affinely rescaled so the ends are
    exactly 0 and 1 (dense near both ends, where the path changes fastest); linear: t/T."""
    if steps < 1:
        raise ValueError(f"AIS needs at least 1 intermediate step, got {steps}")
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if kind == "linear":
        return t
    if kind != "sigmoid":
        raise ValueError(f"unknown AIS schedule '{kind}' (known: sigmoid, linear)")
    s = torch.sigmoid(radius * (2 * t - 1))
    beta = (s - s[0]) / (s[-1] - s[0])
    beta[0], beta[-1] = 0.0, 1.0
    return beta


def _randn(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None or generator.device == like.device:
        return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


def _rand(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None or generator.device == like.device:
        return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


def _loglik_and_grad(fn: LogLikelihood, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x | z) (R,) and its gradient in z (R, L), both detached."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        ll = fn(z, x)
        if ll.shape != z.shape[:1]:
            raise ValueError(
                f"AIS: the log-likelihood function must return one value per row, shape ({z.shape[0]},); "
                f"got {tuple(ll.shape)}"
            )
        (grad,) = torch.autograd.grad(ll.sum(), z)
    return ll.detach(), grad.detach()


def _ais_batch(
    fn: LogLikelihood,
    x: torch.Tensor,
    latent_dim: int,
    cfg: AISConfig,
    betas: torch.Tensor,
    generator: torch.Generator | None,
    start: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """AIS over β in the given order for N examples at once; returns (log-weights (K, N), step sizes (N,),
    mean acceptance). `start` (K·N, L): initial states (exact posterior draws for reverse AIS); None = prior."""
    n, k = x.shape[0], cfg.chains
    rows = x.repeat(k, *([1] * (x.dim() - 1)))  # (K·N, ...): chain-major, row c·N + i is chain c of example i
    z = _randn((k * n, latent_dim), rows, generator) if start is None else start.to(rows).clone()
    ll, g_ll = _loglik_and_grad(fn, z, rows)
    logw = torch.zeros(k * n, dtype=torch.float64, device=rows.device)
    eps = torch.full((n,), cfg.initial_step_size, dtype=rows.dtype, device=rows.device)
    avg_accept = torch.full((n,), cfg.target_acceptance, dtype=rows.dtype, device=rows.device)
    accepted, transitions = 0.0, 0
    b = betas.tolist()
    for i in range(1, len(b)):
        logw += (b[i] - b[i - 1]) * ll.double()
        if i == len(b) - 1:
            break  # the weight is complete; a transition at the last distribution would not change it
        beta = b[i]
        # HMC for U(z) = ½‖z‖² − β·log p(x|z) (the prior's constant cancels in the acceptance ratio).
        step = eps.repeat(k)[:, None]
        p0 = _randn(tuple(z.shape), z, generator)
        u0 = 0.5 * (z * z).sum(1) - beta * ll
        z1, ll1, g1 = z, ll, g_ll
        p = p0 - 0.5 * step * (z1 - beta * g1)
        for j in range(cfg.leapfrog_steps):
            z1 = z1 + step * p
            ll1, g1 = _loglik_and_grad(fn, z1, rows)
            grad_u = z1 - beta * g1
            p = p - (step if j < cfg.leapfrog_steps - 1 else 0.5 * step) * grad_u
        u1 = 0.5 * (z1 * z1).sum(1) - beta * ll1
        log_ratio = (u0 + 0.5 * (p0 * p0).sum(1)) - (u1 + 0.5 * (p * p).sum(1))
        # A NaN/inf proposal (a diverged trajectory) is rejected, never accepted.
        ok = torch.isfinite(log_ratio) & (torch.log(_rand((k * n,), z, generator)) < log_ratio)
        z = torch.where(ok[:, None], z1, z)
        ll = torch.where(ok, ll1, ll)
        g_ll = torch.where(ok[:, None], g1, g_ll)
        rate = ok.to(rows.dtype).view(k, n).mean(0)
        accepted += float(rate.sum())
        transitions += n
        avg_accept = cfg.acceptance_decay * avg_accept + (1 - cfg.acceptance_decay) * rate
        factor = torch.where(
            avg_accept > cfg.target_acceptance,
            torch.full_like(eps, cfg.step_size_increase),
            torch.full_like(eps, cfg.step_size_decrease),
        )
        eps = (eps * factor).clamp(cfg.min_step_size, cfg.max_step_size)
    return logw.view(k, n), eps, (accepted / transitions if transitions else float("nan"))


def ais_log_likelihood(
    log_likelihood: LogLikelihood,
    x: torch.Tensor,
    latent_dim: int,
    config: AISConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    posterior_samples: torch.Tensor | None = None,
) -> AISResult:
    """AIS estimate of log p(x) = log ∫ N(z; 0, I) p(x | z) dz for each row of x (N, ...), in nats.

    log_likelihood(z, x): log p(x | z) per row for z (R, L) and x (R, ...) (R = chains × examples),
    differentiable in z. Forward AIS (the default) from the prior: a stochastic lower bound. With
    posterior_samples — exact draws z ~ p(z | x), shape (N, L) (one shared by all chains of an example) or
    (chains, N, L) — reverse AIS from the posterior to the prior: a stochastic upper bound (BDMC).
    """
    cfg = config or AISConfig()
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("AIS: x must be a floating-point tensor of examples (N, ...)")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"AIS: x must hold at least one example, got shape {tuple(x.shape)}")
    if latent_dim < 1:
        raise ValueError(f"AIS: latent_dim must be ≥ 1, got {latent_dim}")
    n, k = x.shape[0], cfg.chains
    reverse = posterior_samples is not None
    betas = ais_schedule(cfg.steps, cfg.schedule, cfg.sigmoid_radius)
    if reverse:
        betas = betas.flip(0)
        post = posterior_samples
        if post.dim() == 2:
            post = post.unsqueeze(0).expand(k, *post.shape)
        if tuple(post.shape) != (k, n, latent_dim):
            raise ValueError(
                f"AIS: posterior_samples must have shape ({n}, {latent_dim}) or ({k}, {n}, {latent_dim}), "
                f"got {tuple(posterior_samples.shape)}"
            )
    per = cfg.batch_examples or n
    weights, steps, acc = [], [], []
    for lo in range(0, n, per):
        xb = x[lo : lo + per]
        start = post[:, lo : lo + per].reshape(-1, latent_dim) if reverse else None
        w, eps, a = _ais_batch(log_likelihood, xb, latent_dim, cfg, betas, generator, start)
        weights.append(w)
        steps.append(eps)
        acc.append(a * len(xb))
    logw = torch.cat(weights, 1)
    lse = torch.logsumexp(logw, 0) - math.log(k)
    return AISResult(
        log_likelihood=-lse if reverse else lse,
        log_weights=logw,
        acceptance=sum(acc) / n,
        step_size=torch.cat(steps),
        reverse=reverse,
    )
