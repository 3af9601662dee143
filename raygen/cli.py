"""The `raygen` command: a thin layer over config building, runners, the store and analysis."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import typer

from raygen.config import ConfigError

# Set before torch is imported (commands import it lazily). When cores are shared with other runs or Ray
# workers, OpenMP threads that spin while waiting made training steps 8-13x slower here; passive waiting
# costs little on an idle machine. An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
log = logging.getLogger("raygen")


def _print_version(value: bool) -> None:
    if value:
        from raygen import __version__

        typer.echo(f"raygen {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print raygen's version and exit"),
) -> None:
    """Train, sweep and analyse learned-transition-operator generative models and sequence models."""

RESULTS_HELP = "results store directory"
OVERRIDES_HELP = "config overrides KEY=VALUE (e.g. train.lr=1.0e-3, algo.omega=0.02, or a unique bare key)"


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _stop_on_sigterm() -> None:
    """A terminated run is recorded as `stopped` (like Ctrl-C), never left `running` in the store."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _expected_failure(err: BaseException) -> tuple[str, int] | None:
    """(one-line message, exit code) for failures a user causes or meets (bad input, no GPU, NaN loss, no
    memory, a read-only or full store); None for anything else, which keeps its traceback (a bug)."""
    import errno

    from raygen.algorithms.base import NonFiniteLossError
    from raygen.data import DataError
    from raygen.engine.local import (
        CheckpointError,
        RunSetupError,
        describe_os_error,
        first_line,
        is_out_of_memory,
    )
    from raygen.results.store import is_request_failure

    if isinstance(err, (ConfigError, DataError, RunSetupError, CheckpointError, FileNotFoundError)):
        message, code = str(err), 2
    elif isinstance(err, KeyError):  # find_run: unknown or ambiguous run
        message, code = str(err.args[0]), 2
    elif isinstance(err, NonFiniteLossError):
        message, code = f"the loss became NaN or infinite ({err}); try a lower train.lr or train.grad_clip", 1
    elif isinstance(err, (FloatingPointError, ValueError)) and getattr(err, "raygen_run_id", None) and \
            _diverged(err):  # e.g. a noise scale that underflowed to 0 ("std must be > 0")
        message, code = (f"training diverged ({type(err).__name__}: {first_line(err)}); try a lower train.lr or "
                         "train.grad_clip"), 1
    elif is_out_of_memory(err):
        message, code = f"out of memory ({first_line(err)}); make the networks or train.batch_size smaller", 1
    elif isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                                    errno.EPERM, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        # EEXIST/ENOTDIR/EISDIR: a file where the store keeps a folder (`.locks`, `runs`) or the reverse
        message, code = f"cannot write the results store: {describe_os_error(err)}", 1
    elif is_request_failure(err):  # an unreachable endpoint, a denied request (its text names which)
        message, code = f"object store request failed: {' '.join(str(err).split())}", 1
    elif isinstance(err, KeyboardInterrupt):
        message, code = "interrupted; the run is recorded as stopped", 130
    elif getattr(err, "worker_failures", None) is not None:  # Ray Train: name the worker's error, not Ray's
        from raygen.engine.ray_train import root_cause

        message, code = first_line(RuntimeError(root_cause(err))), 1
    else:
        return None
    run_id = getattr(err, "raygen_run_id", None)
    return (f"run {run_id} failed: {message}" if run_id and code != 130 else message), code


def _diverged(err: BaseException) -> bool:
    from raygen.engine.sweep import is_divergence  # the one definition of divergence (sweeps never retry it)

    return is_divergence(err)


