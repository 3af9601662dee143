"""Properties of sampling chains: reversibility of a transition operator, nearest training neighbours."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from raygen.metrics._inputs import as_matrix, check_batch_size, check_same_dim, squared_distances

log = logging.getLogger(__name__)

# Cap on the float64 elements of one (samples block × train chunk) distance block: 2**22 ≈ 32 MiB.
_MAX_BLOCK = 2**22


def reversibility_ratio(
    log_forward: torch.Tensor, log_backward: torch.Tensor, burn_in: int = 50
) -> dict[str, float]:
    """How far a transition operator is from detailed balance, relative to its entropy rate.

    Variational Walkback §3.4.1 / §3.14. Run long chains at a constant temperature
    (T = 1) from the stationary distribution and record, for every step t,
        log_forward[r, t]  = log p_T(s_{t+1} | s_t)     (the step the chain took)
        log_backward[r, t] = log p_T(s_t | s_{t+1})     (the same step scored in reverse)
    as tensors of shape (runs, steps). The first `burn_in` steps are dropped (the paper: "after a burn-in
    period (50 samples)").

    Returns floats:
      reversibility_kl = mean over runs and steps of (log_forward − log_backward). Under stationarity this
        estimates D_KL(π(s) p_T(s'|s) ‖ π(s') p_T(s|s')) — the π terms cancel in expectation — which is 0 iff
        detailed balance holds.
      entropy_rate = −mean(log_forward): the per-step conditional entropy rate H of the chain, the paper's
        "(1/T) log p(s_0 → … → s_T)" with its sign flipped so that it reads as an entropy (nats/step).
      reversibility_ratio = reversibility_kl / |entropy_rate|: the fractional increase of code length when
        coding the reversed chain with the forward operator (the paper reports 3.6 %). For continuous states
        H is a differential entropy and can be negative, hence the absolute value; the ratio is NaN if H = 0.
    """
    lf = _as_steps("log_forward", log_forward)
    lb = _as_steps("log_backward", log_backward)
    if lf.shape != lb.shape:
        raise ValueError(
            f"log_forward and log_backward must have the same shape, got {tuple(lf.shape)} and {tuple(lb.shape)}"
        )
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
        raise ValueError(f"burn_in must be an integer >= 0, got {burn_in!r}")
    if burn_in >= lf.shape[1]:
        raise ValueError(f"burn_in={burn_in} drops all {lf.shape[1]} steps; record longer chains")
    lf, lb = lf[:, burn_in:], lb[:, burn_in:]
    kl = float((lf - lb).mean())
    entropy = float(-lf.mean())
    if entropy == 0.0:
        log.warning("reversibility_ratio: the entropy-rate estimate is exactly 0; the ratio is undefined")
        ratio = math.nan
    else:
        ratio = kl / abs(entropy)
    return {"reversibility_kl": kl, "entropy_rate": entropy, "reversibility_ratio": ratio}


def _as_steps(name: str, x: Any) -> torch.Tensor:
    t = torch.as_tensor(x).detach().to(torch.float64)
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (runs × steps), got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite log-probabilities")
    return t


def nearest_neighbours(samples: Any, train: Any, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and Euclidean distance to the nearest training point, for each sample (in x space).

    The copy check of Infusion Training FIG 3.5 (last column: each sample beside its nearest training
    example). samples: (N, D), train: (M, D), numpy arrays or tensors (flatten images first).
    Returns (indices int64 (N,), distances float64 (N,)) on the device of `samples`; ties go to the lowest index.
    batch_size: samples per block. The training set is scanned in chunks converted to float64 one at a time,
    so memory stays near 2**22 float64s per block even for 60 000 MNIST images.
    """
    s = as_matrix("samples", samples)
    tr = as_matrix("train", train, device=s.device, float64=False)
    check_same_dim("samples", s, "train", tr)
    batch_size = check_batch_size(batch_size)
    chunk = max(1, _MAX_BLOCK // batch_size)
    best_sq = torch.full((s.shape[0],), math.inf, dtype=torch.float64, device=s.device)
    idx = torch.zeros(s.shape[0], dtype=torch.int64, device=s.device)
    s_sq = (s * s).sum(1)
    for c in range(0, tr.shape[0], chunk):
        tc = tr[c : c + chunk].to(torch.float64)
        tc_sq = (tc * tc).sum(1)
        for start in range(0, s.shape[0], batch_size):
            end = start + batch_size
            sq_min, arg = squared_distances(s[start:end], s_sq[start:end], tc, tc_sq).min(dim=1)
            better = sq_min < best_sq[start:end]  # strict: on ties the earlier chunk (lower index) wins
            best_sq[start:end] = torch.where(better, sq_min, best_sq[start:end])
            idx[start:end] = torch.where(better, arg + c, idx[start:end])
    # Distances recomputed directly for the chosen pairs: exact, without the expansion's rounding.
    dist = (s - tr[idx].to(torch.float64)).norm(dim=1)
    return idx, dist
