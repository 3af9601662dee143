"""Figure helpers: metric curves from the long metrics table and image panels from artifacts.

Figures are `matplotlib.figure.Figure` objects built without pyplot, so no global state or GUI backend is
touched; `savefig` renders PNG with Agg and PDF with the pdf backend.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.common import MissingData, best_model, require, runs_of, smoke_mask

log = logging.getLogger(__name__)

# Paper-size figures (single column ≈ 3.3 in, full width ≈ 7 in): fonts that stay legible when printed at that
# size, TrueType fonts in the PDF (editable, no Type 3 bitmaps), PNG at 200 dpi.
PAPER_RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.title_fontsize": 7, "figure.titlesize": 9, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42, "ps.fonttype": 42,
    "savefig.dpi": 200, "figure.dpi": 100, "lines.linewidth": 1.2, "lines.markersize": 4,
}
PNG_DPI = 200


# Axis labels of a metric key in words with its unit ("valid/lower_bound" -> "validation lower bound (nats)").
SPLIT_WORDS = {"valid": "validation", "valid_eval": "validation-set", "train_eval": "training-set",
               "train": "training", "test": "test", "selection": "selected validation"}
METRIC_WORDS = {  # metric -> (words, unit); the unit is "" where the quantity has none
    "lower_bound": ("lower bound", "nats"), "importance": ("IS estimate", "nats"),
    "parzen_ll": ("Parzen log-likelihood", "nats"), "nll": ("NLL", "nats"), "loss": ("loss", ""),
    "bpc": ("BPC", "bits per character"), "bits_per_dim": ("bits per dimension", "bits/dim"),
    "bits_per_dim_importance": ("IS bits per dimension", "bits/dim"), "inception_score": ("Inception score", ""),
    "accuracy": ("accuracy", "fraction"), "reversibility_percent": ("irreversibility", "%"),
}


def metric_label(key: str) -> str:
    """`split/metric` in words with its unit in parentheses where one is known (axes of our own curves)."""
    split, _, metric = key.partition("/")
    if not metric:
        split, metric = "", split
    words, unit = METRIC_WORDS.get(metric, (metric.replace("_", " "), ""))
    text = f"{SPLIT_WORDS.get(split, split.replace('_', ' '))} {words}".strip()
    return f"{text} ({unit})" if unit else text


def fit_suptitle(fig: Figure) -> None:
    """Wrap the figure's title into lines that fit its width (a one-panel figure is 2.6 in wide; a title
    naming other data is longer). Character widths are estimated generously for the title's font size."""
    title = fig._suptitle
    if title is None or not title.get_text():
        return
    inches_per_char = title.get_fontsize() * 0.6 / 72
    chars = max(20, int(0.95 * fig.get_figwidth() / inches_per_char))
    before = title.get_text().split("\n")
    lines = [w for line in before for w in textwrap.wrap(line, chars) or [""]]
    title.set_text("\n".join(lines))
    # Each added line gets its own height, so the panels keep theirs.
    fig.set_figheight(fig.get_figheight() + (len(lines) - len(before)) * title.get_fontsize() * 1.25 / 72)


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 3.3, height: float = 2.6) -> tuple[Figure, np.ndarray]:
    """A grid of `width` × `height` inch panels (paper sizes), laid out so titles and labels fit."""
    fig = Figure(figsize=(min(width * ncols, 7.2), height * nrows), layout="constrained")
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
    if len(curve) == 1:  # a single evaluation: a line of one point would not show
        kwargs.setdefault("marker", "o")
    (line,) = ax.plot(curve["step"], curve["mean"], label=label, **kwargs)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # steps are whole updates
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


MAX_HEIGHT_IN = 9.0  # a page's text height: a picture figure never runs taller
TITLE_IN = 0.35  # band for a picture figure's title
LABEL_IN = 0.35  # band for each picture's label (two lines of 7 pt)


