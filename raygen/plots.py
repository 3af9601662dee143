"""PNG pictures of samples, chains and point clouds (matplotlib, Agg backend, bytes out)."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def tile(images: np.ndarray, nrow: int, pad: int = 1) -> np.ndarray:
    """(N, C, H, W) → one (rows*(H+pad), nrow*(W+pad), C) mosaic with values clipped to [0, 1]."""
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    canvas = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = np.clip(images[i].transpose(1, 2, 0), 0, 1)
    return canvas


def image_grid_png(images: torch.Tensor | np.ndarray, nrow: int = 8, title: str | None = None) -> bytes:
    arr = _to_numpy(images)
    canvas = tile(arr, min(nrow, len(arr)))
    fig, ax = plt.subplots(figsize=(max(2, canvas.shape[1] / 12), max(2, canvas.shape[0] / 12)))
    ax.imshow(canvas.squeeze(-1) if canvas.shape[-1] == 1 else canvas, cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _png(fig)


def chains_png(chains: torch.Tensor | np.ndarray, every: int = 1, title: str | None = None) -> bytes:
    """chains (steps, N, C, H, W): one row per chain, time left to right (every `every`-th step)."""
    arr = _to_numpy(chains)[::every]
    steps, n = arr.shape[:2]
    rows = arr.transpose(1, 0, 2, 3, 4).reshape(n * steps, *arr.shape[2:])
    return image_grid_png(rows, nrow=steps, title=title)


def points_png(samples: torch.Tensor | np.ndarray, data: torch.Tensor | np.ndarray | None = None,
               title: str | None = None) -> bytes:
    s = _to_numpy(samples)
    fig, ax = plt.subplots(figsize=(4, 4))
    if data is not None:
        d = _to_numpy(data)
        ax.scatter(d[:, 0], d[:, 1], s=2, c="0.7", label="data")
    ax.scatter(s[:, 0], s[:, 1], s=2, c="C3", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7)
    if title:
        ax.set_title(title)
    return _png(fig)


def point_chains_png(chains: torch.Tensor | np.ndarray, data: torch.Tensor | np.ndarray | None = None,
                     every: int = 5, title: str | None = None) -> bytes:
    """Toy 2-D chains (steps, N, 2): one panel per `every`-th step, as in VW Figs 3.8/3.9."""
    arr = _to_numpy(chains)
    idx = list(range(0, len(arr), every))
    if idx[-1] != len(arr) - 1:
        idx.append(len(arr) - 1)
    fig, axes = plt.subplots(1, len(idx), figsize=(2.2 * len(idx), 2.4), squeeze=False)
    for ax, t in zip(axes[0], idx):
        if data is not None:
            d = _to_numpy(data)
            ax.scatter(d[:, 0], d[:, 1], s=1, c="0.8")
        ax.scatter(arr[t, :, 0], arr[t, :, 1], s=1, c="C3")
        ax.set_title(f"step {t}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _png(fig)
