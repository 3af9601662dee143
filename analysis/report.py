"""`build_report(results, out)`: every paper table and figure the store supports, plus an index.

Layout of the output folder:

    README.md            index: what was built (with links) and what was not, why, and which runs it needs
    tables/<item>.md     Markdown (published beside ours, ± and n per cell)
    tables/<item>.tex    LaTeX (booktabs tabular from pandas)
    tables/<item>.csv    the same numbers at full precision
    tables/thumbs/*.png  sample thumbnails shown in TAB A.1
    figures/<item>.png   and .pdf

Every item is one builder from analysis/{infusion,walkback,professor,sweeps}.py. A builder that lacks data
raises MissingData and lands in the index's "not built" list; any other exception is a bug, is logged with
its traceback and listed under "errors" so one broken builder never hides the others.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import infusion, professor, sweeps, walkback
from analysis.common import MissingData, runs_of
from analysis.load import Store, load_store
from analysis.render import to_markdown, write_figure, write_table

log = logging.getLogger(__name__)

TOP_K = 10


@dataclass
class Item:
    name: str
    title: str
    kind: str  # "table" | "figure"
    build: Callable[[Store], Any]
    group: str = ""


@dataclass
class BuiltItem:
    name: str
    title: str
    kind: str
    files: list[Path]


@dataclass
class SkippedItem:
    name: str
    title: str
    kind: str
    reason: str
    needs: str


@dataclass
class ReportSummary:
    """What `build_report` wrote: `built` items with their files, `skipped` ones with the reason, `errors`."""

    out_dir: Path
    index: Path
    built: list[BuiltItem] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    errors: list[SkippedItem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def files(self) -> list[Path]:
        return [self.index] + [f for item in self.built for f in item.files]

    def built_names(self) -> list[str]:
        return [b.name for b in self.built]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_").lower() or "x"


def paper_items() -> list[Item]:
    """The paper tables and figures, in the order the index lists them."""
    it, vw, pf = "Infusion Training (Bordes 2017)", "Variational Walkback (Goyal 2017/2018)", "Professor Forcing (Goyal 2018)"
    return [
        Item("infusion_tab_a1", "Infusion TAB A.1: test lower bound per infusion rate and number of steps", "table",
             lambda s: infusion.tab_a1(s.runs), it),
        Item("infusion_fig_a1", "Infusion Fig A.1: lower-bound curves per infusion rate", "figure",
             lambda s: infusion.fig_a1(s.runs, s.metrics), it),
        Item("infusion_fig_3_3", "Infusion Fig 3.3: lower bound and Parzen during training", "figure",
             lambda s: infusion.fig_3_3(s.runs, s.metrics), it),
        Item("infusion_table_3_1", "Infusion TAB 3.1: lower bound, IS and isotropic IS (test/train)", "table",
             lambda s: infusion.table_3_1(s.runs), it),
        Item("infusion_parzen", "Infusion FIG 3.4: Parzen-window test log-likelihood", "table",
             lambda s: infusion.parzen_table(s.runs), it),
        Item("infusion_table_3_2", "Infusion TAB 3.2: Inception score on CIFAR-10", "table",
             lambda s: infusion.inception_table(s.runs), it),
        Item("infusion_fig_3_5", "Infusion Fig 3.5: samples and nearest training examples", "figure",
             lambda s: infusion.fig_3_5(s.runs, s.artifacts, s.root), it),
        Item("infusion_fig_3_6", "Infusion Fig 3.6: inpainting", "figure",
             lambda s: infusion.fig_3_6(s.runs, s.artifacts, s.root), it),
        Item("infusion_samples", "Infusion samples (Fig 3.1 / A.3 / A.4 kind)", "figure",
             lambda s: infusion.samples_figure(s.runs, s.artifacts, s.root), it),
        Item("infusion_chains", "Infusion sampling chains (Fig 3.1 / A.3b / A.4b kind)", "figure",
             lambda s: infusion.chains_figure(s.runs, s.artifacts, s.root), it),
        Item("infusion_fig_3_2", "Infusion Fig 3.2: infusion chains toward a target", "figure",
             lambda s: infusion.fig_3_2(s.runs, s.artifacts, s.root), it),
        Item("walkback_table_3_1a", "VW Table 3.1a: LB for 5/10/15 steps and IS", "table",
             lambda s: walkback.table_3_1a(s.runs), vw),
        Item("walkback_table_3_1b", "VW Table 3.1b: isotropic-output IS vs AIS baselines", "table",
             lambda s: walkback.table_3_1b(s.runs), vw),
        Item("walkback_table_3_2", "VW Table 3.2: CIFAR-10 bits/dim", "table", lambda s: walkback.table_3_2(s.runs), vw),
        Item("walkback_s001_table_1", "VW NIPS Table 1: CIFAR-10 bits/dim", "table",
             lambda s: walkback.s001_table_1(s.runs), vw),
        Item("walkback_inception", "VW §3.16: Inception scores on CIFAR-10", "table",
             lambda s: walkback.inception_table(s.runs), vw),
        Item("walkback_reversibility", "VW §3.14: reversibility ratio", "table",
             lambda s: walkback.reversibility_table(s.runs), vw),
        Item("walkback_fig_3_8_toy", "VW Figs 3.8/3.9: 2-D toy samples", "figure",
             lambda s: walkback.toy_figure(s.runs, s.artifacts, s.root), vw),
        Item("walkback_samples", "VW Figs 3.4-3.7: samples", "figure",
             lambda s: walkback.samples_figure(s.runs, s.artifacts, s.root), vw),
        Item("walkback_chains", "VW Fig 3.10: sampling chains", "figure",
             lambda s: walkback.chains_figure(s.runs, s.artifacts, s.root), vw),
        Item("walkback_long_chains", "VW Figs 3.11-3.16: long chains at T = 1", "figure",
             lambda s: walkback.long_chains_figure(s.runs, s.artifacts, s.root), vw),
        Item("walkback_fig_3_3_inpainting", "VW Fig 3.3: inpainting", "figure",
             lambda s: walkback.inpainting_figure(s.runs, s.artifacts, s.root), vw),
        Item("pf_table_2_1", "PF Table 2.1: sequential MNIST test NLL", "table", lambda s: professor.table_2_1(s.runs), pf),
        Item("pf_ptb_bpc", "PF PTB: validation BPC 1.50 vs 1.48", "table", lambda s: professor.ptb_bpc(s.runs), pf),
        Item("pf_fig_2_3_distances", "PF Fig 2.3: hidden-state distances", "table",
             lambda s: professor.distances_table(s.runs), pf),
        Item("pf_fig_2_3", "PF Fig 2.3: hidden-state distances (bars)", "figure",
             lambda s: professor.distances_figure(s.runs), pf),
        Item("pf_fig_2_3_tsne", "PF Fig 2.3: hidden-state T-SNE, teacher vs professor", "figure",
             lambda s: professor.tsne_figure(s.runs, s.artifacts, s.root), pf),
        Item("pf_discriminator", "PF discriminator accuracy and gates", "figure",
             lambda s: professor.discriminator_figure(s.runs, s.metrics), pf),
    ]


def dynamic_items(store: Store) -> list[Item]:
    """Items that depend on the store: Figs 2.2/2.6 per sequence dataset, and the per-sweep tables."""
    items: list[Item] = []
    pf_runs = runs_of(store.runs, professor.ALGORITHMS)
    datasets = sorted(pf_runs["dataset"].dropna().unique()) if not pf_runs.empty else []
    for dataset in datasets or ["(none)"]:
        items.append(Item(f"pf_fig_2_2_{slug(dataset)}" if datasets else "pf_fig_2_2",
                          f"PF Figs 2.2/2.6: training curves, teacher vs professor ({dataset})", "figure",
                          lambda s, d=(dataset if datasets else None): professor.training_curves(s.runs, s.metrics, dataset=d),
                          "Professor Forcing (Goyal 2018)"))
    group = "Sweeps"
    items.append(Item("sweeps_best", "Best trial per sweep", "table", lambda s: sweeps.best_trials(s.runs, s.sweeps), group))
    for sid in sweeps.sweep_ids(store.runs, store.sweeps):
        if sweeps.is_plain(sid):
            continue
        n = f"sweep_{slug(sid)}"
        items += [
            Item(f"{n}_top_k", f"Sweep {sid}: top-{TOP_K} configurations", "table",
                 lambda s, sid=sid: sweeps.top_k(s.runs, sid, s.sweeps, TOP_K), group),
            Item(f"{n}_effects", f"Sweep {sid}: effect of each parameter", "table",
                 lambda s, sid=sid: sweeps.param_effects(s.runs, sid, s.sweeps), group),
            Item(f"{n}_best_per_level", f"Sweep {sid}: best setting per level of another parameter", "table",
                 lambda s, sid=sid: sweeps.param_interactions(s.runs, sid, s.sweeps), group),
            Item(f"{n}_importance", f"Sweep {sid}: parameter importance (PED-ANOVA)", "table",
                 lambda s, sid=sid: sweeps.importance_table(s.runs, sid, s.sweeps), group),
            Item(f"{n}_effects_plot", f"Sweep {sid}: objective vs each parameter", "figure",
                 lambda s, sid=sid: sweeps.effects_figure(s.runs, sid, s.sweeps), group),
        ]
    return items


def _thumbnails(store: Store, frame: pd.DataFrame, tables_dir: Path) -> None:
    """Copy the samples.png of each run named in the frame's thumbnail column next to the tables."""
    column = frame.attrs.get("thumbnail_column")
    if not column or column not in frame.columns or store.artifacts.empty:
        return
    runs = set(frame[column].dropna())
    arts = store.artifacts[(store.artifacts["name"] == "samples.png") & store.artifacts["run_id"].isin(runs)]
    arts = arts.sort_values("step").drop_duplicates("run_id", keep="last")
    thumbs: dict[str, str] = {}
    for run_id, path in zip(arts["run_id"], arts["path"]):
        source = store.root / path
        if source.is_file():
            target = tables_dir / "thumbs" / f"{slug(run_id)}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            thumbs[run_id] = f"thumbs/{target.name}"
    frame.attrs["thumbnails"] = thumbs


