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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

from analysis import baselines, infusion, professor, sweeps, walkback
from analysis.common import MissingData, runs_of, smoke_mask
from analysis.figures import PAPER_RC
from analysis.load import Store, load_store, read_metrics_fast
from analysis.protocol import selection_of
from analysis.render import to_markdown, write_figure, write_table
from raygen.results.store import exists, is_remote, read_bytes

log = logging.getLogger(__name__)

TOP_K = 10


@dataclass
class Item:
    name: str
    title: str
    kind: str  # "table" | "figure"
    build: Callable[[Store, bool], Any]  # (store, include_smoke) -> DataFrame or Figure
    group: str = ""


@dataclass
class BuiltItem:
    name: str
    title: str
    kind: str
    files: list[Path]
    ledger: pd.DataFrame | None = None  # run_id, dataset, used, why (items that select runs by protocol)
    protocol: str = ""
    runs_file: Path | None = None


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
    """The paper tables and figures, in the order the index lists them. Each builder gets the store and
    whether smoke runs may be used (`--include-smoke`)."""
    it, vw, pf = "Infusion Training (Bordes 2017)", "Variational Walkback (Goyal 2017/2018)", "Professor Forcing (Goyal 2018)"
    bl = "Baselines run by raygen (VAE, GAN, GMMN, GSN, NET)"
    return [
        Item("infusion_tab_a1", "Infusion TAB A.1: test lower bound per infusion rate and number of steps", "table",
             lambda s, k: infusion.tab_a1(s.runs, include_smoke=k), it),
        Item("infusion_tab_a1_plot", "Infusion TAB A.1 as a figure: lower bound against the infusion rate", "figure",
             lambda s, k: infusion.tab_a1_figure(s.runs, include_smoke=k), it),
        Item("infusion_fig_a1", "Infusion Fig A.1: lower-bound curves per infusion rate", "figure",
             lambda s, k: infusion.fig_a1(s.runs, s.metrics, include_smoke=k), it),
        Item("infusion_fig_3_3", "Infusion Fig 3.3: lower bound and Parzen during training", "figure",
             lambda s, k: infusion.fig_3_3(s.runs, s.metrics, include_smoke=k), it),
        Item("infusion_table_3_1", "Infusion TAB 3.1: lower bound, IS and isotropic IS (test/train)", "table",
             lambda s, k: infusion.table_3_1(s.runs, include_smoke=k), it),
        Item("infusion_parzen", "Infusion FIG 3.4: Parzen-window test log-likelihood", "table",
             lambda s, k: infusion.parzen_table(s.runs, include_smoke=k), it),
        Item("infusion_table_3_2", "Infusion TAB 3.2: Inception score on CIFAR-10", "table",
             lambda s, k: infusion.inception_table(s.runs, include_smoke=k), it),
        Item("infusion_fig_3_5", "Infusion Fig 3.5: samples and nearest training examples", "figure",
             lambda s, k: infusion.fig_3_5(s.runs, s.artifacts, s.root, include_smoke=k), it),
        Item("infusion_fig_3_6", "Infusion Fig 3.6: inpainting", "figure",
             lambda s, k: infusion.fig_3_6(s.runs, s.artifacts, s.root, include_smoke=k), it),
        Item("infusion_samples", "Infusion samples (Fig 3.1 / A.3 / A.4 kind)", "figure",
             lambda s, k: infusion.samples_figure(s.runs, s.artifacts, s.root, include_smoke=k), it),
        Item("infusion_chains", "Infusion sampling chains (Fig 3.1 / A.3b / A.4b kind)", "figure",
             lambda s, k: infusion.chains_figure(s.runs, s.artifacts, s.root, include_smoke=k), it),
        Item("infusion_fig_3_2", "Infusion Fig 3.2: infusion chains toward a target", "figure",
             lambda s, k: infusion.fig_3_2(s.runs, s.artifacts, s.root, include_smoke=k), it),
        Item("walkback_table_3_1a", "VW Table 3.1a: LB for K = 5/10/15 heating steps and IS", "table",
             lambda s, k: walkback.table_3_1a(s.runs, include_smoke=k), vw),
        Item("walkback_table_3_1b", "VW Table 3.1b: isotropic-output IS vs AIS baselines", "table",
             lambda s, k: walkback.table_3_1b(s.runs, include_smoke=k), vw),
        Item("walkback_table_3_2", "VW Table 3.2: CIFAR-10 bits/dim", "table",
             lambda s, k: walkback.table_3_2(s.runs, include_smoke=k), vw),
        Item("walkback_s001_table_1", "VW NIPS Table 1: CIFAR-10 bits/dim", "table",
             lambda s, k: walkback.s001_table_1(s.runs, include_smoke=k), vw),
        Item("walkback_inception", "VW §3.16: Inception scores on CIFAR-10", "table",
             lambda s, k: walkback.inception_table(s.runs, include_smoke=k), vw),
        Item("walkback_reversibility", "VW §3.14: reversibility ratio", "table",
             lambda s, k: walkback.reversibility_table(s.runs, include_smoke=k), vw),
        Item("walkback_fig_3_8_toy", "VW Figs 3.8/3.9: 2-D toy samples", "figure",
             lambda s, k: walkback.toy_figure(s.runs, s.artifacts, s.root, include_smoke=k), vw),
        Item("walkback_samples", "VW Figs 3.4-3.7: samples", "figure",
             lambda s, k: walkback.samples_figure(s.runs, s.artifacts, s.root, include_smoke=k), vw),
        Item("walkback_chains", "VW Fig 3.10: sampling chains", "figure",
             lambda s, k: walkback.chains_figure(s.runs, s.artifacts, s.root, include_smoke=k), vw),
        Item("walkback_long_chains", "VW Figs 3.11-3.16: long chains at T = 1", "figure",
             lambda s, k: walkback.long_chains_figure(s.runs, s.artifacts, s.root, include_smoke=k), vw),
        Item("walkback_fig_3_3_inpainting", "VW Fig 3.3: inpainting", "figure",
             lambda s, k: walkback.inpainting_figure(s.runs, s.artifacts, s.root, include_smoke=k), vw),
        Item("baselines_vw_table_3_1b", "VW Table 3.1b with our VAE/GAN/GMMN by our AIS", "table",
             lambda s, k: baselines.vw_table_3_1b(s.runs, include_smoke=k), bl),
        Item("baselines_it_table_3_1", "Infusion TAB 3.1 with our VAE/GAN/GMMN by our AIS", "table",
             lambda s, k: baselines.it_table_3_1(s.runs, include_smoke=k), bl),
        Item("baselines_it_parzen", "Infusion FIG 3.4 with our GSN/diffusion/GAN/GMMN+AE Parzen rows", "table",
             lambda s, k: baselines.parzen_table(s.runs, include_smoke=k), bl),
        Item("pf_table_2_1", "PF Table 2.1: sequential binarized MNIST test NLL (nats per image)", "table",
             lambda s, k: professor.table_2_1(s.runs, include_smoke=k), pf),
        Item("pf_ptb_bpc", "PF PTB: validation BPC 1.50 vs 1.48", "table",
             lambda s, k: professor.ptb_bpc(s.runs, include_smoke=k), pf),
        Item("pf_fig_2_3_distances", "PF Fig 2.3: hidden-state distances", "table",
             lambda s, k: professor.distances_table(s.runs, include_smoke=k), pf),
        Item("pf_fig_2_3", "PF Fig 2.3: hidden-state distances (ratios, published as reference)", "figure",
             lambda s, k: professor.distances_figure(s.runs, include_smoke=k), pf),
        Item("pf_fig_2_3_tsne", "PF Fig 2.3: hidden-state T-SNE, teacher vs professor", "figure",
             lambda s, k: professor.tsne_figure(s.runs, s.artifacts, s.root, include_smoke=k), pf),
        Item("pf_discriminator", "PF discriminator accuracy and gates", "figure",
             lambda s, k: professor.discriminator_figure(s.runs, s.metrics, include_smoke=k), pf),
    ]