class _OneLine:
    """`with _OneLine(verbose):` turns expected failures into one red line (`--verbose`: the traceback too)."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, tb) -> bool:
        if err is None or isinstance(err, (typer.Exit, typer.Abort, SystemExit)):
            return False
        expected = _expected_failure(err)
        if expected is None or self.verbose:
            return False  # the traceback
        message, code = expected
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code)


def _train_overrides(
    overrides: list[str] | None, steps: int | None, seed: int | None, device: str | None
) -> dict[str, Any]:
    from raygen.config import parse_override

    out: dict[str, Any] = dict(parse_override(o) for o in overrides or [])
    if steps is not None:
        out["train.steps"] = steps
    if seed is not None:
        out["seed"] = seed
    if device is not None:
        out["device"] = device
    return out


@app.command()
def train(
    algorithm: str | None = typer.Argument(None, help="walkback | infusion | professor | teacher | scheduled"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="dataset name (see `raygen datasets`)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file"),
    steps: int | None = typer.Option(None, "--steps", help="training budget in optimizer updates"),
    seed: int | None = typer.Option(None, "--seed", help="random seed of the run (config key seed)"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | auto"),
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    resume: str | None = typer.Option(None, "--resume", metavar="RUN", help="continue a lost, failed or stopped "
                                      "local run from its last checkpoint, under the same run id (no other "
                                      "arguments: its config is in the checkpoint)"),
    workers: int | None = typer.Option(None, "--workers", help="data-parallel Ray Train workers"),
    gpu: bool = typer.Option(False, "--gpu", help="one GPU per Ray Train worker (nccl)"),
    max_failures: int = typer.Option(2, "--max-failures", help="with --workers: restarts from the last "
                                     "checkpoint after a worker or node failure (-1: unlimited)"),
    address: str | None = typer.Option(None, "--address", help="with --workers: Ray cluster address "
                                          "(default: $RAY_ADDRESS, else a private local Ray)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging, tracebacks of errors, and (with "
                                 "--workers) Ray's own output"),
) -> None:
    """Train ALGORITHM; results, checkpoint and pictures land in the results store."""
    _setup_logging(verbose)
    if resume is not None:
        # typer hands a key=value typed after --resume RUN in as ALGORITHM: say what was typed
        typed = [v for v in (algorithm, *(overrides or [])) if v]
        settings = " ".join(v for v in typed if "=" in v)
        given = [f"ALGORITHM {v}" for v in typed if "=" not in v] + ([f"the overrides {settings}"] if settings else [])
        given += [name for name, value in (("--dataset", dataset), ("--config", config), ("--steps", steps),
                                           ("--seed", seed), ("--device", device), ("--workers", workers)) if value]
        if given:
            _fail(f"--resume takes the run's config from its checkpoint; drop {', '.join(given)}")
        from raygen.engine.local import resume_local

        _stop_on_sigterm()
        with _OneLine(verbose):
            typer.echo(resume_local(results, resume))
        return
    if algorithm is None:
        _fail("missing ALGORITHM (or --resume RUN)")
    from raygen.config import build_config

    with _OneLine(verbose):
        cfg = build_config(
            algorithm=algorithm,
            dataset=dataset,
            file=config,
            overrides=_train_overrides(overrides, steps, seed, device),
        )
    _stop_on_sigterm()
    with _OneLine(verbose):
        if workers is None:
            from raygen.engine.local import run_local

            run_id = run_local(cfg, results)
        else:
            from raygen.engine.ray_train import run_distributed

            run_id = run_distributed(cfg, results, workers=workers, use_gpu=gpu, max_failures=max_failures,
                                     address=address, verbose=verbose)
    typer.echo(run_id)


@app.command()
def sample(
    run: str = typer.Argument(..., help="run id, unique prefix, or 'latest'"),
    n: int = typer.Option(64, "--n", help="number of samples"),
    chain_steps: int | None = typer.Option(None, "--chain-steps", help="length of T=1 chains (walkback)"),
    seed: int = typer.Option(0, "--seed", help="random seed of the sampling noise"),
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | auto (default: the run's device)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging, and tracebacks of errors"),
) -> None:
    """Draw new samples and chains from a run's checkpoint; writes pictures next to the run's files."""
    _setup_logging(verbose)
    from raygen.api import sample_run  # the same code as the Python API's Run.sample

    with _OneLine(verbose):
        out = sample_run(results, run, n=n, seed=seed, chain_steps=chain_steps, device=device, array=False)
    for path in out.paths:
        typer.echo(path)


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="run id, unique prefix, or 'latest'"),
    overrides: list[str] | None = typer.Argument(None, help="eval.* overrides, e.g. eval.parzen_samples=1000"),
    seed: int = typer.Option(0, "--seed", help="random seed of the sampling noise"),
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | auto (default: the run's device)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging, and tracebacks of errors"),
) -> None:
    """Run the evaluation suite on the test split (and eval.splits) and append the numbers to the store."""
    _setup_logging(verbose)
    from raygen.api import evaluate_run  # the same code as the Python API's Run.evaluate
    from raygen.config import parse_override

    with _OneLine(verbose):
        parsed = dict(parse_override(o) for o in overrides or [])
        metrics = evaluate_run(results, run, parsed, seed=seed, device=device)
    for key, value in sorted(metrics.items()):
        typer.echo(f"{key}\t{value:.6g}")


def _presence(info) -> str:
    if info.present is None:
        return "-"
    if info.present:
        return "yes"
    # e.g. MNIST with only its t10k file: usable with data.mnist_split=test-only, so say which file is there
    return "partial" if len(info.missing) < len(info.locations) else "no"


@app.command()
def datasets(
    root: Path | None = typer.Option(None, "--root", help="data directory (default $RAYGEN_DATA or ~/.raygen/data)"),
) -> None:
    """List datasets, where each is looked for, and whether it is present."""
    from rich.console import Console
    from rich.table import Table

    from raygen.data import DataConfig, list_datasets

    table = Table("dataset", "kind", "present", "looked for at", "description")
    for info in list_datasets(DataConfig(root=str(root) if root else None)):
        table.add_row(info.name, info.kind, _presence(info), "\n".join(info.locations), info.description)
    Console().print(table)  # the terminal's width


def _require_store(results: Path) -> None:
    from raygen.results.store import store_problem

    problem = store_problem(results)
    if problem is not None:
        _fail(f"{problem}; pass the folder `raygen train` or `raygen sweep` wrote with --results")


def _metric_cell(value: Any) -> str:
    import math

    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{number:.4g}"


def _objective_columns(row: Any) -> tuple[str, str, str]:
    """(objective name, its latest valid value, its test value) from a run row's final.* columns (the latest
    stored values: a running run's heartbeat refreshes them)."""
    from raygen.engine.loggers import objective_values

    values = {k.removeprefix("final."): v for k, v in row.items() if k.startswith("final.")}
    values = {k: v for k, v in values.items() if v is not None and v == v}  # noqa: PLR0124 - NaN test
    name = row.get("config.train.select_metric") or None
    # the metric the final evaluation's model selection used is stored (selection/<metric>): no need to import
    # the algorithm (torch, seconds) for a finished run; `raygen runs` on 10 000 runs must take under 2 s
    name = name or next((k.split("/", 1)[1] for k in values if k.startswith("selection/") and k != "selection/step"),
                        None)
    if not name:
        from raygen.algorithms import algorithm_class

        try:
            selection = algorithm_class(str(row.get("algorithm"))).selection
        except KeyError:  # a run of an algorithm this raygen does not know
            selection = None
        name = selection[0] if selection else None
    shown = objective_values(values, name)
    key = next((k for k in shown if k.startswith("valid/")), next(iter(shown), None))
    if key is None:
        return "-", "-", "-"
    split, metric = key.split("/", 1)
    return metric, _metric_cell(shown[key]) if split == "valid" else "-", _metric_cell(values.get(f"test/{metric}"))


