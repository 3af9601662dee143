"""Figure helpers: metric curves from the long metrics table and image panels from artifacts.

Figures are `matplotlib.figure.Figure` objects built without pyplot, so no global state or GUI backend is
touched; `savefig` renders PNG with Agg and PDF with the pdf backend.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.common import MissingData

log = logging.getLogger(__name__)


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 4.2, height: float = 3.2) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def split_key(key: str) -> tuple[str, str]:
    split, _, metric = key.partition("/")
    if not metric:
        raise ValueError(f"metric key '{key}' must look like 'split/metric' (e.g. 'valid/lower_bound')")
    return split, metric


def select_curve(metrics: pd.DataFrame, key: str, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows (run_id, step, value) of metric `split/metric`, sorted by run and step, NaNs dropped."""
    split, metric = split_key(key)
    if metrics.empty:
        return pd.DataFrame({"run_id": [], "step": [], "value": []})
    mask = (metrics["split"] == split) & (metrics["metric"] == metric)
    if run_ids is not None:
        mask &= metrics["run_id"].isin(list(run_ids))
    out = metrics.loc[mask, ["run_id", "step", "value"]]
    out = out[np.isfinite(out["value"].to_numpy(dtype=float))]
    # A resumed run may log the same step twice; keep the latest report of each step.
    out = out.drop_duplicates(["run_id", "step"], keep="last")
    return out.sort_values(["run_id", "step"], kind="stable")


def mean_curve(metrics: pd.DataFrame, key: str, run_ids: Iterable[str]) -> pd.DataFrame:
    """Per-step mean, std (ddof=1) and count of `key` over `run_ids` (steps any run logged)."""
    return mean_of_rows(select_curve(metrics, key, run_ids))


def mean_of_rows(rows: pd.DataFrame, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """`mean_curve` of rows already selected by `select_curve` (optionally restricted to `run_ids`)."""
    if run_ids is not None:
        rows = rows[rows["run_id"].isin(list(run_ids))]
    if rows.empty:
        return pd.DataFrame({"step": [], "mean": [], "std": [], "n": []})
    grouped = rows.groupby("step")["value"]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()}).reset_index()


def plot_mean_curve(ax, curve: pd.DataFrame, label: str, **kwargs) -> None:
    if curve.empty:
        return
    (line,) = ax.plot(curve["step"], curve["mean"], label=label, **kwargs)
    band = curve["std"].fillna(0).to_numpy()
    if (band > 0).any():
        ax.fill_between(curve["step"], curve["mean"] - band, curve["mean"] + band, color=line.get_color(), alpha=0.2)


def latest_artifacts(artifacts: pd.DataFrame, run_ids: Iterable[str], names: Sequence[str]) -> pd.DataFrame:
    """The last-logged artifact of each (run, name) for the given runs and file names."""
    if artifacts.empty:
        return artifacts
    mask = artifacts["run_id"].isin(list(run_ids)) & artifacts["name"].isin(list(names))
    rows = artifacts[mask].sort_values(["run_id", "name", "step"], kind="stable")
    return rows.drop_duplicates(["run_id", "name"], keep="last")


def read_png(root: Path, relative: str) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(root / relative, format="png")


def image_panel(
    root: str | Path, rows: pd.DataFrame, *, title: str, labels: Sequence[str] | None = None, ncols: int = 3,
    needs: str = "",
) -> Figure:
    """A grid of artifact images (one per row of `rows`), titled by `labels`."""
    root = Path(root)
    images, titles = [], []
    for i, (_, row) in enumerate(rows.iterrows()):
        try:
            images.append(read_png(root, row["path"]))
        except (OSError, ValueError, SyntaxError) as err:
            log.warning("cannot read artifact %s: %s", row["path"], err)
            continue
        titles.append(labels[i] if labels is not None else f"{row['run_id']} · step {row['step']}")
    if not images:
        raise MissingData("no readable image artifacts", needs or "runs that saved image artifacts")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig = Figure(figsize=(4.0 * ncols, 4.0 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, text in zip(axes.flat, images, titles):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_title(text, fontsize=8)
    fig.suptitle(title)
    return fig
