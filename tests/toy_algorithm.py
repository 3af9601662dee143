"""A minimal algorithm used to test the loop, the runners and the store independently of the papers'.

It fits a diagonal Gaussian by gradient ascent on the log-likelihood: exact answers are known in closed
form (the data mean and standard deviation), which is what the loop tests check against.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from raygen.algorithms.base import Algorithm, Artifact
from raygen.config import AlgoConfig


class MeanFitConfig(AlgoConfig):
    updates_per_step: int = Field(1, ge=1)
    explode_at: int | None = Field(None, description="make the loss NaN at this update (failure tests)")


class MeanFit(Algorithm):
    name = "meanfit"
    Config = MeanFitConfig

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.mean = nn.Parameter(torch.zeros(dataset.dim))
        self.log_std = nn.Parameter(torch.zeros(dataset.dim))
        self._opt = self.adam(self.parameters())

    def optimizers(self):
        return {"main": self._opt}

    def _nll(self, x):
        x = x.reshape(len(x), -1)
        dist = torch.distributions.Normal(self.mean, self.log_std.exp())
        return -dist.log_prob(x).sum(1).mean()

    def train_step(self, batch):
        for _ in range(self.cfg.updates_per_step):
            loss = self._nll(batch)
            if self.cfg.explode_at is not None and self.updates >= self.cfg.explode_at:
                loss = loss * math.nan
            self.update(self._opt, loss)
        return {"nll": float(loss.detach())}

    def evaluate(self, data, split, *, full, generator):
        return {"nll": float(self._nll(data))}

    def sample(self, n, *, generator=None):
        eps = torch.randn(n, len(self.mean), generator=generator)
        return (self.mean + self.log_std.exp() * eps).detach().reshape(n, *self.shape)

    def artifacts(self, dataset, *, generator):
        return [Artifact("params.txt", "text", f"{self.mean.tolist()}".encode())]
