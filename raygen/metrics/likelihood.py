"""Lower bound and importance-sampled log-likelihood, repeat statistics, dequantisation, log-densities.

The algorithms produce log-weights ℓ_j = log p(z̃_j, x) − log q(z̃_j | x) for k proposal trajectories per
example (Infusion Training eq 3.3.2–3.3.3, Variational Walkback eq 10); this module turns them into numbers.
It knows nothing about how the trajectories were drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raygen.metrics._inputs import check_positive


def importance_estimates(log_weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example lower bound and importance-sampling estimate of log p(x) from the same k samples.

    log_weights: (N, k) tensor, ℓ_j = log p(z̃_j, x) − log q(z̃_j | x) for example n and proposal sample j.
    Returns {"lower_bound": mean_j ℓ_j, "importance": logsumexp_j ℓ_j − log k}, each of shape (N,), float64.
    Infusion Training footnote 4: both come from the same samples, so importance ≥ lower_bound (Jensen).
    A −inf weight (a trajectory the model cannot produce) is allowed; NaN and +inf are errors.
    """
    if not isinstance(log_weights, torch.Tensor):
        log_weights = torch.as_tensor(np.asarray(log_weights))
    if log_weights.dim() != 2:
        raise ValueError(
            f"log_weights must be 2-D (examples × proposal samples), got shape {tuple(log_weights.shape)}"
        )
    if log_weights.shape[0] == 0 or log_weights.shape[1] == 0:
        raise ValueError(f"log_weights is empty (shape {tuple(log_weights.shape)})")
    lw = log_weights.detach().to(torch.float64)
    if bool(torch.isnan(lw).any()) or bool((lw == math.inf).any()):
        # "non-finite": the wording `raygen.engine.sweep.is_divergence` knows, so a run whose model diverged only
        # in its evaluation fails in one line (and a sweep does not retry it), not with a traceback
        raise ValueError("log_weights contains non-finite values, NaN or +inf (check the log-densities that "
                         "produced them)")
    k = lw.shape[1]
    return {
        "lower_bound": lw.mean(dim=1),
        "importance": torch.logsumexp(lw, dim=1) - math.log(k),
    }