def dynamic_items(store: Store, include_smoke: bool = False) -> list[Item]:
    """Items that depend on the store: Figs 2.2/2.6 per sequence dataset, and the per-sweep tables (sweep
    summaries are not paper tables: a smoke sweep gets its own, titled as such)."""
    items: list[Item] = []
    pf_runs = runs_of(store.runs, professor.ALGORITHMS)
    if not include_smoke and not pf_runs.empty:
        pf_runs = pf_runs[~smoke_mask(pf_runs)]
    datasets = sorted(pf_runs["dataset"].dropna().unique()) if not pf_runs.empty else []
    for dataset in datasets or ["(none)"]:
        items.append(Item(f"pf_fig_2_2_{slug(dataset)}" if datasets else "pf_fig_2_2",
                          f"PF Figs 2.2/2.6: training curves, teacher vs professor ({dataset})", "figure",
                          lambda s, k, d=(dataset if datasets else None): professor.training_curves(
                              s.runs, s.metrics, dataset=d, include_smoke=k),
                          "Professor Forcing (Goyal 2018)"))
    group = "Sweeps"
    items.append(Item("sweeps_best", "Best trial per sweep", "table", lambda s, k: sweeps.best_trials(s.runs, s.sweeps),
                      group))
    smoke_sweeps = set()
    if "sweep_id" in store.runs.columns and not store.runs.empty:
        smoke_sweeps = set(store.runs.loc[smoke_mask(store.runs), "sweep_id"].dropna().astype(str))
    for sid in sweeps.sweep_ids(store.runs, store.sweeps):
        if sweeps.is_plain(sid):
            continue
        n = f"sweep_{slug(sid)}"
        tag = " (smoke sweep)" if sid in smoke_sweeps else ""
        items += [
            Item(f"{n}_top_k", f"Sweep {sid}{tag}: top-{TOP_K} configurations", "table",
                 lambda s, k, sid=sid: sweeps.top_k(s.runs, sid, s.sweeps, TOP_K), group),
            Item(f"{n}_effects", f"Sweep {sid}{tag}: effect of each parameter", "table",
                 lambda s, k, sid=sid: sweeps.param_effects(s.runs, sid, s.sweeps), group),
            Item(f"{n}_best_per_level", f"Sweep {sid}{tag}: best setting per level of another parameter", "table",
                 lambda s, k, sid=sid: sweeps.param_interactions(s.runs, sid, s.sweeps), group),
            Item(f"{n}_importance", f"Sweep {sid}{tag}: parameter importance (PED-ANOVA)", "table",
                 lambda s, k, sid=sid: sweeps.importance_table(s.runs, sid, s.sweeps), group),
            Item(f"{n}_effects_plot", f"Sweep {sid}{tag}: objective vs each parameter", "figure",
                 lambda s, k, sid=sid: sweeps.effects_figure(s.runs, sid, s.sweeps), group),
        ]
    return items


