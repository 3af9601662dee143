"""`raygen report` and `raygen dashboard`: thin commands over analysis/ (which reads Parquet only, never Ray).

raygen/cli.py registers them as `app.command("report")(report)` and `app.command("dashboard")(dashboard)`.
Parameters use `Annotated`, so these are also plain functions: `report(Path("results"), Path("report"))`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("raygen")


def _logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S", stream=sys.stderr)


RESULTS_OPTION = typer.Option("--results", help="results store directory (as in every other command; the "
                              "positional RESULTS is the same)")


def _store(results: Path, option: Path | None) -> Path:
    """The store named by --results (spelled as in every raygen command) or, for old scripts, positionally."""
    if option is not None and results != Path("results") and option != results:
        typer.secho(f"error: two results stores given ({results} and --results {option}); pass one",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    return option if option is not None else results


def _check_store(results: Path) -> None:
    from raygen.results.store import store_problem

    problem = store_problem(results)
    if problem is not None:
        typer.secho(f"error: {problem} (run `raygen train` or `raygen sweep` first, or pass the folder they wrote)",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)


def report(
    results: Annotated[Path, typer.Argument(help="results store directory")] = Path("results"),
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")] = Path("reports/latest"),
    sweep: Annotated[list[str] | None, typer.Option(
        "--sweep", help="only runs of this sweep id (repeat for several)")] = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="only runs on this dataset, e.g. mnist (repeat for several)")] = None,
    run: Annotated[list[str] | None, typer.Option(
        "--run", help="only runs whose id is or starts with this (repeat for several)")] = None,
    include_smoke: Annotated[bool, typer.Option(
        "--include-smoke", help="let smoke runs (`raygen sweep --smoke`) into the paper tables")] = False,
    results_option: Annotated[Path | None, RESULTS_OPTION] = None,
) -> None:
    """Rebuild the papers' tables (Markdown, LaTeX, CSV) and figures (PNG, PDF) from a results store, with
    the published numbers beside ours. Only runs on the paper's data and settings fill a published cell
    (others go to an "ours, other data" table); OUT/README.md says which runs each table used and left out,
    and why, and for what was not built, which runs are needed."""
    _logging()
    results = _store(results, results_option)
    _check_store(results)
    from analysis.report import ReportError, ReportFilter, build_report

    filters = ReportFilter(tuple(sweep or ()), tuple(dataset or ()), tuple(run or ()), include_smoke)
    try:
        summary = build_report(results, out, filters=filters)
    except (OSError, ReportError) as err:  # OSError: not a store, or a failed object-store request
        typer.secho(f"error: {' '.join(str(err).split())}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{len(summary.built)} tables/figures written to {out} ({summary.index}); "
               f"{len(summary.skipped)} not built (the index says which runs they need)")
    for item in summary.errors:
        typer.secho(f"builder {item.name} failed: {item.reason}", fg=typer.colors.RED, err=True)
    if summary.errors:
        raise typer.Exit(1)


def dashboard(
    results: Annotated[Path, typer.Argument(help="results store directory")] = Path("results"),
    host: Annotated[str, typer.Option("--host", help="interface to listen on (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 8765,
    html: Annotated[bool, typer.Option(
        "--html", help="write the dashboard as one self-contained HTML file (--out, default dashboard.html) "
        "instead of serving it")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the HTML file to write (implies --html)")] = None,
    results_option: Annotated[Path | None, RESULTS_OPTION] = None,
    ctx: typer.Context = None,  # type: ignore[assignment]  # None when called as a plain function
) -> None:
    """Explore sweeps in the browser: trials table, parallel coordinates, importance, learning curves, Pareto
    front and samples. Works offline; the page refreshes while a sweep is still writing."""
    _logging()
    # The old spelling `--html FILE`: FILE lands in the positional RESULTS (`--html FILE`) or after it
    # (`R --html FILE`: typer's "unexpected extra argument"), and the error would be about a missing store,
    # two stores or an extra argument instead of the changed option. The command takes extra arguments
    # (`register`) to catch the second case.
    extra = list(ctx.args) if ctx is not None else []
    page = next((p for p in (results, *map(Path, extra)) if p.suffix.lower() in (".html", ".htm")
                 and not p.is_dir()), None)
    if html and out is None and page is not None:
        typer.secho(f"error: --html is a flag and takes no file; write `--html --out {page}` (the positional "
                    "argument is the results store)", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if extra:
        typer.secho(f"error: unexpected argument {' '.join(extra)}: the dashboard reads one results store "
                    "(the HTML file goes in --out)", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    results = _store(results, results_option)
    _check_store(results)
    from analysis.dashboard import export_dashboard, serve_dashboard

    try:
        if html or out is not None:  # a flag: `--html --results R` never takes `--results` for the output file
            path = export_dashboard(results, out or Path("dashboard.html"))
            typer.echo(f"dashboard written to {path}")
            return
        typer.echo(f"dashboard on http://{host}:{port}/ (Ctrl-C to stop)")
        serve_dashboard(results, host=host, port=port)
    except OSError as err:  # FileNotFoundError: not a store; others: a failed object-store request
        typer.secho(f"error: {' '.join(str(err).split())}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    """Add `report` and `dashboard` to the main CLI."""
    app.command("report")(report)
    app.command("dashboard", context_settings={"allow_extra_args": True})(dashboard)
