"""Writing tables (Markdown, LaTeX, CSV) and figures (PNG, PDF).

CSV keeps every number at full precision (it is what tests compare against the store); Markdown and LaTeX
show the display form from `display_frame`: `ours` to 6 significant digits, `±` to 3.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

from analysis.figures import PAPER_RC, PNG_DPI, fit_suptitle

# matplotlib's PDF backend subsets fonts with fontTools, which logs ~30 INFO lines per figure (600 per
# report under raygen's INFO logging); its warnings still show.
logging.getLogger("fontTools").setLevel(logging.WARNING)


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


# Metric names in words (table headers); the unit follows in parentheses where the paper gives one.
QUANTITY_WORDS = {
    "test_ll": "Test log-likelihood (nats)",
    "train_ll": "Train log-likelihood (nats)",
    "nll": "Test NLL (nats per image)",
    "bits_per_dim": "Test bits per dimension",
    "parzen_ll": "Parzen test log-likelihood (nats)",
    "lower_bound": "Test lower bound (nats)",
    "inception_score": "Inception score",
    "valid_bpc": "Validation bits per character",
    "test_bpc": "Test bits per character",
    "centroid_distance": "Centroid distance",
    "nearest_free_distance": "Teacher-to-free-running distance",
    "reversibility_percent": "Irreversibility (%)",
    "rating": "Mean rating",
}
# Quantities where a lower number is better (the best value is printed in bold).
LOWER_IS_BETTER = {"nll", "bits_per_dim", "valid_bpc", "test_bpc", "centroid_distance", "nearest_free_distance",
                   "reversibility_percent"}


def quantity_words(q: str) -> str:
    return QUANTITY_WORDS.get(q, q.replace("_", " "))


def runs_text(n: int, spread: str) -> str:
    """The `runs` column: how many runs a cell averages and what its ± is over (no ± for a single run
    without repeated evaluations: "n = 1", never "± 0")."""
    if n <= 0:
        return ""
    if n == 1:
        if spread.startswith("std over") and "evaluations" in spread:
            return "n = 1 (± over " + spread.removeprefix("std over ").removesuffix(" of 1 run") + ")"
        if spread.startswith("standard error"):
            return "n = 1 (± standard error)"
        if "splits" in spread:
            return "n = 1 (± over " + spread.removeprefix("std over ").removesuffix(" of 1 run") + ")"
        return "n = 1"
    return f"n = {n} (± over seeds)"


def _best_rows(frame: pd.DataFrame, q: str) -> tuple[set[int], set[int]]:
    """Positions of the best published and best ours value of `q` (within each `best_within` group)."""
    lower = q in LOWER_IS_BETTER
    group_col = frame.attrs.get("best_within")
    groups = frame.groupby(group_col, sort=False).indices.values() if group_col in frame.columns else [range(len(frame))]
    best_pub: set[int] = set()
    best_ours: set[int] = set()
    for idx in groups:
        idx = list(idx)
        pub = pd.to_numeric(frame[f"{q} published"], errors="coerce").iloc[idx] if f"{q} published" in frame else None
        ours = pd.to_numeric(frame[f"{q} ours"], errors="coerce").iloc[idx]
        values = pd.concat([pub, ours]) if pub is not None else ours
        if values.notna().sum() < 2:
            continue
        best = values.min() if lower else values.max()
        if pub is not None:
            best_pub |= {idx[i] for i, v in enumerate(pub) if v == best}
        best_ours |= {idx[i] for i, v in enumerate(ours) if v == best}
    return best_pub, best_ours


def display_frame(frame: pd.DataFrame, *, markdown: bool = False, bold: Any = None) -> pd.DataFrame:
    """Strings for Markdown/LaTeX. Comparison tables collapse each quantity to published | ours | runs.

    With `markdown`, a table whose attrs name a `thumbnail_column` and `thumbnails` ({run_id: relative
    path}) gets a `samples` column of images (TAB A.1's "Means of the model"). `bold` wraps the best value
    of each quantity (e.g. `lambda t: f"**{t}**"`).
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
    ours_only = bool(frame.attrs.get("ours_only"))
    for q in frame.attrs["quantities"]:
        words = quantity_words(q)
        # Bold marks the best of comparable numbers: never across the rows of an "other data" table.
        best_pub, best_ours = _best_rows(frame, q) if bold and not ours_only else (set(), set())
        if not ours_only:
            pub, pub_pm = frame[f"{q} published"], frame[f"{q} published ±"]
            mark = frame.get(f"{q} published mark", pd.Series("", index=frame.index)).fillna("")
            texts = []
            for i, (v, p, m) in enumerate(zip(pub, pub_pm, mark)):
                text = "" if not fmt_published(v) else f"{m}{fmt_published(v)}" + (
                    f" ± {fmt_published(p)}" if fmt_published(p) else "")
                texts.append(bold(text) if text and i in best_pub else text)
            out[f"{words}, published"] = texts
        ours = []
        for i, (v, p, n) in enumerate(zip(frame[f"{q} ours"], frame[f"{q} ours ±"], frame[f"{q} n"])):
            text = fmt(v)
            if text and fmt(p):
                text += f" ± {fmt(p, 3)}"
            ours.append(bold(text) if text and bold and i in best_ours else text)
        out[f"{words}, ours"] = ours
        out[f"{words}, runs"] = [runs_text(int(n), str(sp)) for n, sp in
                                 zip(frame[f"{q} n"], frame[f"{q} ± over"].fillna(""))]
    thumbs = frame.attrs.get("thumbnails") or {}
    column = frame.attrs.get("thumbnail_column")
    if markdown and thumbs and column in frame.columns:
        out["samples"] = [f"![samples of {r}]({thumbs[r]})" if r in thumbs else "" for r in frame[column]]
    return out


def _md_escape(text: str) -> str:
    # Stored strings are data: `<!--` in a run or parameter name would hide the rest of the rendered page, `<b>`
    # restyle it, `|` split the cell. Markdown renderers show &lt; / &amp; as typed.
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace("|", r"\|").replace("\n", " ")


def to_markdown(frame: pd.DataFrame, *, heading: bool = True) -> str:
    shown = display_frame(frame, markdown=True, bold=lambda t: f"**{t}**")
    lines = []
    if heading and frame.attrs.get("title"):
        lines += [f"### {frame.attrs['title']}", ""]
    cols = list(shown.columns)
    lines.append("| " + " | ".join(_md_escape(c) for c in cols) + " |")
    lines.append("|" + "|".join("---:" if _numeric_column(shown, c) else "---" for c in cols) + "|")
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
            "ours = mean over the n runs of a cell (runs of one model config, differing in seed); ± = std over "
            "those seeds when n ≥ 2; for a single run, the std over its repeated evaluations (or, for Parzen, the "
            "standard error over test points) when it has one, else no ± (n = 1)."
            + ("" if frame.attrs.get("ours_only") else " Bold: the best value of each column.")
        )
        if frame.attrs.get("source"):
            notes.append(f"Published: {frame.attrs['source']}.")
    return notes