def _store_summary(store: Store) -> str:
    runs = store.runs
    if runs.empty or "algorithm" not in runs.columns:
        return "no runs"
    counts = runs.groupby(["algorithm", "status"]).size()
    parts = [f"{algo} {status}: {n}" for (algo, status), n in counts.items()]
    n_sweeps = len([s for s in sweeps.sweep_ids(runs, store.sweeps) if not sweeps.is_plain(s)])
    return f"{len(runs)} runs ({'; '.join(parts)}); {n_sweeps} sweep(s)"


def _write_index(summary: ReportSummary, store: Store) -> None:
    out = summary.out_dir
    lines = [
        "# raygen report",
        "",
        f"Results store: `{store.root.resolve()}` — {_store_summary(store)}.",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} in {summary.seconds:.1f} s.",
        "",
        f"## Built ({len(summary.built)})",
        "",
        "| item | kind | files |",
        "|---|---|---|",
    ]
    for b in summary.built:
        links = " ".join(f"[{f.suffix[1:]}]({f.relative_to(out).as_posix()})" for f in b.files)
        lines.append(f"| [{b.title}]({b.files[0].relative_to(out).as_posix()}) | {b.kind} | {links} |")
    lines += ["", f"## Not built ({len(summary.skipped)})", ""]
    if summary.skipped:
        lines += ["| item | kind | why | runs it needs |", "|---|---|---|---|"]
        for s in summary.skipped:
            lines.append(f"| {s.title} (`{s.name}`) | {s.kind} | {s.reason} | {s.needs} |")
    else:
        lines.append("Everything the report knows was built.")
    if summary.errors:
        lines += ["", f"## Errors ({len(summary.errors)})", "",
                  "These builders failed unexpectedly (a bug; the log has the traceback):", ""]
        lines += [f"- `{e.name}`: {e.reason}" for e in summary.errors]
    legend = ("Tables: ours = mean over the n runs of a cell; ± = std over those runs, or (*) one run's own "
              "± (repeated evaluations / standard error). CSV files hold the full-precision numbers.")
    lines += ["", legend, ""]
    summary.index.write_text("\n".join(lines), encoding="utf-8")


