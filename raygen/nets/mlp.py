"""Fully connected transition-operator network with per-step batch norm (shared by VW and Infusion).

Both papers find per-step normalisation essential: "having different batchnorm parameters for different
steps, actually improves the result considerably" (VW §3.15, necessary for the mixture-of-Gaussians toy);
"for each time step we have different parameters and independent batch statistics" (Infusion §3.5).
All other weights are shared across steps.
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from raygen.config import Section


class MLPConfig(Section):
    hidden: tuple[int, ...] = Field((1200, 1200), description="hidden widths (Infusion MNIST: 2x1200 ReLU)")
    activation: Literal["relu", "leaky_relu", "tanh"] = "relu"
    batch_norm: Literal["per_step", "shared", "none"] = Field(
        "per_step", description="per_step: separate affine parameters and running statistics for every step"
    )
    bn_momentum: float | None = Field(0.1, description="None = cumulative average (used by statistics passes)")


class StepBatchNorm(nn.Module):
    """BatchNorm1d with one set of affine parameters and running statistics per step index.

    Steps beyond the last trained step (sampling with more steps than training) reuse the last one.
    """

    def __init__(self, features: int, num_steps: int, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm1d(features, momentum=momentum) for _ in range(num_steps))

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        return self.norms[min(step, len(self.norms) - 1)](x)


_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.02), "tanh": nn.Tanh}


class StepMLP(nn.Module):
    """x (B, in_dim), step -> (B, out_dim). Linear → [per-step BN] → activation, per hidden layer."""

    def __init__(self, in_dim: int, out_dim: int, num_steps: int, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        widths = (in_dim, *config.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        bn_steps = num_steps if config.batch_norm == "per_step" else 1
        self.norms = nn.ModuleList(
            StepBatchNorm(w, bn_steps, config.bn_momentum) if config.batch_norm != "none" else nn.Identity()
            for w in config.hidden
        )
        self.activation = _ACTIVATIONS[config.activation]()
        self.head = nn.Linear(widths[-1], out_dim)

    def forward(self, x: torch.Tensor, step: int = 0) -> torch.Tensor:
        h = x
        for layer, norm in zip(self.layers, self.norms):
            h = layer(h)
            if isinstance(norm, StepBatchNorm):
                h = norm(h, step)
            h = self.activation(h)
        return self.head(h)

    def step_norms(self) -> list[StepBatchNorm]:
        return [n for n in self.norms if isinstance(n, StepBatchNorm)]

    def reset_step_statistics(self, momentum: float | None = None) -> None:
        """Prepare a statistics pass: clear running stats and switch to the given momentum (None = exact mean)."""
        for norm in self.step_norms():
            for bn in norm.norms:
                bn.reset_running_stats()
                bn.momentum = momentum