@app.command()
def runs(
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    status: list[str] | None = typer.Option(None, "--status", help="only runs with this status: running, lost, "
                                            "completed, failed, stopped (repeat for several)"),
    algorithm: list[str] | None = typer.Option(None, "--algorithm", help="only runs of this algorithm (repeat "
                                               "for several)"),
    sweep_id: list[str] | None = typer.Option(None, "--sweep", help="only the trials of this sweep id (repeat "
                                              "for several)"),
    metric: list[str] | None = typer.Option(None, "--metric", help="add a column with this metric's latest value, "
                                            "e.g. test/parzen_ll (repeat for several)"),
    lost_after: float | None = typer.Option(None, "--lost-after", metavar="SECONDS", help="a running run whose "
                                            "heartbeat is older than this is shown lost (default: "
                                            "$RAYGEN_LOST_AFTER_S, else 600)"),
    repair: bool = typer.Option(False, "--repair", help="mark lost runs failed for good (error: lost since ...); "
                                "`raygen train --resume RUN` can then continue them"),
) -> None:
    """List the runs in a results store: status (a running run whose heartbeat stopped is `lost`), the update
    and wall time reached (a running run: as of its newest heartbeat or metric row), and its objective:
    valid(quick) is the latest in-training check (train.eval_examples validation examples, one quick estimate),
    test(final) the full evaluation after training (eval.*): different protocols, not to be compared."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from raygen.lifecycle import effective_status, live_progress
    from raygen.lifecycle import lost_after as checked_lost_after
    from raygen.lifecycle import repair as repair_lost
    from raygen.results import read_runs

    try:  # the flag or $RAYGEN_LOST_AFTER_S, both held to the one rule (longer than the heartbeat interval)
        lost_after = checked_lost_after(lost_after)
    except ValueError as err:
        _fail(str(err))
    _require_store(results)
    with _OneLine(verbose=False):  # a denied or failed object-store request: one line, not an empty table
        if repair:
            for run_id in repair_lost(results, after_s=lost_after):
                typer.echo(f"marked lost run {run_id} failed", err=True)
        frame = read_runs(results)
    if not frame.empty:
        frame = frame.assign(shown=effective_status(frame, after_s=lost_after)).sort_values("started_at")
        keep = pd.Series(True, index=frame.index)
        if status:
            keep &= frame["shown"].isin(status)
        if algorithm:
            keep &= frame["algorithm"].isin(algorithm)
        if sweep_id:
            keep &= frame["sweep_id"].isin(sweep_id) if "sweep_id" in frame else False
        frame = frame[keep]
    extra = list(metric or [])
    # valid(quick) and test(final) come from different protocols (see the docstring): the names say so, in a
    # form that stays one word per column when piped
    header = ("run_id", "algorithm", "dataset", "status", "step", "wall_s", "objective", "valid(quick)",
              "test(final)", *extra)
    progress = live_progress(results, frame) if not frame.empty else {}
    rows = []
    for row in frame.to_dict("records") if not frame.empty else []:
        steps, wall = row["steps"], row["wall_time_s"]
        if row["status"] == "running":  # not ended: as of its newest heartbeat or metric row
            seen = [(row.get("heartbeat_step", steps), row["heartbeat_at"])] if pd.notna(row.get("heartbeat_at")) \
                else []
            seen += [progress[row["run_id"]]] if row["run_id"] in progress else []
            if seen:
                steps = max((step for step, _ in seen if pd.notna(step)), default=steps)
                at = max(pd.Timestamp(t) for _, t in seen)
                wall = (at - pd.Timestamp(row["started_at"])).total_seconds()
        rows.append((row["run_id"], row["algorithm"], row["dataset"], row["shown"],
                     str(int(steps)) if pd.notna(steps) else "-", f"{wall if pd.notna(wall) else 0:.1f}",
                     *_objective_columns(row), *(_metric_cell(row.get(f"final.{m}")) for m in extra)))
    # Piped or a sweep's worth of rows: plain aligned columns, nothing cut (rich takes seconds per thousand rows,
    # and a pipe has no width to fit). In a terminal: a table as wide as the terminal, run ids never cut.
    if len(rows) > 200 or not sys.stdout.isatty():
        widths = [max([len(h), *(len(str(r[i])) for r in rows)]) for i, h in enumerate(header)]
        typer.echo("\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()
                              for r in [header, *rows]))
        return
    table = Table()
    for h in header:
        table.add_column(h, no_wrap=h == "run_id", overflow="fold")
    for r in rows:
        table.add_row(*r)
    Console().print(table)


@app.command()
def compact(
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    running: bool = typer.Option(False, "--running", help="also fold the pieces of runs still running (what "
                                 "they write later stays in pieces until they end)"),
) -> None:
    """Fold the metric and artifact pieces of ended runs into the store's segments and refresh the run-row
    cache. Runs fold their own pieces when they end; this finishes what a kill interrupted. Safe while runs
    write (docs/results.md)."""
    from raygen.results import compact as compact_store

    _require_store(results)
    with _OneLine(verbose=False):  # a read-only or full store: one line naming the file, not a traceback
        done = compact_store(results, running=running)
    typer.echo(f"folded {done['metrics']} metric and {done['artifacts']} artifact pieces in {results}")


@app.command("config")
def show_config(
    algorithm: str = typer.Argument(..., help="algorithm name (see `raygen train --help`)"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name (see `raygen datasets`)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file"),
    explain: bool = typer.Option(False, "--explain", help="one line per field: its value, where the value came "
                                 "from (default, preset, file, argument: ALGORITHM or --dataset, or override) "
                                 "and what it means"),
) -> None:
    """Print the fully resolved config as YAML (a starting point for --config files), or with --explain each
    field's value, source and description."""
    from raygen.config import build_config, explain_config, parse_override

    try:
        parsed = dict(parse_override(o) for o in overrides or [])
        if explain:
            rows = explain_config(algorithm=algorithm, dataset=dataset, file=config, overrides=parsed)
        else:
            cfg = build_config(algorithm=algorithm, dataset=dataset, file=config, overrides=parsed)
    except (ConfigError, KeyError) as err:
        _fail(str(err.args[0] if isinstance(err, KeyError) else err))
    if not explain:
        typer.echo(cfg.to_yaml())
        return
    width = min(48, max(len(f"{key} = {value!r}") for key, value, _, _ in rows))  # a long tuple may overrun
    for key, value, source, description in rows:
        typer.echo(f"{f'{key} = {value!r}':{width}}  [{source}]" + (f"  {description}" if description else ""))


