"""Writing tables (Markdown, LaTeX, CSV) and figures (PNG, PDF).

CSV keeps every number at full precision (it is what tests compare against the store); Markdown and LaTeX
show the display form from `display_frame`: `ours` to 6 significant digits, `±` to 3.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EVALS_MARK = "*"


def fmt(x: Any, digits: int = 6) -> str:
    """Display form of one of our numbers (6 significant digits); blanks for missing values."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{digits}g}"
    return str(x)


def fmt_published(x: Any) -> str:
    """A published number as printed (shortest form that round-trips: 1836.27, 84.55, 3000)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return np.format_float_positional(float(x), trim="-")


def is_comparison(frame: pd.DataFrame) -> bool:
    return bool(frame.attrs.get("quantities"))


def display_frame(frame: pd.DataFrame, *, markdown: bool = False) -> pd.DataFrame:
    """Strings for Markdown/LaTeX. Comparison tables collapse each quantity to published | ours | n.

    With `markdown`, a table whose attrs name a `thumbnail_column` and `thumbnails` ({run_id: relative
    path}) gets a `samples` column of images (TAB A.1's "Means of the model").
    """
    if not is_comparison(frame):
        return frame.map(fmt) if not frame.empty else frame.astype(str)
    out = pd.DataFrame(index=frame.index)
    for label in frame.attrs.get("labels", ["model"]):
        if label in frame.columns:
            out[label] = frame[label].map(fmt)
    extra = [c for c in frame.attrs.get("display_extra", []) if c in frame.columns]
    for c in extra:
        out[c] = frame[c].map(fmt)
    for q in frame.attrs["quantities"]:
        pub, pub_pm = frame[f"{q} published"], frame[f"{q} published ±"]
        mark = frame.get(f"{q} published mark", pd.Series("", index=frame.index)).fillna("")
        out[f"{q} (published)"] = [
            "" if not fmt_published(v) else f"{m}{fmt_published(v)}" + (f" ± {fmt_published(p)}" if fmt_published(p) else "")
            for v, p, m in zip(pub, pub_pm, mark)
        ]
        ours = []
        for v, p, kind in zip(frame[f"{q} ours"], frame[f"{q} ours ±"], frame[f"{q} ± over"].fillna("")):
            text = fmt(v)
            if text and fmt(p):
                text += f" ± {fmt(p, 3)}" + (EVALS_MARK if kind in ("evals", "se") else "")
            ours.append(text)
        out[f"{q} (ours)"] = ours
        out[f"{q} n"] = frame[f"{q} n"].astype(int).astype(str)
    thumbs = frame.attrs.get("thumbnails") or {}
    column = frame.attrs.get("thumbnail_column")
    if markdown and thumbs and column in frame.columns:
        out["samples"] = [f"![samples of {r}]({thumbs[r]})" if r in thumbs else "" for r in frame[column]]
    return out


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|").replace("\n", " ")


def to_markdown(frame: pd.DataFrame, *, heading: bool = True) -> str:
    shown = display_frame(frame, markdown=True)
    lines = []
    if heading and frame.attrs.get("title"):
        lines += [f"### {frame.attrs['title']}", ""]
    cols = list(shown.columns)
    lines.append("| " + " | ".join(_md_escape(c) for c in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join(_md_escape(v) for v in row) + " |")
    notes = caption_lines(frame)
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def caption_lines(frame: pd.DataFrame) -> list[str]:
    notes = []
    if frame.attrs.get("caption"):
        notes.append(str(frame.attrs["caption"]))
    if is_comparison(frame):
        notes.append(
            "ours = mean over the n runs of the cell; ± = std over those runs, "
            f"or ({EVALS_MARK}) a single run's own ± (std over its repeated evaluations; for Parzen, the standard "
            "error over test points)."
        )
        if frame.attrs.get("source"):
            notes.append(f"Published: {frame.attrs['source']}.")
    return notes


_LATEX_SYMBOLS = {"±": r"$\pm$", "≈": r"$\approx$", "≤": r"$\leq$", "→": r"$\to$", "σ": r"$\sigma$", "α": r"$\alpha$",
                  "ω": r"$\omega$"}


def to_latex(frame: pd.DataFrame, label: str) -> str:
    shown = display_frame(frame)
    caption = frame.attrs.get("title", label)
    text = shown.to_latex(index=False, escape=True, caption=caption, label=f"tab:{label}")
    for symbol, latex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, latex)
    return text


def write_table(frame: pd.DataFrame, directory: Path, name: str) -> list[Path]:
    """`name`.md, .tex and .csv in `directory`; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.md", directory / f"{name}.tex", directory / f"{name}.csv"]
    paths[0].write_text(to_markdown(frame), encoding="utf-8")
    paths[1].write_text(to_latex(frame, name), encoding="utf-8")
    frame.to_csv(paths[2], index=False)
    return paths


def write_figure(figure: Any, directory: Path, name: str) -> list[Path]:
    """`name`.png (Agg) and .pdf in `directory`; returns the paths. Figures are pyplot-free, so nothing to close."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.png", directory / f"{name}.pdf"]
    try:
        # The figures use constrained layout already; bbox_inches="tight" would lay them out a second time.
        figure.savefig(paths[0], dpi=100)
        # The layout is in inches and points, so the PDF reuses the one just computed instead of redoing it.
        figure.set_layout_engine("none")
        figure.savefig(paths[1])
    finally:
        figure.clear()
    return paths
