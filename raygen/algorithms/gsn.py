"""Walkback denoising autoencoder as a generative stochastic network (Bengio, Yao, Alain & Vincent 2013,
"Generalized denoising auto-encoders as generative models"; Bengio et al. 2014, GSN; DL book §20.11–20.12):
the GSN row of Infusion FIG 3.4 (Parzen).

A corruption C(x̃ | x) and a learned reconstruction distribution P_θ(x | x̃) define a Markov chain
x → x̃ ~ C(·|x) → x ~ P_θ(·|x̃) → … whose stationary distribution estimates the data distribution. Training is
walkback (DL book §20.11.3): starting at a training example x, k corruption–reconstruction steps are run with
the model's own samples, and every reconstruction is scored against the original x:

    loss(x) = (1/k) Σ_{j=1..k} −log P_θ(x | x̃_j),   x̃_1 ~ C(·|x),  x_j ~ P_θ(·|x̃_j),  x̃_{j+1} ~ C(·|x_j)

(the samples x_j are not backpropagated through, as in the walkback DAE; the GSN of 2014 backpropagates
through a deterministic hidden chain, which this module does not implement). Sampling alternates corruption
and reconstruction from noise for `sampling_steps` steps and returns the last reconstruction's mean.

Settings: salt-and-pepper corruption with probability 0.4 and Bernoulli reconstructions for [0, 1] images (the
GSN paper's MNIST setting), Gaussian corruption and reconstruction for points; one tanh hidden layer of 1 500
units. k (walkback steps) has no value in the papers in hand: 5 here.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from pydantic import Field

from raygen.algorithms.base import Algorithm, Artifact
from raygen.algorithms.latent import mlp
from raygen.config import AlgoConfig, ConfigError, RunConfig
from raygen.data.base import Dataset
from raygen.metrics.likelihood import bernoulli_log_prob, gaussian_log_prob
from raygen.nets.conv import ConvConfig, ConvOperator

log = logging.getLogger(__name__)


class GSNConfig(AlgoConfig):
    corruption: Literal["salt_pepper", "gaussian"] = Field(
        "salt_pepper", description="C(x̃|x): salt-and-pepper (GSN MNIST) or additive Gaussian noise"
    )
    noise: float = Field(0.4, gt=0, description="salt-and-pepper probability (GSN MNIST: 0.4) or Gaussian σ")
    reconstruction: Literal["bernoulli", "gaussian"] = Field(
        "bernoulli", description="P(x|x̃): Bernoulli for [0, 1] pixels, Gaussian for real values"
    )
    reconstruction_std: float = Field(0.1, gt=0, description="σ of the Gaussian reconstruction distribution")
    hidden: tuple[int, ...] = Field((1500,), description="hidden widths (GSN MNIST: 1 500 tanh units)")
    architecture: Literal["mlp", "conv"] = Field(
        "mlp", description="mlp (the GSN paper's) or conv: VW's convolutional image operator (`algo.conv`)"
    )
    conv: ConvConfig = Field(ConvConfig(), description="the convolutional operator (architecture=conv, images only)")
    activation: Literal["tanh", "relu", "leaky_relu"] = "tanh"
    walkback_steps: int = Field(5, ge=1, description="k corruption–reconstruction steps per training example")
    sampling_steps: int = Field(100, ge=1, description="chain steps from noise when sampling")


class GSN(Algorithm):
    name = "gsn"
    Config = GSNConfig
    cfg: GSNConfig
    selection = ("loss", "min")

    @classmethod
    def presets(cls, dataset_kind: str) -> dict[str, Any]:
        if dataset_kind == "points":
            return {
                "algo": {"corruption": "gaussian", "noise": 0.3, "reconstruction": "gaussian", "hidden": [128, 128]},
                "train": {"batch_size": 100, "lr": 1e-3},
            }
        return {"train": {"batch_size": 100, "lr": 1e-3}}

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        if dataset.kind not in ("image", "points"):
            raise ConfigError(f"gsn models real-valued images or points; dataset '{dataset.name}' is of kind '{dataset.kind}'")
        cfg = self.cfg
        if dataset.kind == "points" and (cfg.corruption == "salt_pepper" or cfg.reconstruction == "bernoulli"):
            raise ConfigError("gsn: salt-and-pepper corruption and Bernoulli reconstructions need [0, 1] images; "
                              "use algo.corruption=gaussian algo.reconstruction=gaussian for points")
        if cfg.corruption == "salt_pepper" and cfg.noise > 1:
            raise ConfigError(f"gsn: the salt-and-pepper probability algo.noise must be ≤ 1, got {cfg.noise}")
        self.dim = dataset.dim
        if cfg.architecture == "conv":
            if dataset.image_shape is None:
                raise ConfigError("gsn: algo.architecture=conv needs image data")
            self.net = ConvOperator(dataset.image_shape, 1, 1, cfg.conv)
        else:
            self.net = mlp(self.dim, cfg.hidden, self.dim, cfg.activation)
        self.register_buffer("data_mean", torch.zeros(self.dim))
        self.register_buffer("data_std", torch.ones(self.dim))
        self._opt: torch.optim.Optimizer | None = None

    def setup(self, train: torch.Tensor) -> None:
        x = train.reshape(len(train), -1).float()
        self.data_mean.copy_(x.mean(0))
        self.data_std.copy_(x.std(0).clamp_min(1e-3))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self._opt is None:
            self._opt = self.adam(self.net.parameters())
        return {"model": self._opt}

    def _rand(self, shape, generator, normal=False) -> torch.Tensor:
        fn = torch.randn if normal else torch.rand
        if generator is None or generator.device == self.device:
            return fn(shape, generator=generator, device=self.device)
        return fn(shape, generator=generator, device=generator.device).to(self.device)

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.cfg.corruption == "gaussian":
            return x + self.cfg.noise * self._rand(x.shape, generator, normal=True)
        hit = self._rand(x.shape, generator) < self.cfg.noise
        salt = (self._rand(x.shape, generator) < 0.5).to(x.dtype)
        return torch.where(hit, salt, x)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.cfg.reconstruction == "bernoulli":
            return bernoulli_log_prob(x, out)
        return gaussian_log_prob(x, out, self.cfg.reconstruction_std)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out) if self.cfg.reconstruction == "bernoulli" else out

    def draw(self, out: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        m = self.mean(out)
        if self.cfg.reconstruction == "bernoulli":
            return (self._rand(m.shape, generator) < m).to(m.dtype)
        return m + self.cfg.reconstruction_std * self._rand(m.shape, generator, normal=True)

    def walkback_loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(1/k) Σ_j −log P(x | x̃_j) per example (B,)."""
        state, total = x, torch.zeros(len(x), device=x.device, dtype=x.dtype)
        for _ in range(self.cfg.walkback_steps):
            out = self.net(self.corrupt(state, generator))
            total = total - self.log_prob(x, out)
            state = self.draw(out.detach(), generator)
        return total / self.cfg.walkback_steps

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        loss = self.walkback_loss(batch.reshape(len(batch), -1).float()).mean()
        self.update(self.optimizers()["model"], loss)
        return {"loss": float(loss.detach())}

    def evaluate(self, data: torch.Tensor, split: str, *, full: bool, generator: torch.Generator) -> dict[str, float]:
        """The walkback loss (nats; lower is better; not a likelihood) — the model-selection criterion."""
        x = data.reshape(len(data), -1).to(self.device).float()
        with torch.no_grad():
            return {"loss": float(self.walkback_loss(x, generator).double().mean())}

    def chain(self, n: int, steps: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Reconstruction means along n chains started from noise (uniform pixels / the data's Gaussian)."""
        if self.cfg.corruption == "salt_pepper":
            state = self._rand((n, self.dim), generator)
        else:
            state = self.data_mean + self.data_std * self._rand((n, self.dim), generator, normal=True)
        means = []
        with torch.no_grad():
            for _ in range(steps):
                out = self.net(self.corrupt(state, generator))
                means.append(self.mean(out))
                state = self.draw(out, generator)
        return means

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        out = [self.chain(min(8192, n - lo), self.cfg.sampling_steps, generator)[-1] for lo in range(0, n, 8192)]
        return torch.cat(out).reshape(n, *self.shape)

    def artifacts(self, dataset: Dataset, *, generator: torch.Generator) -> list[Artifact]:
        from raygen import plots

        samples = self.sample(self.run_config.eval.sample_count, generator=generator)
        if dataset.kind == "points":
            png = plots.points_png(samples, dataset.splits["train"][:2000], title="GSN samples")
        else:
            png = plots.image_grid_png(samples, nrow=8, title="GSN (walkback DAE) samples")
        return [Artifact("samples.png", "image", png)]
