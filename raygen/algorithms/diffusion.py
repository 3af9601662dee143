"""Diffusion probabilistic model, "NET" (Sohl-Dickstein, Weiss, Maheswaranathan & Ganguli 2015; DL book §20.13):
the Diffusion row of Infusion FIG 3.4 (Parzen) and the NET row of VW Table 3.2 (bits/dim).

A fixed forward diffusion of T small Gaussian steps turns the data into noise,

    q(y_t | y_{t−1}) = N(y_t; √(1 − β_t) y_{t−1}, β_t I),   t = 1..T,

and a learned reverse process p(y_T) = N(0, I), p(y_{t−1} | y_t) = N(μ_θ(y_t, t), diag σ²_θ(y_t, t)) undoes it.
The lower bound on log p(y_0) (Sohl-Dickstein eq. 14, written with the posteriors q(y_{t−1} | y_t, y_0), which
are Gaussian in closed form, so every KL below is analytic):

    L(y_0) = E_q[log p(y_0 | y_1)] − Σ_{t=2}^T E_q[KL(q(y_{t−1} | y_t, y_0) ‖ p(y_{t−1} | y_t))] − KL(q(y_T | y_0) ‖ N(0, I))

The expectations over y_t ~ q(y_t | y_0) = N(√ᾱ_t y_0, (1 − ᾱ_t) I) are one sample per term. Training
maximises an unbiased estimate: one uniformly drawn t per example, its term times T. The full evaluation sums
all T terms (`eval_timesteps` = None) and reports the bound in nats and, on dequantised images, bits/dim
(`raygen.metrics.bits_per_dim`). Data are modelled as y = (x − shift)·scale (images: [0, 1] → [−1, 1]); the
bound on x adds D·log(scale).

Choices where the paper differs or is silent (documented, each a config field):
* β schedule: the paper learns β_2..β_T for Gaussian diffusion (β_1 fixed); following the project's brief we
  keep a fixed schedule: linear from 1e-4 to 0.02 over T = 1 000 steps (ᾱ_T ≈ 4e-5, so y_T ≈ N(0, I)).
* reverse-process parametrisation: μ = y_t + √β_t·f_μ(y_t, t), σ² = β_t·exp(f_σ(y_t, t)) (f_σ clamped to
  ±`log_var_range`), by an MLP on [y_t, sinusoidal features of t/T]; the paper's is a multi-scale conv net
  whose outputs are mixed by temporal bump functions.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import torch
from pydantic import Field

from raygen.algorithms.base import Algorithm, Artifact
from raygen.algorithms.latent import mlp
from raygen.config import AlgoConfig, ConfigError, RunConfig
from raygen.data.base import Dataset
from raygen.metrics.likelihood import bits_per_dim_estimates, dequantize, gaussian_log_prob, summarise_repeats

log = logging.getLogger(__name__)


class NETConfig(AlgoConfig):
    steps: int = Field(1000, ge=1, description="T, diffusion steps (NET: ~1 000 'tiny steps' on MNIST)")
    beta_start: float = Field(1e-4, gt=0, lt=1, description="β_1 of the linear β schedule")
    beta_end: float = Field(0.02, gt=0, lt=1, description="β_T of the linear β schedule")
    hidden: tuple[int, ...] = Field((1024, 1024), description="reverse-process MLP widths")
    activation: Literal["tanh", "relu", "leaky_relu"] = "relu"
    time_features: int = Field(32, ge=2, description="sinusoidal features of t/T fed to the network (even)")
    log_var_range: float = Field(5.0, gt=0, description="|f_σ| bound: σ² within β_t·e^(±range)")
    scale: float | None = Field(None, gt=0, description="y = (x − shift)·scale; None: 2 for images, 1/std for points")
    shift: float | None = Field(None, description="None: 0.5 for images, the training mean for points")
    eval_timesteps: int | None = Field(
        None, ge=1, description="terms of the bound evaluated per example (None: all T, the exact sum's estimate; "
        "k < T: k uniformly drawn terms × T/k, unbiased and cheaper)",
    )
    eval_rows: int = Field(16_384, ge=1, description="rows per batched network pass in evaluation (memory only)")
    sample_output: Literal["mean", "sample"] = Field(
        "mean", description="sample(): the mean of p(y_0 | y_1) (pictures) or a draw from it"
    )


class NET(Algorithm):
    name = "net"
    Config = NETConfig
    cfg: NETConfig
    selection = ("lower_bound", "max")

    @classmethod
    def presets(cls, dataset_kind: str) -> dict[str, Any]:
        if dataset_kind == "points":
            return {"algo": {"hidden": [128, 128]}, "train": {"batch_size": 100, "lr": 1e-3},
                    "eval": {"dequantize": False}}
        return {"train": {"batch_size": 100, "lr": 1e-3}}

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        if dataset.kind not in ("image", "points"):
            raise ConfigError(f"net models real-valued images or points; dataset '{dataset.name}' is of kind '{dataset.kind}'")
        cfg = self.cfg
        if cfg.time_features % 2:
            raise ConfigError(f"algo.time_features must be even (sine and cosine pairs), got {cfg.time_features}")
        self.dim = dataset.dim
        self.net = mlp(self.dim + cfg.time_features, cfg.hidden, 2 * self.dim, cfg.activation)
        betas = torch.linspace(cfg.beta_start, cfg.beta_end, cfg.steps, dtype=torch.float64)
        self.register_buffer("betas", betas)  # betas[t−1] = β_t
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, 0))  # alpha_bar[t−1] = ᾱ_t
        image = dataset.kind == "image"
        self.register_buffer("shift", torch.tensor(cfg.shift if cfg.shift is not None else (0.5 if image else 0.0)))
        self.register_buffer("scale", torch.tensor(cfg.scale if cfg.scale is not None else (2.0 if image else 1.0)))
        self._opt: torch.optim.Optimizer | None = None

    def setup(self, train: torch.Tensor) -> None:
        if self.data_kind == "points":
            x = train.reshape(len(train), -1).double()
            if self.cfg.shift is None:
                self.shift.fill_(float(x.mean()))
            if self.cfg.scale is None:
                self.scale.fill_(1.0 / max(float(x.std()), 1e-6))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self._opt is None:
            self._opt = self.adam(self.net.parameters())
        return {"model": self._opt}

    # ------------------------------------------------------------------ processes
    def _coef(self, table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """table[t − 1] per row (t ≥ 1), shaped (B, 1) in like's dtype."""
        return table[(t - 1).clamp_min(0)].to(like.dtype)[:, None]

    def _features(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[y, sin/cos of t/T at time_features/2 log-spaced frequencies] (B, D + time_features)."""
        half = self.cfg.time_features // 2
        freqs = torch.exp(torch.arange(half, dtype=y.dtype, device=y.device) * (-math.log(1000.0) / max(half - 1, 1)))
        angle = (t.to(y.dtype) / self.cfg.steps)[:, None] * freqs[None] * 1000.0
        return torch.cat([y, angle.sin(), angle.cos()], 1)

    def reverse(self, y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(y_{t−1} | y_t): (mean, std), each (B, D); t (B,) in 1..T."""
        h = self.net(self._features(y, t))
        beta = self._coef(self.betas, t, y)
        mean = y + beta.sqrt() * h[:, : self.dim]
        log_var = beta.log() + self.cfg.log_var_range * torch.tanh(h[:, self.dim :] / self.cfg.log_var_range)
        return mean, (0.5 * log_var).exp()

    def posterior(self, y0: torch.Tensor, yt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(y_{t−1} | y_t, y_0) for t ≥ 2: (mean, std)."""
        beta = self._coef(self.betas, t, y0)
        ab_t, ab_prev = self._coef(self.alpha_bar, t, y0), self._coef(self.alpha_bar, t - 1, y0)
        var = beta * (1 - ab_prev) / (1 - ab_t)
        mean = (ab_prev.sqrt() * beta * y0 + (1 - beta).sqrt() * (1 - ab_prev) * yt) / (1 - ab_t)
        return mean, var.sqrt()

    def _randn(self, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if generator is None or generator.device == like.device:
            return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
        return torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)

    def terms(self, y0: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Term t of the bound for each row (B,): log p(y_0|y_1) at t = 1, −KL(q(y_{t−1}|y_t,y_0) ‖ p(y_{t−1}|y_t))
        for t ≥ 2, with y_t ~ q(y_t | y_0) (one draw per row). Per-row t (B,) in 1..T."""
        ab = self._coef(self.alpha_bar, t, y0)
        yt = ab.sqrt() * y0 + (1 - ab).sqrt() * self._randn(tuple(y0.shape), y0, generator)
        mean_p, std_p = self.reverse(yt, t)
        first = gaussian_log_prob(y0, mean_p, std_p)
        mean_q, std_q = self.posterior(y0, yt, t.clamp_min(2))
        kl = (torch.log(std_p / std_q) + (std_q**2 + (mean_q - mean_p) ** 2) / (2 * std_p**2) - 0.5).sum(1)
        return torch.where(t == 1, first, -kl)

    def prior_kl(self, y0: torch.Tensor) -> torch.Tensor:
        """KL(q(y_T | y_0) ‖ N(0, I)) per row (B,)."""
        ab = self.alpha_bar[-1].to(y0.dtype)
        mean, var = ab.sqrt() * y0, 1 - ab
        return 0.5 * (var + mean**2 - 1 - torch.log(var)).sum(1)

    def to_model_space(self, x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(len(x), -1) - self.shift.to(x.dtype)) * self.scale.to(x.dtype)

    def log_det(self) -> float:
        return self.dim * math.log(float(self.scale))

    def lower_bound(self, x: torch.Tensor, generator: torch.Generator | None = None,
                    timesteps: int | None = None) -> torch.Tensor:
        """L(x) per example (N,) in nats of the x-space density (all T terms, or `timesteps` drawn ones × T/k)."""
        y0 = self.to_model_space(x)
        n, steps = len(y0), self.cfg.steps
        if timesteps is None or timesteps >= steps:
            ts = torch.arange(1, steps + 1, device=y0.device).repeat(n)
            weight = 1.0
        else:
            ts = torch.randint(1, steps + 1, (n * timesteps,), generator=generator,
                               device=generator.device if generator is not None else y0.device).to(y0.device)
            weight = steps / timesteps
        k = len(ts) // n
        rows = y0.repeat_interleave(k, 0)
        out = torch.empty(len(rows), dtype=torch.float64, device=y0.device)
        for lo in range(0, len(rows), self.cfg.eval_rows):
            sl = slice(lo, lo + self.cfg.eval_rows)
            out[sl] = self.terms(rows[sl], ts[sl], generator).double()
        return weight * out.view(n, k).sum(1) - self.prior_kl(y0).double() + self.log_det()

    # ------------------------------------------------------------------ training and evaluation
    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        y0 = self.to_model_space(batch.float())
        t = torch.randint(1, self.cfg.steps + 1, (len(y0),), device=y0.device)
        bound = self.cfg.steps * self.terms(y0, t) - self.prior_kl(y0) + self.log_det()
        self.update(self.optimizers()["model"], -bound.mean())
        return {"lower_bound": float(bound.detach().mean())}

    def _dequantized(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not (self.run_config.eval.dequantize and self.data_kind == "image"):
            return x
        if generator is not None and generator.device != x.device:
            return dequantize(x.cpu(), generator).to(x.device)
        return dequantize(x, generator)

    def evaluate(self, data: torch.Tensor, split: str, *, full: bool, generator: torch.Generator) -> dict[str, float]:
        """quick: the bound from 10 drawn terms per example; full: `eval.repeats` × the bound with
        `eval_timesteps` terms (all T by default), on fresh dequantisation noise for images, + bits/dim."""
        x = data.reshape(len(data), -1).to(self.device).float()
        with torch.no_grad():
            if not full:
                return {"lower_bound": float(self.lower_bound(self._dequantized(x, generator), generator, 10).mean())}
            repeats = []
            for _ in range(self.run_config.eval.repeats):
                lb = float(self.lower_bound(self._dequantized(x, generator), generator, self.cfg.eval_timesteps).mean())
                row = {"lower_bound": lb}
                if self.data_kind == "image" and self.run_config.eval.dequantize:
                    row.update(bits_per_dim_estimates(row, self.dim))
                repeats.append(row)
        out = summarise_repeats(repeats)
        log.info("net %s: %s", split, ", ".join(f"{k}={v:.4g}" for k, v in out.items()))
        return out

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling y_T ~ N(0, I) → … → y_0, mapped back to data space."""
        out = []
        with torch.no_grad():
            for lo in range(0, n, self.cfg.eval_rows):
                m = min(self.cfg.eval_rows, n - lo)
                y = self._randn((m, self.dim), self.scale.float(), generator)
                for t in range(self.cfg.steps, 0, -1):
                    mean, std = self.reverse(y, torch.full((m,), t, device=y.device))
                    y = mean if (t == 1 and self.cfg.sample_output == "mean") else mean + std * self._randn(
                        (m, self.dim), y, generator)
                out.append(y / self.scale.float() + self.shift.float())
        return torch.cat(out).reshape(n, *self.shape)

    def artifacts(self, dataset: Dataset, *, generator: torch.Generator) -> list[Artifact]:
        from raygen import plots

        samples = self.sample(self.run_config.eval.sample_count, generator=generator)
        if dataset.kind == "points":
            png = plots.points_png(samples, dataset.splits["train"][:2000], title="NET samples")
        else:
            png = plots.image_grid_png(samples.clamp(0, 1), nrow=8, title="NET samples")
        return [Artifact("samples.png", "image", png)]


# ---------------------------------------------------------------------------------------------- DDPM


class DDPMConfig(NETConfig):
    objective: Literal["simple", "bound"] = Field(
        "simple", description="training loss: Ho et al.'s simple ε-regression ‖ε − ε_θ‖² (their best samples) or "
        "the lower bound itself"
    )
    variance: Literal["beta", "posterior"] = Field(
        "beta", description="fixed reverse variance σ²_t: β_t or the posterior's β̃_t (Ho et al. found both similar)"
    )


class DDPM(NET):
    """Denoising diffusion probabilistic model (Ho, Jain & Abbeel 2020) — beyond the papers: NET's modern
    descendant, with the same forward process, bound, evaluation and sampling, so it sits beside NET,
    Walkback and Infusion at equal steps and budget. The reverse mean is parametrised by a noise predictor,
    μ_θ(y_t, t) = (y_t − β_t/√(1 − ᾱ_t)·ε_θ(y_t, t))/√(1 − β_t), with a fixed variance; training regresses ε
    (`objective=simple`) or maximises the bound. The t = 1 term is the Gaussian density of the dequantised
    data (as NET here), not Ho et al.'s discretised decoder."""

    name = "ddpm"
    Config = DDPMConfig
    cfg: DDPMConfig

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        cfg = self.cfg
        self.net = mlp(self.dim + cfg.time_features, cfg.hidden, self.dim, cfg.activation)  # ε_θ only

    def epsilon(self, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(self._features(y, t))

    def reverse(self, y: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        beta = self._coef(self.betas, t, y)
        ab = self._coef(self.alpha_bar, t, y)
        mean = (y - beta / (1 - ab).sqrt() * self.epsilon(y, t)) / (1 - beta).sqrt()
        if self.cfg.variance == "beta":
            var = beta
        else:  # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t); at t = 1 it is 0, so β_1 is kept there
            ab_prev = torch.where(t[:, None] == 1, torch.ones_like(ab), self._coef(self.alpha_bar, t - 1, y))
            var = torch.where(t[:, None] == 1, beta, beta * (1 - ab_prev) / (1 - ab))
        return mean, var.sqrt().expand_as(mean)

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        if self.cfg.objective == "bound":
            return super().train_step(batch)
        y0 = self.to_model_space(batch.float())
        t = torch.randint(1, self.cfg.steps + 1, (len(y0),), device=y0.device)
        ab = self._coef(self.alpha_bar, t, y0)
        eps = torch.randn_like(y0)
        loss = ((eps - self.epsilon(ab.sqrt() * y0 + (1 - ab).sqrt() * eps, t)) ** 2).sum(1).mean()
        self.update(self.optimizers()["model"], loss)
        return {"loss": float(loss.detach())}
