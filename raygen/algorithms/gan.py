"""Generative adversarial networks (Goodfellow et al. 2014; DL book §20.10.4), the GAN-10/-50 (AIS, VW Table
3.1b, Infusion TAB 3.1) and GAN (Parzen, Infusion FIG 3.4) baselines.

A discriminator d(x) = σ(D(x)) and a generator g(z), z ~ N(0, I), take turns: `discriminator_steps` updates of
d on  −[log d(x) + log(1 − d(g(z)))], then one update of g. The generator loss is the non-saturating one
(DL book: "best in practice": maximise log d(g(z)), i.e. minimise −log d(g(z))), or optionally the minimax
log(1 − d(g(z))). The budget (train.steps) counts generator updates, as for Professor Forcing.

Evaluation: the validation MMD (model selection), Parzen (the shared suite) and AIS with an isotropic Gaussian
observation model whose std is chosen on validation data (Wu et al., `raygen.algorithms.latent`).
The discriminator's architecture and the optimiser are not in the papers: an MLP mirroring the generator with
leaky ReLUs, and Adam 2e-4 with β₁ = 0.5 (Radford et al.'s settings).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from raygen.algorithms.latent import IsotropicConfig, IsotropicDecoderModel, mlp
from raygen.config import RunConfig
from raygen.data.base import Dataset


class GANConfig(IsotropicConfig):
    generator_loss: Literal["non_saturating", "minimax"] = Field(
        "non_saturating", description="−log d(g(z)) (the heuristic that works, DL book §20.10.4) or log(1 − d(g(z)))"
    )
    discriminator_hidden: tuple[int, ...] = Field((1024, 256, 64), description="discriminator widths")
    discriminator_activation: Literal["tanh", "relu", "leaky_relu"] = "leaky_relu"
    discriminator_steps: int = Field(1, ge=1, description="discriminator updates per generator update (Goodfellow: k=1)")


class GAN(IsotropicDecoderModel):
    name = "gan"
    Config = GANConfig
    cfg: GANConfig

    @classmethod
    def presets(cls, dataset_kind: str) -> dict[str, Any]:
        if dataset_kind == "points":
            return {
                "algo": {"latent": 2, "decoder_hidden": [64, 64], "discriminator_hidden": [64, 64],
                         "mean_output": "linear", "mmd_kernel_widths": [0.05, 0.1, 0.2, 0.5, 1.0]},
                "train": {"batch_size": 100, "lr": 2e-4, "betas": [0.5, 0.999]},
                "eval": {"dequantize": False},
            }
        return {"train": {"batch_size": 100, "lr": 2e-4, "betas": [0.5, 0.999]}}

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        cfg = self.cfg
        self.discriminator = mlp(self.dim, cfg.discriminator_hidden, 1, cfg.discriminator_activation)
        self._opts: dict[str, torch.optim.Optimizer] = {}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if not self._opts:
            self._opts["generator"] = self.adam(self.decoder.parameters())
            self._opts["discriminator"] = self.adam(self.discriminator.parameters())
        return self._opts

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        x = batch.reshape(len(batch), -1).float()
        opts = self.optimizers()
        for _ in range(self.cfg.discriminator_steps):
            with torch.no_grad():
                fake = self.decode_mean(self._randn(len(x), self.latent))
            real_logit, fake_logit = self.discriminator(x), self.discriminator(fake)
            # −log d(x) − log(1 − d(g(z))) with d = σ(logit): softplus(−l) and softplus(l)
            d_loss = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
            self.update(opts["discriminator"], d_loss, counts=False)
        fake_logit = self.discriminator(self.decode_mean(self._randn(len(x), self.latent)))
        if self.cfg.generator_loss == "non_saturating":
            g_loss = F.softplus(-fake_logit).mean()  # −log d(g(z))
        else:
            g_loss = -F.softplus(fake_logit).mean()  # log(1 − d(g(z)))
        self.update(opts["generator"], g_loss, params=self.decoder.parameters())
        return {
            "d_loss": float(d_loss.detach()),
            "g_loss": float(g_loss.detach()),
            "d_real": float(torch.sigmoid(real_logit.detach()).mean()),
            "d_fake": float(torch.sigmoid(fake_logit.detach()).mean()),
        }
