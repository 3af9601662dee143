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
is one batched decoder pass for all of them; `batch_examples` bounds N per pass for memory. The gradient of
log p(x | z) comes from autograd for any log-likelihood function, or by hand for an MLP decoder wrapped in
`MLPLogLikelihood` (the same function, 1.2–2× faster AIS on CPU; `benchmarks/bench_ais.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

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


class MLPLogLikelihood:
    """log p(x | z) of an MLP decoder with its gradient in z written out, for AIS's HMC.

    decoder: an ``nn.Sequential`` of ``nn.Linear`` layers, each optionally followed by ``nn.Tanh``, ``nn.ReLU``,
    ``nn.LeakyReLU`` or ``nn.Sigmoid`` (the decoders of Wu et al. and of `raygen.algorithms.latent`), ending in
    a Linear layer whose output f(z) is the observation model's parameter: Bernoulli logits
    (``observation="bernoulli"``, as `bernoulli_log_prob`), or the Gaussian mean (``observation="gaussian"``
    with ``std`` (scalar or per dimension), mean f(z) or σ(f(z)) by ``mean_output``, as `gaussian_log_prob`).

    Why: autograd records a graph at every leapfrog step and replays it, with an elementwise pass for the
    backward of each piece of the log-density and the engine's bookkeeping. Here the backward is the chain
    rule by hand: the same matrix products, the elementwise work done in place on the forward's buffers, and no
    value where HMC needs only the gradient. The value is the same function as the autograd path (tested against it). Use it as the
    log_likelihood of `ais_log_likelihood` (which then calls `value_and_grad`); calling it returns the value.
    """

    def __init__(
        self,
        decoder: nn.Sequential,
        observation: Literal["bernoulli", "gaussian"] = "bernoulli",
        *,
        std: torch.Tensor | float | None = None,
        mean_output: Literal["linear", "sigmoid"] = "linear",
    ) -> None:
        if observation not in ("bernoulli", "gaussian"):
            raise ValueError(f"MLPLogLikelihood: unknown observation model '{observation}' (known: bernoulli, gaussian)")
        if mean_output not in ("linear", "sigmoid"):
            raise ValueError(f"MLPLogLikelihood: unknown mean_output '{mean_output}' (known: linear, sigmoid)")
        if (observation == "gaussian") != (std is not None):
            raise ValueError("MLPLogLikelihood: a Gaussian observation model needs std, a Bernoulli one takes none")
        mods = list(decoder)
        layers: list[tuple[nn.Linear, nn.Module | None]] = []
        i = 0
        while i < len(mods):
            lin = mods[i]
            if not isinstance(lin, nn.Linear):
                raise TypeError(
                    f"MLPLogLikelihood: expected nn.Linear at position {i} of the decoder, got {type(lin).__name__} "
                    "(pass a plain log-likelihood function to use autograd instead)"
                )
            act = mods[i + 1] if i + 1 < len(mods) and not isinstance(mods[i + 1], nn.Linear) else None
            if act is not None and not isinstance(act, (nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.Sigmoid)):
                raise ValueError(
                    f"MLPLogLikelihood: unsupported activation {type(act).__name__} at position {i + 1} (supported: "
                    "Tanh, ReLU, LeakyReLU, Sigmoid; pass a plain log-likelihood function to use autograd instead)"
                )
            layers.append((lin, act))
            i += 2 if act is not None else 1
        if layers[-1][1] is not None:
            raise ValueError("MLPLogLikelihood: the decoder must end in an nn.Linear (the observation parameter)")
        self.decoder, self.layers, self.observation, self.mean_output = decoder, layers, observation, mean_output
        if std is not None:
            # One value, or one per dimension; a Python float is kept in float64 so float64 runs see it exactly.
            std_t = (std.detach() if isinstance(std, torch.Tensor) else torch.tensor(float(std), dtype=torch.float64))
            std_t = std_t.reshape(-1)
            if bool((std_t <= 0).any()):
                raise ValueError("MLPLogLikelihood: std must be > 0 everywhere")
            self.std = std_t

    def _forward(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """f(z) and the hidden activations (kept for the backward)."""
        hidden, h = [], z
        for lin, act in self.layers:
            if isinstance(act, nn.Tanh) and h.device.type == "cpu":
                # tanh(a) = 2σ(2a) − 1, the factor 2 folded into the matrix product: on CPU, torch's tanh costs
                # about 4× a sigmoid per element (measured: 5.5 vs 1.4 ns in float32), and the tanh layers were a
                # third of the batched AIS time with the digits-sized decoder. Same function; |difference| ≲ 2e-7.
                if lin.bias is None:
                    h = torch.mm(h, lin.weight.t()).mul_(2)
                else:
                    h = torch.addmm(lin.bias, h, lin.weight.t(), beta=2, alpha=2)
                hidden.append(h.sigmoid_().mul_(2).sub_(1))
                continue
            h = torch.addmm(lin.bias, h, lin.weight.t()) if lin.bias is not None else h @ lin.weight.t()
            if act is not None:
                if isinstance(act, nn.Tanh):
                    h = h.tanh_()
                elif isinstance(act, nn.Sigmoid):
                    h = h.sigmoid_()
                elif isinstance(act, nn.LeakyReLU):
                    h = torch.nn.functional.leaky_relu_(h, act.negative_slope)
                else:
                    h = h.relu_()
                hidden.append(h)
        return h, hidden

    def _log_prob_and_dparam(
        self, f: torch.Tensor, x: torch.Tensor, value: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """log p(x | f) per row (None unless `value`) and ∂/∂f (f is overwritten)."""
        x = x.reshape(len(x), -1)
        if self.observation == "bernoulli":  # x·l − softplus(l); ∂/∂l = x − σ(l)
            ll = (x * f).sum(1) - torch.nn.functional.softplus(f).sum(1) if value else None
            return ll, torch.sub(x, f.sigmoid_())
        std = self.std.to(f)
        mean = f.sigmoid_() if self.mean_output == "sigmoid" else f
        r = (x - mean) / std
        ll = None
        if value:
            const = (-torch.log(std) - 0.5 * math.log(2 * math.pi)).expand(x.shape[1]).sum()
            ll = -0.5 * (r * r).sum(1) + const
        d = r.div_(std)  # ∂/∂mean = (x − mean)/s²
        if self.mean_output == "sigmoid":  # ∂mean/∂l = mean(1 − mean)
            d.mul_(mean).mul_(1 - mean)
        return ll, d

    def __call__(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._log_prob_and_dparam(self._forward(z)[0], x)[0]

    def value_and_grad(
        self, z: torch.Tensor, x: torch.Tensor, value: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """log p(x | z) (R,) and its gradient in z (R, L). value=False skips the value (None): HMC's inner
        leapfrog steps need only the gradient, and the value's softplus was the costliest elementwise op."""
        with torch.no_grad():
            f, hidden = self._forward(z)
            ll, g = self._log_prob_and_dparam(f, x, value)
            # Layer i+1's weight takes the gradient back to h_i = act_i(·) of layer i, then act_i' to its input.
            for (above, _), (_, act), h in zip(
                reversed(self.layers[1:]), reversed(self.layers[:-1]), reversed(hidden), strict=True
            ):
                g = g @ above.weight
                if isinstance(act, nn.Tanh):  # tanh' = 1 − h²: g ← g − g·h², h² in place (h is no longer needed)
                    g.addcmul_(g, h.mul_(h), value=-1)
                elif isinstance(act, nn.Sigmoid):  # σ' = h(1 − h)
                    g.mul_(h).mul_(1 - h)
                elif isinstance(act, nn.LeakyReLU):
                    g = torch.where(h > 0, g, g * act.negative_slope)
                else:
                    g.mul_(h > 0)
            w1 = self.layers[0][0].weight
            if len(g) > 256:
                # The product to the narrow latent (fan-in 10 for Wu et al.) as (W₁ᵀ gᵀ)ᵀ: MKL computes it ~3.5×
                # faster than g W₁ at 1 600 rows (42 vs 146 µs, 64 → 10), and slightly slower at 16 rows.
                return ll, torch.mm(w1.t(), g.t()).t()
            return ll, g @ w1


def _loglik_and_grad(
    fn: LogLikelihood, z: torch.Tensor, x: torch.Tensor, value: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """log p(x | z) (R,) and its gradient in z (R, L), both detached: by hand for an `MLPLogLikelihood` (the
    value only if asked for), else by autograd (which always has the value)."""
    if isinstance(fn, MLPLogLikelihood):
        ll, grad = fn.value_and_grad(z, x, value)
        if ll is None:
            return None, grad
    else:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            ll = fn(z, x)
            if ll.shape == z.shape[:1]:
                (grad,) = torch.autograd.grad(ll.sum(), z)
    if ll.shape != z.shape[:1]:
        raise ValueError(
            f"AIS: the log-likelihood function must return one value per row, shape ({z.shape[0]},); "
            f"got {tuple(ll.shape)}"
        )
    return ll.detach(), grad.detach()


def _ais_batch(
    fn: LogLikelihood,
    x: torch.Tensor,
    latent_dim: int,
    cfg: AISConfig,
    betas: torch.Tensor,
    generator: torch.Generator | None,
    start: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AIS over β in the given order for N examples at once; returns (log-weights (K, N), step sizes (N,),
    summed per-example acceptance rates (a 0-d tensor; read once at the end, so no step waits for the device)).
    `start` (K·N, L): initial states (exact posterior draws for reverse AIS); None = prior."""
    n, k = x.shape[0], cfg.chains
    rows = x.repeat(k, *([1] * (x.dim() - 1)))  # (K·N, ...): chain-major, row c·N + i is chain c of example i
    z = _randn((k * n, latent_dim), rows, generator) if start is None else start.to(rows).clone()
    ll, g_ll = _loglik_and_grad(fn, z, rows)
    logw = torch.zeros(k * n, dtype=torch.float64, device=rows.device)
    eps = torch.full((n,), cfg.initial_step_size, dtype=rows.dtype, device=rows.device)
    avg_accept = torch.full((n,), cfg.target_acceptance, dtype=rows.dtype, device=rows.device)
    accepted = torch.zeros((), dtype=torch.float64, device=rows.device)
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
            z1 = torch.addcmul(z1, step, p)
            # Only the end of the trajectory needs log p(x|z) (acceptance, next weight); the steps between, ∇ only.
            ll1, g1 = _loglik_and_grad(fn, z1, rows, value=j == cfg.leapfrog_steps - 1)
            # p ← p − ε·∇U(z1) (half a step at the end), ∇U = z1 − β·∇log p(x|z1); in place on p (a new tensor)
            p.addcmul_(step, torch.add(z1, g1, alpha=-beta), value=-1.0 if j < cfg.leapfrog_steps - 1 else -0.5)
        u1 = 0.5 * (z1 * z1).sum(1) - beta * ll1
        log_ratio = (u0 + 0.5 * (p0 * p0).sum(1)) - (u1 + 0.5 * (p * p).sum(1))
        # A NaN/inf proposal (a diverged trajectory) is rejected, never accepted.
        ok = torch.isfinite(log_ratio) & (torch.log(_rand((k * n,), z, generator)) < log_ratio)
        z = torch.where(ok[:, None], z1, z)
        ll = torch.where(ok, ll1, ll)
        g_ll = torch.where(ok[:, None], g1, g_ll)
        rate = ok.to(rows.dtype).view(k, n).mean(0)
        accepted += rate.sum()
        avg_accept = cfg.acceptance_decay * avg_accept + (1 - cfg.acceptance_decay) * rate
        up = avg_accept > cfg.target_acceptance
        eps = torch.where(up, eps * cfg.step_size_increase, eps * cfg.step_size_decrease)
        eps = eps.clamp(cfg.min_step_size, cfg.max_step_size)
    return logw.view(k, n), eps, accepted


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
        acc.append(a)
    logw = torch.cat(weights, 1)
    transitions = n * (len(betas) - 2)  # per example: one HMC transition at each of β_1 … β_{T−1}
    lse = torch.logsumexp(logw, 0) - math.log(k)
    return AISResult(
        log_likelihood=-lse if reverse else lse,
        log_weights=logw,
        acceptance=float(sum(acc)) / transitions if transitions else float("nan"),
        step_size=torch.cat(steps),
        reverse=reverse,
    )