class ReportError(ValueError):
    """A `raygen report` request refused before anything is written (one line for the CLI)."""


class ReportFilterError(ReportError):
    """A `raygen report` filter value that matches no run of the store."""


def _check_out_dir(out: Path) -> None:
    """The report's files (README.md, .csv, .png) inside a store's runs/, metrics/ or artifacts/ folder would
    break every plain reader of that folder (`pd.read_parquet("results/runs")` reads every file in it)."""
    for folder in (out.resolve(), *out.resolve().parents):
        if folder.name in ("runs", "metrics", "artifacts") and all(
                (folder.parent / sub).is_dir() for sub in ("runs", "metrics")):
            raise ReportError(f"--out {out} lies inside the results store folder {folder}; plain Parquet readers "
                              "of that folder would read the report's files too. Write it elsewhere")


@dataclass(frozen=True)
class ReportFilter:
    """Which runs the report considers (`raygen report --sweep/--dataset/--run/--include-smoke`). Empty
    tuples mean no restriction; several values of one option are alternatives (OR), options combine (AND)."""

    sweeps: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()
    include_smoke: bool = False

    def describe(self) -> str:
        parts = [f"{name} in {', '.join(values)}" for name, values in
                 (("sweep", self.sweeps), ("dataset", self.datasets), ("run", self.runs)) if values]
        if self.include_smoke:
            parts.append("smoke runs included")
        return "; ".join(parts) or "all runs"

    def unmatched(self, store: Store) -> list[str]:
        """One line per filter value that names no run of the store (a typo would otherwise build an empty
        report and exit 0)."""
        runs = store.runs
        col = (lambda c: runs[c].dropna().astype(str) if c in runs.columns else pd.Series([], dtype=str))
        ids, datasets = col("run_id"), set(col("dataset"))
        known_sweeps = set(col("sweep_id")) | set(store.sweeps)
        bad = [f"--sweep {s}: no such sweep (known: {', '.join(sorted(known_sweeps)) or 'none'})"
               for s in self.sweeps if s not in known_sweeps]
        for d in self.datasets:
            if d not in datasets:
                close = [k for k in sorted(datasets) if k.lower() == d.lower()]
                hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(sorted(datasets)) or 'none'}"
                bad.append(f"--dataset {d}: no run on this dataset ({hint})")
        bad += [f"--run {r}: no run id is or starts with it" for r in self.runs if not ids.str.startswith(r).any()]
        return bad

    def apply(self, store: Store) -> Store:
        runs = store.runs
        bad = self.unmatched(store)
        if bad:
            raise ReportFilterError("; ".join(bad))
        if runs.empty or not (self.sweeps or self.datasets or self.runs):
            return store
        mask = pd.Series(True, index=runs.index)
        if self.sweeps:
            sweep = runs["sweep_id"].astype(object) if "sweep_id" in runs.columns else pd.Series(None, index=runs.index)
            mask &= sweep.isin(self.sweeps)
        if self.datasets:
            mask &= runs["dataset"].isin(self.datasets)
        if self.runs:
            ids = runs["run_id"].astype(str)
            # A run id or a unique prefix of one (as `raygen sample/evaluate` accept).
            mask &= ids.map(lambda r: any(r == want or r.startswith(want) for want in self.runs))
        kept = runs[mask]
        specs = {k: v for k, v in store.sweeps.items() if not self.sweeps or k in self.sweeps}
        filtered = Store(store.root, kept.reset_index(drop=True), store.artifacts, specs)
        if store._metrics is not None:
            filtered._metrics = store._metrics[store._metrics["run_id"].isin(set(kept["run_id"]))]
        else:
            filtered._metrics = read_metrics_fast(store.root, kept["run_id"])
        return filtered


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
        if exists(source) if is_remote(source) else source.is_file():
            target = tables_dir / "thumbs" / f"{slug(run_id)}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read_bytes(source))  # the store may be on object storage (s3://...)
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