_NUMBER = re.compile(r"^\**[≈≤<]?-?\d[\d.e+-]*( ± [\d.e+-]+)?\**$")


def _numeric_column(shown: pd.DataFrame, column: str) -> bool:
    if str(column).endswith((", published", ", ours")):  # number columns, even where every cell is empty
        return True
    values = [str(v) for v in shown[column] if str(v)]
    return bool(values) and all(_NUMBER.match(v) for v in values)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  # without T1 fonts < > | print as ¡ ¿ —; a blank line in a cell would end the tabular's paragraph
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "\n": " ", "\r": " "}
_LATEX_SYMBOLS = {"±": r"$\pm$", "≈": r"$\approx$", "≤": r"$\leq$", "→": r"$\to$", "σ": r"$\sigma$",
                  "α": r"$\alpha$", "ω": r"$\omega$", "–": "--", "≥": r"$\geq$", "·": r"$\cdot$"}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for symbol, latex in _LATEX_SYMBOLS.items():
        out = out.replace(symbol, latex)
    return out


def to_latex(frame: pd.DataFrame, label: str) -> str:
    """A booktabs table: numeric columns right-aligned, the best value of each quantity in bold, headers in
    words, the caption and notes under it (needs \\usepackage{booktabs})."""
    marker = "\x00B\x00"
    shown = display_frame(frame, bold=lambda t: f"{marker}{t}{marker}")
    cols = list(shown.columns)
    spec = "".join("r" if _numeric_column(shown.map(lambda v: str(v).replace(marker, "")), c) else "l" for c in cols)

    def cell_tex(v: Any) -> str:
        text = str(v)
        if marker in text:
            return r"\textbf{" + latex_escape(text.replace(marker, "")) + "}"
        return latex_escape(text)

    lines = [r"\begin{table}", r"\centering", r"\small", r"\begin{tabular}{" + spec + "}", r"\toprule",
             " & ".join(latex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for row in shown.itertuples(index=False):
        lines.append(" & ".join(cell_tex(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    title = str(frame.attrs.get("title", label)).rstrip()
    # The title is the caption's first sentence: it ends with a full stop before the notes follow.
    caption = " ".join([title + ("" if title.endswith((".", "?", "!")) else ".")] + caption_lines(frame))
    lines += [r"\caption{" + latex_escape(caption) + "}", r"\label{tab:" + label + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


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
        # Saved under the paper settings (TrueType fonts in the PDF, 200 dpi PNG) whoever built the figure.
        fit_suptitle(figure)
        with matplotlib.rc_context(PAPER_RC):
            # The figures use constrained layout already; bbox_inches="tight" would lay them out a second time.
            figure.savefig(paths[0], dpi=PNG_DPI)
            # The layout is in inches and points, so the PDF reuses the one just computed instead of redoing it.
            figure.set_layout_engine("none")
            figure.savefig(paths[1])
    finally:
        figure.clear()
    return paths
