"""Generative moment matching networks (Li, Swersky & Zemel 2015; DL book §20.10.5), the GMMN-10/-50 (AIS, VW
Table 3.1b, Infusion TAB 3.1) and GMMN + AE (Parzen, Infusion FIG 3.4) baselines.

A generator g(z), z ~ N(0, I), is trained alone to minimise the maximum mean discrepancy between a generated
batch Y and a data batch X, with a mixture of Gaussian kernels k(a, b) = Σ_σ exp(−‖a − b‖² / (2σ²)):

    MMD²(X, Y) = 1/N² Σ_{i,i'} k(x_i, x_i') − 2/(NM) Σ_{i,j} k(x_i, y_j) + 1/M² Σ_{j,j'} k(y_j, y_j')

(the biased V-statistic, as Li et al.; `unbiased` drops the i = i' and j = j' terms). Li et al. minimise
√MMD² ("mmd", the default) rather than MMD² ("mmd2").

GMMN + AE (`algo.autoencoder=true`): the first `ae_steps` updates train an autoencoder on the data
(reconstruction cross-entropy); then the generator learns to match the distribution of the (fixed) encoder's
codes and a sample is the decoder's image of a generated code. The budget (train.steps) counts both phases.

Evaluation: the validation MMD (model selection), Parzen (the shared suite) and AIS with an isotropic Gaussian
observation model (`raygen.algorithms.latent`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from raygen.algorithms.latent import IsotropicConfig, IsotropicDecoderModel, mlp
from raygen.config import ConfigError, RunConfig
from raygen.data.base import Dataset

log = logging.getLogger(__name__)


def mmd2(x: torch.Tensor, y: torch.Tensor, widths: Sequence[float], *, unbiased: bool = False) -> torch.Tensor:
    """MMD² between the rows of x (N, D) and y (M, D) under Σ_σ exp(−‖a − b‖²/(2σ²)); differentiable, a 0-d tensor."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd2 needs two (N, D) batches of the same D, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not widths or min(widths) <= 0:
        raise ValueError(f"mmd2 needs positive kernel widths, got {tuple(widths)}")
    if unbiased and (len(x) < 2 or len(y) < 2):
        raise ValueError("the unbiased MMD² needs at least two points in each batch")
    z = torch.cat([x, y])
    sq = z.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min(0)
    k = sum(torch.exp(-d2 / (2 * s * s)) for s in widths)
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if unbiased:
        return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
                - 2 * kxy.mean())
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


class GMMNConfig(IsotropicConfig):
    loss: Literal["mmd", "mmd2"] = Field("mmd", description="minimise √MMD² (Li et al.) or MMD²")
    unbiased: bool = Field(False, description="unbiased MMD² (drop the i = i' terms); Li et al.: biased")
    autoencoder: bool = Field(False, description="GMMN + AE: match the codes of an autoencoder, then decode")
    ae_hidden: tuple[int, ...] = Field((1024,), description="autoencoder hidden widths (GMMN+AE: 1024, then code)")
    code: int = Field(32, ge=1, description="autoencoder code size (sigmoid units)")
    ae_steps: int = Field(2000, ge=1, description="updates spent training the autoencoder first (counted in train.steps)")
    code_kernel_widths: tuple[float, ...] = Field(
        (0.5, 1.0, 2.0, 4.0), description="kernel bandwidths in code space (our choice for 32 sigmoid units)"
    )


class GMMN(IsotropicDecoderModel):
    name = "gmmn"
    Config = GMMNConfig
    cfg: GMMNConfig

    @classmethod
    def presets(cls, dataset_kind: str) -> dict[str, Any]:
        # Li et al. use large minibatches (1 000) so the MMD sees the whole distribution; Adam 1e-3 is ours.
        if dataset_kind == "points":
            return {
                "algo": {"latent": 2, "decoder_hidden": [64, 64], "mean_output": "linear",
                         "mmd_kernel_widths": [0.05, 0.1, 0.2, 0.5, 1.0]},
                "train": {"batch_size": 500, "lr": 1e-3},
                "eval": {"dequantize": False},
            }
        return {"train": {"batch_size": 1000, "lr": 1e-3}}

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        cfg = self.cfg
        self._opts: dict[str, torch.optim.Optimizer] = {}
        if cfg.autoencoder:
            if dataset.kind != "image":
                raise ConfigError("gmmn: GMMN + AE models [0, 1] images (its decoder ends in a sigmoid)")
            if config.train.steps <= cfg.ae_steps:
                raise ConfigError(
                    f"gmmn: train.steps={config.train.steps} leaves no updates for the generator after "
                    f"algo.ae_steps={cfg.ae_steps} autoencoder updates; raise train.steps or lower algo.ae_steps"
                )
            self.encoder = mlp(self.dim, cfg.ae_hidden, cfg.code, cfg.activation)
            self.ae_decoder = mlp(cfg.code, tuple(reversed(cfg.ae_hidden)), self.dim, cfg.activation)
            self.decoder = mlp(cfg.latent, cfg.decoder_hidden, cfg.code, cfg.activation)  # z -> code logits

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        if self.cfg.autoencoder:
            return self.ae_decoder(torch.sigmoid(self.decoder(z)))
        return self.decoder(z)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if not self._opts:
            self._opts["generator"] = self.adam(self.decoder.parameters())
            if self.cfg.autoencoder:
                self._opts["autoencoder"] = self.adam([*self.encoder.parameters(), *self.ae_decoder.parameters()])
        return self._opts

    def _distance(self, a: torch.Tensor, b: torch.Tensor, widths: Sequence[float]) -> torch.Tensor:
        d2 = mmd2(a, b, widths, unbiased=self.cfg.unbiased)
        return d2.clamp_min(1e-12).sqrt() if self.cfg.loss == "mmd" else d2

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        x = batch.reshape(len(batch), -1).float()
        cfg = self.cfg
        if cfg.autoencoder and self.updates < cfg.ae_steps:
            logits = self.ae_decoder(torch.sigmoid(self.encoder(x)))
            loss = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1).mean()
            self.update(self.optimizers()["autoencoder"], loss)
            return {"reconstruction": float(loss.detach())}
        z = self._randn(len(x), self.latent)
        if cfg.autoencoder:
            with torch.no_grad():
                target = torch.sigmoid(self.encoder(x))
            loss = self._distance(target, torch.sigmoid(self.decoder(z)), cfg.code_kernel_widths)
        else:
            loss = self._distance(x, self.decode_mean(z), cfg.mmd_kernel_widths)
        self.update(self.optimizers()["generator"], loss)
        return {"loss": float(loss.detach())}
