"""Parzen-window (isotropic Gaussian kernel density) log-likelihood of data under a set of model samples.

Infusion Training §3.5.1 / FIG 3.4 reports it with 10 000 generated samples and σ = 0.17 "since most previous
published results on non-likelihood based models (such as GANs) used a Parzen-window-based estimator" (Breuleux,
Bengio & Vincent 2011), while warning it "can be misleading" (Theis et al.). The papers give neither the formula
nor how σ is chosen; raygen follows the convention of the GAN paper's public evaluation code
(Goodfellow et al. 2014, parzen_ll.py): σ chosen on a validation split from a grid (never on test), test points in
batches, report mean ± std/√M.

    log p̂(x) = logsumexp_i(−‖x − s_i‖² / (2σ²)) − log N − (D/2)·log(2πσ²)

Everything is computed in float64 on the device of `samples`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from raygen.metrics._inputs import (
    as_matrix,
    check_batch_size,
    check_positive,
    check_same_dim,
    squared_distances,
)

log = logging.getLogger(__name__)

# The grid of the convention above: 10 log-spaced values in [0.1, 1.0] (for data scaled to [0, 1]).
DEFAULT_SIGMAS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-1.0, 0.0, 10))

# Cap on the float64 elements of one (data batch × sample chunk) distance block: 2**22 ≈ 32 MiB. With the
# default batch of 100 points this is one chunk for up to 41 943 samples, so chunking over samples only
# kicks in for larger sample sets or larger batches.
_MAX_BLOCK = 2**22


def _log_likelihoods(
    samples: torch.Tensor, data: torch.Tensor, sigmas: Sequence[float], batch_size: int
) -> torch.Tensor:
    """Per-point log-likelihoods for several σ at once, shape (len(sigmas), M).

    The squared distances do not depend on σ, so each block of distances is computed once and reused for the
    whole grid (σ selection costs one pass, not one per σ).
    """
    n, d = samples.shape
    m = data.shape[0]
    sig = torch.tensor(sigmas, dtype=torch.float64, device=samples.device)
    neg_inv_two_var = (-0.5 / sig**2)[:, None, None]  # (S, 1, 1)
    const = -math.log(n) - 0.5 * d * torch.log(2 * math.pi * sig**2)  # (S,)
    chunk = max(1, _MAX_BLOCK // batch_size)
    s_sq = (samples * samples).sum(1)
    out = torch.empty(len(sigmas), m, dtype=torch.float64, device=samples.device)
    for start in range(0, m, batch_size):
        xb = data[start : start + batch_size]
        xb_sq = (xb * xb).sum(1)
        acc = torch.full((len(sigmas), xb.shape[0]), -math.inf, dtype=torch.float64, device=samples.device)
        for c in range(0, n, chunk):
            sq = squared_distances(xb, xb_sq, samples[c : c + chunk], s_sq[c : c + chunk])  # (B, C)
            # Running logsumexp over sample chunks: logaddexp of the per-chunk results is exact.
            acc = torch.logaddexp(acc, torch.logsumexp(sq[None] * neg_inv_two_var, dim=2))
        out[:, start : start + xb.shape[0]] = acc + const[:, None]
    return out


def _check_sigmas(sigmas: Any) -> list[float]:
    if isinstance(sigmas, (str, bytes)) or not isinstance(sigmas, (Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(f"sigmas must be a sequence of numbers, got {type(sigmas).__name__}")
    values = [
        check_positive("every sigma", s) for s in (sigmas.tolist() if hasattr(sigmas, "tolist") else sigmas)
    ]
    if not values:
        raise ValueError("sigmas is empty: give at least one candidate σ")
    return values


def parzen_log_likelihood(samples: Any, data: Any, sigma: float, batch_size: int = 100) -> torch.Tensor:
    """Log-density of each data point under the Gaussian Parzen window of the samples, in nats.

    samples: (N, D) numpy array or tensor of model samples. data: (M, D) points to score. sigma: kernel std.
    batch_size: data points per block (memory is about batch_size × min(N, 2**22 / batch_size) float64s).
    Returns a float64 tensor of shape (M,) on the device of `samples`.
    """
    s = as_matrix("samples", samples)
    x = as_matrix("data", data, device=s.device)
    check_same_dim("samples", s, "data", x)
    sigma = check_positive("sigma", sigma)
    return _log_likelihoods(s, x, [sigma], check_batch_size(batch_size))[0]


def select_parzen_sigma(
    samples: Any, valid: Any, sigmas: Sequence[float] = DEFAULT_SIGMAS, batch_size: int = 100
) -> tuple[float, dict[float, float]]:
    """The σ of the grid with the highest mean validation log-likelihood, and the mean LL of every σ.

    Choose σ on a validation split only: choosing it on test makes the reported number optimistic.
    Ties go to the first σ in the grid.
    """
    s = as_matrix("samples", samples)
    v = as_matrix("valid", valid, device=s.device)
    check_same_dim("samples", s, "valid", v)
    grid = _check_sigmas(sigmas)
    means = _log_likelihoods(s, v, grid, check_batch_size(batch_size)).mean(dim=1)
    scores = {sig: float(mu) for sig, mu in zip(grid, means.tolist())}
    best = grid[int(torch.argmax(means))]
    log.debug("Parzen σ selection on %d validation points: %s -> σ=%g", v.shape[0], scores, best)
    if best in (min(grid), max(grid)) and len(grid) > 1:
        log.warning("Parzen σ=%g is at the edge of the grid %s; the optimum may lie outside it", best, grid)
    return best, scores


def parzen_evaluate(
    samples: Any, valid: Any, test: Any, sigmas: Sequence[float] = DEFAULT_SIGMAS, batch_size: int = 100
) -> dict[str, float]:
    """σ chosen on `valid`, then the mean test log-likelihood and its standard error.

    Returns {"parzen_ll": mean over test points, "parzen_ll_se": std(ddof=1)/√M (0 for one point),
    "parzen_sigma": the chosen σ}.
    """
    sigma, _ = select_parzen_sigma(samples, valid, sigmas, batch_size)
    ll = parzen_log_likelihood(samples, test, sigma, batch_size)
    m = ll.shape[0]
    se = float(ll.std(unbiased=True) / math.sqrt(m)) if m > 1 else 0.0
    return {"parzen_ll": float(ll.mean()), "parzen_ll_se": se, "parzen_sigma": sigma}
