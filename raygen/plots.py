"""PNG pictures of samples, chains and point clouds (matplotlib, Agg backend, bytes out)."""

from __future__ import annotations

import io
import math
from itertools import pairwise

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


DPI = 200  # pictures are read at paper size: 200 dpi at most ~7 inches wide
MAX_WIDTH_IN = 7.0
POINT_CHAIN_COLUMNS = 4  # toy chain panels per row: 1.75 in each, step titles still legible


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def tile(images: np.ndarray, nrow: int, pad: int = 1, group: int = 1, group_pad: int | None = None,
         row_pad: int | None = None) -> np.ndarray:
    """(N, C, H, W) → one mosaic with values clipped to [0, 1], `nrow` images per row, `pad` white pixels
    between images, `group_pad` between groups of `group` columns (pairs: sample | neighbour) and `row_pad`
    between rows."""
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    group_pad = pad if group_pad is None else group_pad
    row_pad = pad if row_pad is None else row_pad
    xs = [pad]
    for col in range(1, nrow):
        xs.append(xs[-1] + w + (group_pad if group > 1 and col % group == 0 else pad))
    ys = [pad + r * (h + row_pad) for r in range(rows)]
    canvas = np.ones((ys[-1] + h + pad, xs[-1] + w + pad, c), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        canvas[ys[r] : ys[r] + h, xs[col] : xs[col] + w] = np.clip(images[i].transpose(1, 2, 0), 0, 1)
    return canvas


def _column_centres(nrow: int, w: int, pad: int, group: int, group_pad: int) -> list[float]:
    xs = [pad]
    for col in range(1, nrow):
        xs.append(xs[-1] + w + (group_pad if group > 1 and col % group == 0 else pad))
    return [x + (w - 1) / 2 for x in xs]


LABEL_IN_PER_CHAR = 7 * 0.62 / 72  # width of one 7 pt label character (DejaVu Sans, generous), in inches
LABEL_GAP_IN = 0.06  # space left between two neighbouring column labels
IMAGE_SHARE = 0.98  # of the figure width the picture spans (fixed margins, so labels can be placed by arithmetic)


def _fits(col_labels: list[str], centres: list[float], inch_per_px: float) -> bool:
    shown = [(c, lbl) for c, lbl in zip(centres, col_labels) if lbl]
    return all((cb - ca) * inch_per_px >= (len(a) + len(b)) / 2 * LABEL_IN_PER_CHAR + LABEL_GAP_IN
               for (ca, a), (cb, b) in pairwise(shown))


def _label_width(col_labels: list[str], centres: list[float], width: int, fig_w: float
                 ) -> tuple[float, list[str]]:
    """The figure width at which neighbouring column labels cannot overlap (widened up to MAX_WIDTH_IN), and
    the labels to draw: all of them where they fit, else every k-th (k as small as fits) — never overlapping."""
    for k in range(1, len(col_labels) + 1):
        labels = [lbl if i % k == 0 else "" for i, lbl in enumerate(col_labels)]
        for w in (fig_w, MAX_WIDTH_IN):
            if _fits(labels, centres, IMAGE_SHARE * w / width):
                needed = fig_w
                while not _fits(labels, centres, IMAGE_SHARE * needed / width):
                    needed = min(MAX_WIDTH_IN, needed * 1.1)
                return needed, labels
    return fig_w, [""] * len(col_labels)


def _show(canvas: np.ndarray, *, title: str | None, col_labels: list[str] | None = None,
          centres: list[float] | None = None, xlabel: str | None = None) -> bytes:
    height, width = canvas.shape[:2]
    fig_w = min(MAX_WIDTH_IN, max(2.0, width / 40))
    if col_labels and centres:
        fig_w, col_labels = _label_width(col_labels, centres, width, fig_w)
    top_in = 0.05 + (0.3 if title else 0) + (0.2 if col_labels else 0)
    bottom_in = 0.25 if xlabel else 0.05
    fig_h = IMAGE_SHARE * fig_w * height / width + top_in + bottom_in
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    # The axes box has the picture's own aspect, so the picture spans IMAGE_SHARE of the width exactly.
    margin = (1 - IMAGE_SHARE) / 2
    fig.subplots_adjust(left=margin, right=1 - margin, top=1 - top_in / fig_h, bottom=bottom_in / fig_h)
    ax.imshow(canvas.squeeze(-1) if canvas.shape[-1] == 1 else canvas, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_yticks([])
    if col_labels and centres:
        ax.set_xticks(centres, col_labels, fontsize=7)
        ax.tick_params(axis="x", length=0, pad=2)
        ax.xaxis.set_ticks_position("top")
    else:
        ax.set_xticks([])
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=7)
    if title:
        ax.set_title(title, fontsize=8, pad=14 if col_labels else 4)
    return _png(fig)


def _short(label: str, limit: int = 12) -> str:
    """The leading words of a column label that fit above one image ("nearest training example" -> "nearest")."""
    words, out = label.split(), ""
    for word in words:
        if out and len(out) + 1 + len(word) > limit:
            break
        out = f"{out} {word}".strip()
    return out or label[:limit]


def image_grid_png(images: torch.Tensor | np.ndarray, nrow: int = 8, title: str | None = None,
                   group: int = 1) -> bytes:
    """A grid of images, `nrow` per row. `group` > 1 leaves a wider gap after every `group` columns (pairs
    such as sample | nearest training example); a title of the form "a | b | c" with as many parts as
    `group` (or as `nrow`) also labels the columns with those parts."""
    arr = _to_numpy(images)
    nrow = min(nrow, len(arr))
    w = arr.shape[-1]
    pad, gpad = 1, max(2, w // 4)
    canvas = tile(arr, nrow, pad=pad, group=group, group_pad=gpad, row_pad=pad if group == 1 else gpad // 2)
    labels = None
    parts = [t.strip() for t in title.split(" | ")] if title else []
    if len(parts) > 1 and len(parts) in (group, nrow):
        labels = [parts[i % len(parts)] for i in range(nrow)] if len(parts) == group else parts
        labels = [_short(lbl) for lbl in labels]
    centres = _column_centres(nrow, w, pad, group, gpad)
    return _show(canvas, title=title, col_labels=labels, centres=centres)


def chains_png(chains: torch.Tensor | np.ndarray, every: int = 1, title: str | None = None) -> bytes:
    """chains (steps, N, C, H, W): one row per chain, time left to right (every `every`-th step, and always the
    last), with the step of each column above it and a gap between chains."""
    full = _to_numpy(chains)
    idx = list(range(0, len(full), every))
    if idx[-1] != len(full) - 1:
        idx.append(len(full) - 1)
    arr = full[idx]
    steps, n = arr.shape[:2]
    h, w = arr.shape[3:]
    rows = arr.transpose(1, 0, 2, 3, 4).reshape(n * steps, *arr.shape[2:])
    pad, row_pad = 1, max(2, h // 5)
    canvas = tile(rows, steps, pad=pad, row_pad=row_pad)
    # Label at most ~16 columns so the numbers never overlap.
    stride = max(1, math.ceil(steps / 16))
    labels = [str(t) if i % stride == 0 or i == steps - 1 else "" for i, t in enumerate(idx)]
    centres = _column_centres(steps, w, pad, 1, pad)
    return _show(canvas, title=title, col_labels=labels, centres=centres, xlabel="rows: chains; columns: step")


def points_png(samples: torch.Tensor | np.ndarray, data: torch.Tensor | np.ndarray | None = None,
               title: str | None = None) -> bytes:
    s = _to_numpy(samples)
    fig, ax = plt.subplots(figsize=(4, 4))
    if data is not None:
        d = _to_numpy(data)
        ax.scatter(d[:, 0], d[:, 1], s=2, c="0.7", label="data")
    ax.scatter(s[:, 0], s[:, 1], s=2, c="C3", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    if title:
        ax.set_title(title)
    return _png(fig)


def point_chains_png(chains: torch.Tensor | np.ndarray, data: torch.Tensor | np.ndarray | None = None,
                     every: int = 5, title: str | None = None) -> bytes:
    """Toy 2-D chains (steps, N, 2): one panel per `every`-th step (and the last), as in VW Figs 3.8/3.9,
    at most POINT_CHAIN_COLUMNS panels per row so the picture stays within the paper width."""
    arr = _to_numpy(chains)
    idx = list(range(0, len(arr), every))
    if idx[-1] != len(arr) - 1:
        idx.append(len(arr) - 1)
    ncols = min(len(idx), POINT_CHAIN_COLUMNS)
    nrows = math.ceil(len(idx) / ncols)
    side = MAX_WIDTH_IN / POINT_CHAIN_COLUMNS
    # One scale for every panel, so the chain's progress toward the data is what changes between them.
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols, side * nrows + (0.3 if title else 0)),
                             squeeze=False, sharex=True, sharey=True)
    for ax in axes.flat[len(idx):]:
        ax.axis("off")  # the unused places of the last row: no empty frames
    for ax, t in zip(axes.flat, idx):
        if data is not None:
            d = _to_numpy(data)
            ax.scatter(d[:, 0], d[:, 1], s=1, c="0.8")
        ax.scatter(arr[t, :, 0], arr[t, :, 1], s=1, c="C3")
        ax.set_title(f"step {t}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return _png(fig)
