"""Variational autoencoder (Kingma & Welling 2014), the VAE-10 / VAE-50 baselines of VW Table 3.1b and Infusion
TAB 3.1 (scored there by AIS, Wu et al. 2016).

Model: p(z) = N(0, I), p(x | z) Bernoulli or diagonal Gaussian (`raygen.algorithms.latent`); encoder
q(z | x) = N(μ(x), diag σ²(x)). Training maximises the ELBO (DL book eq. 20.77)

    L(x) = E_q[log p(x | z)] − KL(q(z | x) ‖ p(z))

with one reparametrised sample z = μ + σ·ε per example and the KL in closed form. Evaluation:
* quick: the ELBO and its two terms (reconstruction, KL), which tell whether the latents are used (Martins' advice);
* full: `eval.repeats` times, on fresh U(0, 1/256) dequantisation for Gaussian decoders on images: the ELBO (the
  mean of the k log-weights, with its two terms from one more sample) and the IWAE bound with k = `eval.likelihood_samples` (DL book eq. 20.79, Burda et al.; k = 5 000 in their tables):
  log (1/k) Σ_j p(x, z_j)/q(z_j | x), z_j ~ q; then AIS (`algo.ais`) on the first `algo.ais_examples` examples
  (once: it is the expensive one). bits/dim from the bounds on dequantised images.

Architecture (not given by the papers): the encoder mirrors Wu et al.'s decoder (1024-256-64 tanh).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import torch
from pydantic import Field

from raygen.algorithms.latent import DecoderConfig, DecoderModel, mlp
from raygen.config import ConfigError, RunConfig
from raygen.data.base import Dataset
from raygen.metrics.likelihood import (
    DEQUANTIZATION_WIDTH,
    bits_per_dim,
    bits_per_dim_estimates,
    gaussian_log_prob,
    summarise_repeats,
)

log = logging.getLogger(__name__)


class VAEConfig(DecoderConfig):
    observation: Literal["gaussian", "bernoulli"] = Field(
        "gaussian",
        description="decoder p(x|z): diagonal Gaussian (learned per-dimension std; real-valued data) or "
        "Bernoulli (binary data)",
    )
    encoder_hidden: tuple[int, ...] = Field((1024, 256, 64), description="encoder widths (the decoder mirrored)")
    init_std: float = Field(0.1, gt=0, description="initial per-dimension std of the Gaussian decoder")
    min_std: float = Field(1e-3, gt=0, description="floor on the Gaussian decoder's std (constant pixels)")
    eval_rows: int = Field(65_536, ge=1, description="rows (examples × k) per batched IWAE pass (memory only)")


class VAE(DecoderModel):
    name = "vae"
    Config = VAEConfig
    selection = ("lower_bound", "max")  # the validation ELBO, as VW/Infusion select on their bounds
    cfg: VAEConfig

    @classmethod
    def presets(cls, dataset_kind: str) -> dict[str, Any]:
        # Not in the papers: Adam 1e-3, batch 100, the usual VAE settings.
        if dataset_kind == "points":
            return {
                "algo": {"latent": 2, "decoder_hidden": [64, 64], "encoder_hidden": [64, 64],
                         "mean_output": "linear"},
                "train": {"batch_size": 100, "lr": 1e-3},
                "eval": {"dequantize": False},
            }
        return {"train": {"batch_size": 100, "lr": 1e-3}}

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        cfg = self.cfg
        self.encoder = mlp(self.dim, cfg.encoder_hidden, 2 * cfg.latent, cfg.activation)
        # std = min_std + softplus(raw), initialised at init_std
        raw = math.log(math.expm1(max(cfg.init_std - cfg.min_std, 1e-6)))
        self.raw_std = torch.nn.Parameter(torch.full((self.dim,), raw))
        self._opt: torch.optim.Optimizer | None = None
        self._binary = dataset.binary
        if cfg.observation == "bernoulli" and dataset.kind != "image":
            raise ConfigError("vae: a Bernoulli decoder needs [0, 1] image data; use algo.observation=gaussian")

    def observation(self) -> str:
        return self.cfg.observation

    def observation_std(self) -> torch.Tensor:
        return self.cfg.min_std + torch.nn.functional.softplus(self.raw_std)

    def setup(self, train: torch.Tensor) -> None:
        x = train.reshape(len(train), -1)
        self._binary = bool(((x == 0) | (x == 1)).all())
        if self.cfg.observation == "bernoulli" and not self._binary:
            log.warning("vae: Bernoulli decoder on non-binary data: the bounds are cross-entropies, not "
                        "log-likelihoods (binarize the data, data.binarize=...)")

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if self._opt is None:
            self._opt = self.adam(self.parameters())
        return {"model": self._opt}

    # ------------------------------------------------------------------ bounds
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, log_var = h[:, : self.latent], h[:, self.latent :]
        return mu, (0.5 * log_var).exp()

    def elbo_terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """One-sample ELBO per example of x (B, D): {'elbo', 'reconstruction', 'kl'}, each (B,)."""
        mu, std = self.encode(x)
        z = mu + std * self._randn(*mu.shape, generator=generator)
        rec = self.log_px_given_z(z, x)
        kl = 0.5 * (std**2 + mu**2 - 1 - 2 * std.log()).sum(1)  # KL(N(μ, σ²) ‖ N(0, 1)) in closed form
        return {"elbo": rec - kl, "reconstruction": rec, "kl": kl}

    def iwae_log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """ℓ_j = log p(x, z_j) − log q(z_j | x), z_j ~ q(z | x), for j = 1..k: (N, k) float64."""
        mu, std = self.encode(x)
        out = torch.empty(len(x), k, dtype=torch.float64, device=x.device)
        per = max(1, self.cfg.eval_rows // k)
        for lo in range(0, len(x), per):
            m, s, xb = mu[lo : lo + per, None], std[lo : lo + per, None], x[lo : lo + per]
            eps = self._randn(len(xb), k, self.latent, generator=generator)
            z = (m + s * eps).reshape(-1, self.latent)
            log_q = gaussian_log_prob(z, m.expand(-1, k, -1).reshape(-1, self.latent),
                                      s.expand(-1, k, -1).reshape(-1, self.latent))
            log_prior = gaussian_log_prob(z, 0.0, 1.0)
            log_px = self.log_px_given_z(z, xb.repeat_interleave(k, 0))
            out[lo : lo + per] = (log_px + log_prior - log_q).double().view(len(xb), k)
        return out

    # ------------------------------------------------------------------ training
    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        x = batch.reshape(len(batch), -1).float()
        terms = self.elbo_terms(x)
        self.update(self.optimizers()["model"], -terms["elbo"].mean())
        return {k: float(v.detach().mean()) for k, v in terms.items()}

    def evaluate(self, data: torch.Tensor, split: str, *, full: bool, generator: torch.Generator) -> dict[str, float]:
        x = data.reshape(len(data), -1).to(self.device).float()
        was = self.training
        self.eval()
        try:
            if not full:
                with torch.no_grad():
                    terms = self.elbo_terms(self.dequantized(x, generator), generator)
                # 'lower_bound' (the ELBO) is the name the loop selects models by, as for VW and Infusion
                return {
                    "lower_bound": float(terms["elbo"].double().mean()),
                    "reconstruction": float(terms["reconstruction"].double().mean()),
                    "kl": float(terms["kl"].double().mean()),
                }
            return self._full_evaluation(x, split, generator)
        finally:
            self.train(was)

    def _full_evaluation(self, x: torch.Tensor, split: str, generator: torch.Generator) -> dict[str, float]:
        ec = self.run_config.eval
        images = self.data_kind == "image" and self.observation() == "gaussian" and ec.dequantize
        # bits/dim: dequantised 8-bit images under the Gaussian decoder, or binary images under the Bernoulli one
        # (whose bounds are already log-probabilities: no bin width)
        binary = self.observation() == "bernoulli" and self._binary
        width = None if binary else DEQUANTIZATION_WIDTH
        repeats, first = [], None
        for _ in range(ec.repeats):
            xr = self.dequantized(x, generator)
            first = xr if first is None else first
            with torch.no_grad():
                terms = self.elbo_terms(xr, generator)
                ell = self.iwae_log_weights(xr, ec.likelihood_samples, generator)
            row = {
                # ELBO and IWAE from the same k samples (as Infusion footnote 4): mean ℓ ≤ logsumexp ℓ − log k
                "lower_bound": float(ell.mean(1).mean()),
                "reconstruction": float(terms["reconstruction"].double().mean()),
                "kl": float(terms["kl"].double().mean()),
                "importance": float((torch.logsumexp(ell, 1) - math.log(ell.shape[1])).mean()),
            }
            if images or binary:
                row.update(bits_per_dim_estimates(row, self.dim, width))
            repeats.append(row)
        out = summarise_repeats(repeats)
        ais = self.ais_metrics(first, generator)
        if ais:
            # AIS scores only the first ais_examples examples: the IWAE bound on the same ones, to compare like
            # with like (AIS should not be below it, up to noise, when it has enough distributions)
            n = min(self.cfg.ais_examples, len(first))
            with torch.no_grad():
                sub = self.iwae_log_weights(first[:n], ec.likelihood_samples, generator)
            ais["ais_examples_importance"] = float((torch.logsumexp(sub, 1) - math.log(sub.shape[1])).mean())
        if ais and (images or binary):
            ais["bits_per_dim_ais"] = bits_per_dim(ais["ais"], self.dim, width)
        out.update(ais)
        log.info("vae %s: %s", split, ", ".join(f"{k}={v:.3f}" for k, v in out.items()))
        return out