def mean_std(values: Sequence[float] | torch.Tensor | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of repeated evaluations.

    Infusion Training TAB 3.1 reports "average and standard deviation over 10 repetitions of the evaluation".
    """
    if isinstance(values, torch.Tensor):
        arr = values.detach().cpu().to(torch.float64).numpy().ravel()
    else:
        try:
            arr = np.asarray([float(v) for v in values], dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError("values must be a sequence of numbers") from None
    if arr.size == 0:
        raise ValueError("mean_std needs at least one value")
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return mean, std


def summarise_repeats(repeats: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Collapse repeated evaluations [{name: value}, ...] into {name: mean, name_std: std} (see `mean_std`).

    Every repeat must report the same names; a missing name means the repeats are not comparable.
    """
    if not repeats:
        raise ValueError("summarise_repeats needs at least one repeat")
    names = list(repeats[0])
    for i, r in enumerate(repeats[1:], start=1):
        if set(r) != set(names):
            raise ValueError(
                f"repeat {i} reports {sorted(r)}, but repeat 0 reports {sorted(names)}; repeats must match"
            )
    out: dict[str, float] = {}
    for name in names:
        out[name], out[f"{name}_std"] = mean_std([float(r[name]) for r in repeats])
    return out


DEQUANTIZATION_WIDTH = 1 / 256  # one 8-bit level on the [0, 1] scale


def bits_per_dim(log_likelihood: float, dims: int, bin_width: float | None = DEQUANTIZATION_WIDTH) -> float:
    """Bits per dimension (VW Table 3.2, "≤") from a log-likelihood in nats of one D-dimensional example.

    The papers do not give the conversion; raygen fixes it here. For a density p on [0, 1]-scaled data
    evaluated at x + U(0, w) (dequantised), the discrete model P(x) = ∫ over the cell [x, x + w)^D of p is a
    probability whenever the data's levels are at least w apart (8-bit pixels for w = 1/256), and by Jensen
    log P(x) ≥ E_u[log p(x + u)] + D log w. So a lower bound (or importance estimate) ℓ of the dequantised
    log-density gives bits/dim ≤ −(ℓ + D ln w) / (D ln 2) = −ℓ / (D ln 2) + log2(1/w): 8 extra bits for
    w = 1/256. `bin_width=None` is for models of discrete values (Bernoulli pixels), where ℓ is already a
    log-probability.
    """
    if dims < 1:
        raise ValueError(f"bits_per_dim needs dims >= 1, got {dims}")
    offset = 0.0 if bin_width is None else dims * math.log(check_positive("bin_width", bin_width))
    return -(float(log_likelihood) + offset) / (dims * math.log(2))


def bits_per_dim_estimates(
    estimates: Mapping[str, float], dims: int, bin_width: float | None = DEQUANTIZATION_WIDTH
) -> dict[str, float]:
    """`bits_per_dim` from a `lower_bound` (a true bound: the tables' "≤") and `bits_per_dim_importance` from
    an `importance` estimate, for those of the two keys that `estimates` holds (see `bits_per_dim`)."""
    names = {"lower_bound": "bits_per_dim", "importance": "bits_per_dim_importance"}
    return {names[k]: bits_per_dim(v, dims, bin_width) for k, v in estimates.items() if k in names}


def dequantize(
    x: torch.Tensor, generator: torch.Generator | None, scale: float = DEQUANTIZATION_WIDTH
) -> torch.Tensor:
    """x + U(0, scale) noise, elementwise (same dtype and device as x).

    Infusion Training §3.5: "add an uniform noise of 1/256 to the (scaled) test point before evaluation to
    avoid overevaluating models that might have overfitted on the 8 bit quantization".
    """
    if not x.is_floating_point():
        raise TypeError(f"dequantize needs a floating-point tensor, got {x.dtype}")
    scale = check_positive("scale", scale)
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + scale * noise


def _sum_non_batch(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1) if t.dim() > 1 else t


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """log N(x; mean, std²) of a diagonal Gaussian, summed over all dimensions but the first (batch).

    x: (B, ...); mean and std broadcast against x; std > 0 (checked for CPU tensors). Returns shape (B,) (or x's shape if x is 1-D).
    Written out (not torch.distributions) so it is differentiable in mean and std, fast, and needs no
    argument validation per call.
    """
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    # Checked on CPU only: on an accelerator the check would force a device sync in every training step.
    if std_t.device.type == "cpu" and bool((std_t <= 0).any()):
        raise ValueError("gaussian_log_prob: std must be > 0 everywhere")
    z = (x - mean) / std_t
    lp = -0.5 * z * z - torch.log(std_t) - 0.5 * math.log(2 * math.pi)
    shape = torch.broadcast_shapes(x.shape, torch.as_tensor(mean).shape, std_t.shape)
    return _sum_non_batch(lp.expand(shape))


def bernoulli_log_prob(x: torch.Tensor, probs_or_logits: torch.Tensor, logits: bool = True) -> torch.Tensor:
    """log Bernoulli(x; p), summed over all dimensions but the first (batch).

    x in [0, 1] (binary data; fractional x gives the cross-entropy used for grey-level data). With
    logits=True the second argument is the logit: x·l − softplus(l), stable for any l. With logits=False it
    is p in [0, 1]: x·log p + (1−x)·log(1−p), with 0·log 0 = 0.
    """
    if logits:
        lp = x * probs_or_logits - F.softplus(probs_or_logits)
    else:
        p = probs_or_logits
        if p.device.type == "cpu" and bool(((p < 0) | (p > 1)).any()):  # no device sync on accelerators
            raise ValueError(
                "bernoulli_log_prob: probabilities must lie in [0, 1] (pass logits=True for logits)"
            )
        lp = torch.xlogy(x, p) + torch.xlogy(1 - x, 1 - p)
    shape = torch.broadcast_shapes(x.shape, probs_or_logits.shape)
    return _sum_non_batch(lp.expand(shape))