MAX_IDS = 8  # run ids listed per line of the index (the CSV beside each table has them all)


def _ids(ids: list[str], smoke: set[str] = frozenset()) -> str:
    shown = ", ".join(f"`{r}`" + (" (smoke run)" if r in smoke else "") for r in ids[:MAX_IDS])
    return shown + (f" and {len(ids) - MAX_IDS} more" if len(ids) > MAX_IDS else "")


def _runs_section(summary: ReportSummary) -> list[str]:
    """For each built item with a run selection: which runs filled it, which were left out and why."""
    out = summary.out_dir
    lines = ["", "## Runs behind each table and figure", "",
             ("Only runs on the paper's data with the paper's settings fill a published cell; the others are in "
             "the item's 'ours, other data' table. Each item's full list is in its `.runs.csv`."), ""]
    any_item = False
    for b in summary.built:
        if b.ledger is None:
            continue
        any_item = True
        ledger = b.ledger
        used = ledger.loc[ledger["used"], "run_id"].tolist()
        # A smoke run used by a table (`--include-smoke` only) is named as one.
        smoke = set(ledger.loc[ledger["smoke"], "run_id"]) if "smoke" in ledger.columns else set()
        lines.append(f"### {b.title}")
        lines.append("")
        if b.protocol:
            lines.append(f"- needs: {b.protocol}")
        lines.append(f"- used ({len(used)}): {_ids(used, smoke) if used else 'none'}")
        left = ledger[~ledger["used"]]
        for why, group in left.groupby("why", sort=True):
            lines.append(f"- left out ({len(group)}): {why}: {_ids(group['run_id'].tolist())}")
        if b.runs_file is not None:
            lines.append(f"- all runs: [{b.runs_file.name}]({b.runs_file.relative_to(out).as_posix()})")
        lines.append("")
    return lines if any_item else []


