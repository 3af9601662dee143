"""What the decoder-based baselines (VAE, GAN, GMMN) share: a N(0, I) latent prior, an MLP decoder, an
observation model p(x | z), sampling, and their AIS evaluation (Wu, Burda, Salakhutdinov & Grosse 2016, the
source of the VAE/GAN/GMMN rows of VW Table 3.1b and Infusion TAB 3.1).

Observation models:
* ``bernoulli``: p(x | z) = Π_i Bern(x_i; σ(f_i(z))) (Kingma & Welling; binary data).
* ``gaussian``: p(x | z) = N(x; μ(z), diag s²) with μ = σ(f(z)) for [0, 1] pixels (or linear). The VAE learns one
  s_i per dimension; GAN and GMMN, which define no density, get Wu et al.'s isotropic s chosen on the validation
  split (`select_observation_std`).

Decoder widths: Wu et al.'s MNIST decoders have three tanh hidden layers of 64, 256 and 1024 units; the latent
size (10 or 50) is the number in the table rows (VAE-10, GAN-50, ...).
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from raygen.algorithms.base import Algorithm, Artifact
from raygen.config import AlgoConfig, ConfigError, RunConfig
from raygen.data.base import Dataset
from raygen.metrics.ais import AISConfig, MLPLogLikelihood, ais_log_likelihood
from raygen.metrics.likelihood import bernoulli_log_prob, bits_per_dim, dequantize, gaussian_log_prob

log = logging.getLogger(__name__)

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2)}


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str) -> nn.Sequential:
    """Linear → activation per hidden layer, then a linear head (no activation)."""
    widths = (in_dim, *hidden)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), _ACTIVATIONS[activation]()]
    layers.append(nn.Linear(widths[-1], out_dim))
    return nn.Sequential(*layers)


class DecoderConfig(AlgoConfig):
    """Fields every decoder-based baseline has."""

    latent: int = Field(50, ge=1, description="latent size (the -10 / -50 of the VAE/GAN/GMMN table rows)")
    decoder_hidden: tuple[int, ...] = Field(
        (64, 256, 1024), description="decoder/generator hidden widths (Wu et al. MNIST: 64-256-1024 tanh)"
    )
    activation: Literal["tanh", "relu", "leaky_relu"] = Field("tanh", description="hidden activation (Wu et al.: tanh)")
    mean_output: Literal["sigmoid", "linear"] = Field(
        "sigmoid", description="output of the decoder mean: sigmoid for [0, 1] pixels, linear for points"
    )
    ais: AISConfig = Field(AISConfig(), description="AIS evaluation settings (Wu et al. 2016)")
    ais_examples: int = Field(
        0,
        ge=0,
        description="examples of each evaluated split scored by AIS in the full evaluation; 0 = no AIS (the "
        "default: at 1 000 distributions × 16 chains × 10 leapfrog steps, 100 MNIST examples take hours on a CPU, "
        "minutes on a GPU); the VAE/GAN/GMMN rows of VW Table 3.1b and Infusion TAB 3.1 need it",
    )
    sample_output: Literal["mean", "sample"] = Field(
        "mean", description="what sample() returns: the decoder mean (the usual pictures) or a draw of p(x|z)"
    )


class DecoderModel(Algorithm):
    """Base of VAE, GAN and GMMN: z ~ N(0, I) → decoder → observation model."""

    cfg: DecoderConfig

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        if dataset.kind not in ("image", "points"):
            raise ConfigError(
                f"{self.name} models real-valued images or points; dataset '{dataset.name}' is of kind '{dataset.kind}'"
            )
        self.dim = dataset.dim
        self.latent = self.cfg.latent
        self.decoder = mlp(self.latent, self.cfg.decoder_hidden, self.dim, self.cfg.activation)

    # ------------------------------------------------------------------ model
    def observation(self) -> str:
        return "gaussian"

    def observation_std(self) -> torch.Tensor:
        """s of the Gaussian observation model: a scalar or per-dimension tensor."""
        raise NotImplementedError

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Raw decoder output (logits for Bernoulli, pre-activation mean for Gaussian), (B, D)."""
        return self.decoder(z)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        h = self.generate(z)
        if self.observation() == "bernoulli" or self.cfg.mean_output == "sigmoid":
            return torch.sigmoid(h)
        return h

    def log_px_given_z(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per row, (B,). x (B, D)."""
        if self.observation() == "bernoulli":
            return bernoulli_log_prob(x, self.generate(z))
        return gaussian_log_prob(x, self.decode_mean(z), self.observation_std())

    def _randn(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None or generator.device == self.device:
            return torch.randn(shape, generator=generator, device=self.device)
        return torch.randn(shape, generator=generator, device=generator.device).to(self.device)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for lo in range(0, n, 8192):
                z = self._randn(min(8192, n - lo), self.latent, generator=generator)
                mean = self.decode_mean(z)
                if self.cfg.sample_output == "sample":
                    if self.observation() == "bernoulli":
                        u = self._randn(*mean.shape, generator=generator)  # Φ(u) ~ U(0, 1)
                        mean = (torch.special.ndtr(u) < mean).to(mean.dtype)
                    else:
                        mean = mean + self.observation_std() * self._randn(*mean.shape, generator=generator)
                out.append(mean)
        return torch.cat(out).reshape(n, *self.shape)

    # ------------------------------------------------------------------ evaluation
    def dequantized(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """U(0, 1/256) noise on image data under a Gaussian observation model when eval.dequantize (Wu et al.,
        Infusion §3.5): a density on discrete pixels is meaningless without it."""
        if not (self.run_config.eval.dequantize and self.data_kind == "image" and self.observation() == "gaussian"):
            return x
        if generator is not None and generator.device != x.device:
            return dequantize(x.cpu(), generator).to(x.device)
        return dequantize(x, generator)

    def ais(self, x: torch.Tensor, generator: torch.Generator | None, config: AISConfig | None = None):
        """Forward AIS of log p(x) for rows of x (N, D) (`raygen.metrics.ais_log_likelihood`)."""
        was = self.training
        self.eval()
        try:
            return ais_log_likelihood(
                self._ais_log_likelihood(), x, self.latent, config or self.cfg.ais, generator=generator
            )
        finally:
            self.train(was)

    def _ais_log_likelihood(self):
        """log p(x | z) for AIS: with the gradient by hand (`MLPLogLikelihood`, 1.5–2× faster batched AIS on CPU)
        when the decoder is the plain MLP, else through autograd (e.g. GMMN + AE's composed generator)."""
        if type(self).generate is DecoderModel.generate:
            try:
                if self.observation() == "bernoulli":
                    return MLPLogLikelihood(self.decoder)
                return MLPLogLikelihood(self.decoder, "gaussian", std=self.observation_std(),
                                        mean_output="sigmoid" if self.cfg.mean_output == "sigmoid" else "linear")
            except (TypeError, ValueError) as err:  # a layer the hand gradient does not know (a replaced decoder)
                log.info("%s: AIS through autograd (%s)", self.name, err)
        return lambda z, xx: self.log_px_given_z(z, xx)

    def ais_metrics(self, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, float]:
        """{'ais': mean AIS log p(x) (nats), 'ais_acceptance'} on the first `ais_examples` rows; {} when 0."""
        n = min(self.cfg.ais_examples, len(x))
        if n == 0:
            return {}
        res = self.ais(x[:n], generator)
        log.info("%s: AIS on %d examples: %.3f nats (acceptance %.2f)", self.name, n,
                 float(res.log_likelihood.mean()), res.acceptance)
        return {"ais": float(res.log_likelihood.double().mean()), "ais_acceptance": res.acceptance}

    # ------------------------------------------------------------------ pictures
    def artifacts(self, dataset: Dataset, *, generator: torch.Generator) -> list[Artifact]:
        from raygen import plots

        ec = self.run_config.eval
        samples = self.sample(ec.sample_count, generator=generator)
        if dataset.kind == "points":
            png = plots.points_png(samples, dataset.splits["train"][:2000], title=f"{self.name} samples")
        else:
            png = plots.image_grid_png(samples, nrow=8, title=f"{self.name} samples")
        return [Artifact("samples.png", "image", png)]


class IsotropicConfig(DecoderConfig):
    """A generator without a density (GAN, GMMN) scored as p(x | z) = N(x; g(z), s²I) (Wu et al.)."""

    observation_std: float | None = Field(
        None, gt=0, description="s of the isotropic Gaussian observation model; None: chosen on the validation "
        "split from observation_std_grid by AIS (Wu et al. choose it on validation data)",
    )
    observation_std_grid: tuple[float, ...] = Field(
        (0.01, 0.02, 0.05, 0.1, 0.2, 0.5), description="candidate s (data in [0, 1]); not given by Wu et al."
    )
    std_selection_examples: int = Field(20, ge=1, description="validation examples scored per candidate s")
    std_selection_steps: int = Field(100, ge=1, description="AIS intermediate distributions per candidate s")
    mmd_kernel_widths: tuple[float, ...] = Field(
        (2.0, 5.0, 10.0, 20.0, 40.0, 80.0),
        description="Gaussian kernel bandwidths σ of the MMD (Li, Swersky & Zemel 2015: 2, 5, 10, 20, 40, 80)",
    )
    selection_samples: int = Field(500, ge=2, description="generated samples for the validation MMD (model selection)")


class IsotropicDecoderModel(DecoderModel):
    """GAN and GMMN: Gaussian observation model with one std, fixed by config or chosen on validation data.
    The quick validation evaluation is the MMD between validation data and samples (lower is better), which
    selects the model the final evaluation scores."""

    cfg: IsotropicConfig
    selection = ("mmd", "min")

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        self.register_buffer("obs_std", torch.tensor(self.cfg.observation_std or 0.0))
        self._valid = dataset.splits.get("valid")  # for choosing s (never the test split)

    def observation_std(self) -> torch.Tensor:
        if float(self.obs_std) <= 0:
            raise RuntimeError(f"{self.name}: the observation std is not chosen yet (run a full evaluation)")
        return self.obs_std

    def set_observation_std(self, std: float) -> None:
        self.obs_std.fill_(float(std))

    def evaluate(self, data: torch.Tensor, split: str, *, full: bool, generator: torch.Generator) -> dict[str, float]:
        from raygen.algorithms.gmmn import mmd2

        x = data.reshape(len(data), -1).to(self.device).float()
        with torch.no_grad():
            samples = self.sample(self.cfg.selection_samples, generator=generator).reshape(-1, self.dim)
            out = {"mmd": float(mmd2(x, samples, self.cfg.mmd_kernel_widths).clamp_min(0).sqrt())}
        if not full:
            return out
        if self.cfg.ais_examples == 0:  # no density evaluation asked for: no std to choose
            log.info("%s %s: %s", self.name, split, ", ".join(f"{k}={v:.4g}" for k, v in out.items()))
            return out
        if float(self.obs_std) <= 0:
            if self._valid is None:
                raise ConfigError(f"{self.name}: no validation split to choose the observation std on; set "
                                  "algo.observation_std")
            valid = self._valid[: self.cfg.std_selection_examples].reshape(-1, self.dim).to(self.device).float()
            short = self.cfg.ais.model_copy(update={"steps": self.cfg.std_selection_steps})
            select_observation_std(self, self.dequantized(valid, generator), self.cfg.observation_std_grid, short,
                                   generator)
        out["observation_std"] = float(self.obs_std)
        xr = self.dequantized(x, generator)
        ais = self.ais_metrics(xr, generator)
        if ais and self.data_kind == "image" and self.run_config.eval.dequantize:
            ais["bits_per_dim_ais"] = bits_per_dim(ais["ais"], self.dim)
        out.update(ais)
        log.info("%s %s: %s", self.name, split, ", ".join(f"{k}={v:.4g}" for k, v in out.items()))
        return out


def select_observation_std(
    model: DecoderModel,
    valid: torch.Tensor,
    grid: tuple[float, ...],
    config: AISConfig,
    generator: torch.Generator | None,
) -> float:
    """Wu et al. choose the isotropic observation std of GANs and GMMNs on a validation set: the grid value
    with the highest mean AIS log p(x) on `valid` (N, D) with the (short) AIS `config`. Sets and returns it."""
    best, best_ll = None, -math.inf
    for std in grid:
        model.set_observation_std(std)
        ll = float(model.ais(valid, generator, config).log_likelihood.mean())
        log.info("%s: observation std %.4g: validation AIS %.3f nats", model.name, std, ll)
        if ll > best_ll:
            best, best_ll = std, ll
    model.set_observation_std(best)
    return best