@app.command()
def sweep(
    args: list[str] = typer.Argument(..., metavar="[validate] SPEC", help="sweep YAML (sweeps/*.yaml); "
                                     "`raygen sweep validate SPEC` prints the resolved search space and exits"),
    smoke: bool = typer.Option(False, "--smoke", help="the spec's miniature: few trials, few steps, ~1 minute"),
    resume: bool = typer.Option(False, "--resume", help="require an existing sweep to resume (it resumes "
                                "automatically anyway when its directory exists)"),
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address; 'auto' = the cluster "
                                          "`ray start` made here (default: $RAY_ADDRESS, else a private local Ray)"),
    more: int = typer.Option(0, "--more", help="add N trials to a finished sweep's Optuna study"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Ray's and Tune's own output too"),
) -> None:
    """Run a Ray Tune + Optuna sweep from a YAML spec; every trial lands in the results store."""
    _setup_logging(verbose)
    from raygen.engine.sweep_spec import SpecError, load_spec

    validate = len(args) == 2 and args[0] == "validate"
    if len(args) != 1 and not validate:
        _fail("usage: raygen sweep SPEC [options]  |  raygen sweep validate SPEC [--smoke]")
    try:
        spec = load_spec(args[-1], smoke=smoke)
    except SpecError as err:
        _fail(f"{args[-1]}: {err}")
    if validate:
        typer.echo(spec.describe())
        return
    from raygen.engine.sweep import progress_log, run_sweep

    table = logging.StreamHandler(sys.stdout)  # the live table, bare (no time/level prefix)
    table.setFormatter(logging.Formatter("%(message)s"))
    progress_log.addHandler(table)
    progress_log.propagate = False
    try:
        outcome = run_sweep(spec, results, resume=True if resume else None, more=more, address=address,
                            verbose=verbose, table_every_s=10.0 if smoke else 30.0)
    except SpecError as err:
        _fail(str(err))
    for line in outcome.summary():
        typer.echo(line)


def _register_analysis() -> None:
    from raygen.analysis_cli import register

    register(app)


_register_analysis()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