def build_report(results_dir: str | Path, out_dir: str | Path) -> ReportSummary:
    """Write every table (Markdown, LaTeX, CSV) and figure (PNG, PDF) the store supports, and an index
    (out_dir/README.md) listing what was built and, for the rest, why not and which runs are needed."""
    start = time.perf_counter()
    store = load_store(results_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables_dir, figures_dir = out / "tables", out / "figures"
    summary = ReportSummary(out, out / "README.md")
    for item in paper_items() + dynamic_items(store):
        try:
            result = item.build(store)
        except MissingData as missing:
            summary.skipped.append(SkippedItem(item.name, item.title, item.kind, missing.reason, missing.needs))
            log.info("not built: %s (%s)", item.name, missing.reason)
            continue
        except Exception as err:
            log.exception("builder %s failed", item.name)
            summary.errors.append(SkippedItem(item.name, item.title, item.kind, f"{type(err).__name__}: {err}", ""))
            continue
        if item.kind == "table":
            _thumbnails(store, result, tables_dir)
            files = write_table(result, tables_dir, item.name)
        else:
            files = write_figure(result, figures_dir, item.name)
        summary.built.append(BuiltItem(item.name, item.title, item.kind, files))
        log.info("built %s", item.name)
    summary.seconds = time.perf_counter() - start
    _write_index(summary, store)
    log.info("report: %d built, %d not built, %d errors -> %s", len(summary.built), len(summary.skipped),
             len(summary.errors), summary.index)
    return summary


__all__ = ["BuiltItem", "ReportSummary", "SkippedItem", "build_report", "paper_items", "to_markdown"]