def _write_index(summary: ReportSummary, store: Store, filt: ReportFilter) -> None:
    out = summary.out_dir
    lines = [
        "# raygen report",
        "",
        f"Results store: `{store.root if is_remote(store.root) else store.root.resolve()}` — {_store_summary(store)}.",
        f"Runs considered: {filt.describe()}."
        + ("" if filt.include_smoke else " Smoke runs are left out of every paper table (`--include-smoke`)."),
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} in {summary.seconds:.1f} s.",
        "",
        f"## Built ({len(summary.built)})",
        "",
        "| item | kind | files |",
        "|---|---|---|",
    ]
    for b in summary.built:
        links = " ".join(f"[{f.name if 'other_data' in f.name else f.suffix[1:]}]({f.relative_to(out).as_posix()})"
                         for f in b.files)
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
    lines += _runs_section(summary)
    legend = ("Tables: ours = mean over the n runs of a cell (one model config, several seeds); ± = std over those "
              "seeds, or, for n = 1, the run's own std over repeated evaluations (standard error for Parzen) when "
              "it has one; otherwise the cell says n = 1. CSV files hold the full-precision numbers.")
    lines += ["", legend, ""]
    summary.index.write_text("\n".join(lines), encoding="utf-8")


def build_report(results_dir: str | Path, out_dir: str | Path, *, filters: ReportFilter | None = None
                 ) -> ReportSummary:
    """Write every table (Markdown, LaTeX, CSV) and figure (PNG, PDF) the store supports, and an index
    (out_dir/README.md) listing what was built, which runs each published table used and left out (and why),
    and, for the rest, why not and which runs are needed."""
    start = time.perf_counter()
    filt = filters or ReportFilter()
    out = Path(out_dir)
    _check_out_dir(out)
    store = filt.apply(load_store(results_dir))
    out.mkdir(parents=True, exist_ok=True)
    tables_dir, figures_dir = out / "tables", out / "figures"
    summary = ReportSummary(out, out / "README.md")
    with matplotlib.rc_context(PAPER_RC):
        for item in paper_items() + dynamic_items(store, filt.include_smoke):
            try:
                result = item.build(store, filt.include_smoke)
            except MissingData as missing:
                summary.skipped.append(SkippedItem(item.name, item.title, item.kind, missing.reason, missing.needs))
                log.info("not built: %s (%s)", item.name, missing.reason)
                continue
            except Exception as err:
                log.exception("builder %s failed", item.name)
                summary.errors.append(SkippedItem(item.name, item.title, item.kind, f"{type(err).__name__}: {err}", ""))
                continue
            sel = selection_of(result)
            if item.kind == "table":
                _thumbnails(store, result, tables_dir)
                files = write_table(result, tables_dir, item.name)
                if sel is not None and sel.other_table is not None:
                    files += write_table(sel.other_table, tables_dir, f"{item.name}_other_data")
            else:
                files = write_figure(result, figures_dir, item.name)
            built = BuiltItem(item.name, item.title, item.kind, files)
            if sel is not None:
                built.ledger = sel.ledger()
                built.protocol = sel.protocol.describe() if sel.protocol else ""
                built.runs_file = (tables_dir if item.kind == "table" else figures_dir) / f"{item.name}.runs.csv"
                built.ledger.to_csv(built.runs_file, index=False)
            summary.built.append(built)
            log.info("built %s", item.name)
    summary.seconds = time.perf_counter() - start
    _write_index(summary, store, filt)
    log.info("report: %d built, %d not built, %d errors -> %s", len(summary.built), len(summary.skipped),
             len(summary.errors), summary.index)
    return summary


__all__ = ["BuiltItem", "ReportFilter", "ReportSummary", "SkippedItem", "build_report", "paper_items", "to_markdown"]
