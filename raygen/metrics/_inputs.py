"""Input checks shared by the metric functions (private: the public API is in the sibling modules)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def as_matrix(name: str, x: Any, device: torch.device | None = None, float64: bool = True) -> torch.Tensor:
    """`x` (numpy array or tensor, shape (N, D)) as a float64 tensor; clear errors for bad shapes or values.

    float64 because the metrics subtract large nearly equal numbers (‖x‖² + ‖s‖² − 2x·s, log-weights of
    hundreds of nats); float32 would lose several digits there. float64=False keeps a floating input's dtype
    (for large reference sets that the caller converts chunk by chunk).
    """
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.asarray(x, dtype=np.float64 if float64 or x.dtype.kind != "f" else x.dtype))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
        if not (t.is_floating_point() or t.dtype in (torch.bool, torch.uint8, torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real-valued array, got dtype {t.dtype}")
        if float64 or not t.is_floating_point():
            t = t.to(torch.float64)
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D (points × dimensions), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if device is not None:
        t = t.to(device)
    return t


def check_same_dim(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same number of dimensions, "
            f"got {a.shape[1]} and {b.shape[1]}"
        )


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def check_positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def squared_distances(
    x: torch.Tensor, x_sq: torch.Tensor, s: torch.Tensor, s_sq: torch.Tensor
) -> torch.Tensor:
    """‖x_i − s_j‖² for a batch, (B, D) × (C, D) → (B, C), by the expansion ‖x‖² + ‖s‖² − 2x·s.

    One matmul instead of a (B, C, D) difference tensor. In float64 the cancellation error is about
    1e-16·‖x‖², far below anything a metric resolves; the clamp removes the tiny negative values it can leave.
    """
    d = torch.addmm(x_sq[:, None] + s_sq[None, :], x, s.T, alpha=-2.0)
    return d.clamp_min_(0.0)