def image_panel(
    root: str | Path, rows: pd.DataFrame, *, title: str, labels: Sequence[str] | None = None, ncols_max: int = 3,
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
    # The grid that shows the pictures largest within the paper width (7.2 in) and a page's height
    # (MAX_HEIGHT_IN); each row has a band for its labels, the figure one for its title.
    # Every panel spans the widest picture's pixels and the tallest one's; each picture is drawn in it at one
    # common pixel scale (a narrower one is not stretched to the panel: its labels keep the size of the others').
    wide, tall = max(img.shape[1] for img in images), max(img.shape[0] for img in images)
    aspect = tall / wide
    # Never larger than the pictures were drawn (raygen draws them at PNG_DPI): their own text keeps its size.
    native = max(1.5, wide / PNG_DPI)
    widths = {}
    for cols in range(1, min(ncols_max, len(images)) + 1):
        rows_ = -(-len(images) // cols)
        w = min(7.2 / cols, 7.2 if cols == 1 else 3.6, native)
        widths[cols] = min(w, (MAX_HEIGHT_IN - TITLE_IN - rows_ * LABEL_IN - 0.05) / (rows_ * aspect))
    # More columns when they cost little picture size (a page-tall single column wastes the page).
    ncols = max(c for c, w in widths.items() if w >= 0.85 * max(widths.values()))
    panel_w = widths[ncols]
    nrows = -(-len(images) // ncols)
    # The title and each label wrapped to the width they have (a label's run id goes to a second line).
    title_lines = textwrap.wrap(title, max(20, int(0.95 * panel_w * ncols / (9 * 0.6 / 72))))
    top_in = TITLE_IN + 0.16 * (len(title_lines) - 1) + LABEL_IN  # the title, then the first row's labels
    fixed = top_in + (nrows - 1) * LABEL_IN + 0.05
    # Each grid row is as tall as its tallest picture (a short one beside tall ones leaves no empty band).
    row_tall = [max(img.shape[0] for img in images[r * ncols:(r + 1) * ncols]) for r in range(nrows)]
    panel_w = min(panel_w, (MAX_HEIGHT_IN - fixed) / (sum(row_tall) / wide))
    titles = [t.replace(" · ", "\n", 1) if len(t) * 7 * 0.6 / 72 > 0.98 * panel_w else t for t in titles]
    panel_h = panel_w * sum(row_tall) / wide / nrows  # the mean row height (matplotlib's unit for hspace)
    height = nrows * panel_h + fixed
    # Fixed margins instead of constrained layout: a grid of images needs no layout solver (2x faster to save).
    fig = Figure(figsize=(panel_w * ncols, height))
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"height_ratios": row_tall})
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.05 / height, top=1 - top_in / height, wspace=0.04,
                        hspace=LABEL_IN / panel_h)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, img, text) in enumerate(zip(axes.flat, images, titles)):
        left, (h, w) = (wide - img.shape[1]) / 2, img.shape[:2]  # centred, top-aligned under its label
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest",
                  extent=(left, left + w, h, 0))
        ax.set_xlim(0, wide)
        ax.set_ylim(row_tall[i // ncols], 0)
        ax.set_title(text, fontsize=7)
    # At the very top, in its own band above the first row's labels (never over them).
    fig.suptitle("\n".join(title_lines), fontsize=9, y=1 - 0.06 / height, va="top")
    return fig


def best_run_panels(
    runs: pd.DataFrame, artifacts: pd.DataFrame, root: str | Path, *, algorithm: str | Sequence[str], name: str,
    title: str, needs: str, model_choice: Sequence[str], datasets: Callable[[str], bool] = lambda d: True,
    max_panels: int = 6, include_smoke: bool = False,
) -> Figure:
    """One image artifact `name` per dataset, from the best model (by `model_choice`) that saved it, like the
    papers' sample figures (one panel per dataset, labelled with its dataset). Smoke runs are left out unless
    `include_smoke`."""
    sub = runs_of(runs, algorithm)
    if not include_smoke:
        sub = sub[~smoke_mask(sub)]
    sub = sub[sub["dataset"].map(datasets)] if not sub.empty else sub
    require(not sub.empty, f"no completed {algorithm} runs on the datasets this figure shows", needs)
    order: list[str] = []
    for _, group in sub.groupby("dataset"):
        chosen = set(best_model(group, model_choice)["run_id"])
        order += [r for r in group["run_id"] if r in chosen] + [r for r in group["run_id"] if r not in chosen]
    rows = latest_artifacts(artifacts, order, [name])
    require(not rows.empty, f"no {algorithm} run saved {name}", needs)
    rank = {r: i for i, r in enumerate(order)}
    dataset_of = dict(zip(sub["run_id"], sub["dataset"]))
    rows = rows.assign(_rank=rows["run_id"].map(rank), _dataset=rows["run_id"].map(dataset_of))
    rows = rows.sort_values("_rank").drop_duplicates("_dataset").head(max_panels)
    labels = [f"{d} · {r}" for d, r in zip(rows["_dataset"], rows["run_id"])]
    return image_panel(root, rows, title=title, labels=labels, needs=needs)
