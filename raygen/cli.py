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
    algorithm: str = typer.Argument(..., help="walkback | infusion | professor | teacher | scheduled"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="dataset name (see `raygen datasets`)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file"),
    steps: int | None = typer.Option(None, "--steps", help="training budget in optimizer updates"),
    seed: int | None = typer.Option(None, "--seed"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda | auto"),
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    workers: int | None = typer.Option(None, "--workers", help="data-parallel Ray Train workers"),
    gpu: bool = typer.Option(False, "--gpu", help="one GPU per Ray Train worker (nccl)"),
    max_failures: int = typer.Option(2, "--max-failures", help="with --workers: restarts from the last "
                                     "checkpoint after a worker or node failure (-1: unlimited)"),
    address: str | None = typer.Option(None, "--address", help="with --workers: Ray cluster address "
                                          "(default: $RAY_ADDRESS, else a private local Ray)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train ALGORITHM; results, checkpoint and pictures land in the results store."""
    _setup_logging(verbose)
    from raygen.config import build_config

    try:
        cfg = build_config(
            algorithm=algorithm,
            dataset=dataset,
            file=config,
            overrides=_train_overrides(overrides, steps, seed, device),
        )
    except (ConfigError, KeyError) as err:
        _fail(str(err.args[0] if isinstance(err, KeyError) else err))
    from raygen.data import DataError

    _stop_on_sigterm()
    try:
        if workers is None:
            from raygen.engine.local import run_local

            run_id = run_local(cfg, results)
        else:
            from raygen.engine.ray_train import run_distributed

            run_id = run_distributed(cfg, results, workers=workers, use_gpu=gpu, max_failures=max_failures,
                                     address=address)
    except DataError as err:
        _fail(str(err))
    typer.echo(run_id)


@app.command()
def sample(
    run: str = typer.Argument(..., help="run id, unique prefix, or 'latest'"),
    n: int = typer.Option(64, "--n", help="number of samples"),
    chain_steps: int | None = typer.Option(None, "--chain-steps", help="length of T=1 chains (walkback)"),
    seed: int = typer.Option(0, "--seed"),
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    device: str | None = typer.Option(None, "--device"),
) -> None:
    """Draw new samples and chains from a run's checkpoint; writes pictures next to the run's files."""
    _setup_logging()
    import torch

    from raygen.engine.local import restore
    from raygen.results import RunRecorder

    overrides: dict[str, Any] = {"eval.sample_count": n}
    if chain_steps is not None:
        overrides["eval.chain_steps"] = chain_steps
    try:
        algo, dataset, cfg, run_id = restore(results, run, device=device, overrides=overrides)
    except (KeyError, FileNotFoundError, RuntimeError, ConfigError) as err:
        _fail(str(err.args[0] if isinstance(err, KeyError) else err))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    algo.eval()
    with torch.no_grad():
        artifacts = algo.artifacts(dataset, generator=generator)
    recorder = RunRecorder(results, cfg, run_id=run_id)
    for artifact in artifacts:
        name = f"sample-seed{seed}-{artifact.name}"
        typer.echo(recorder.save_file(algo.updates, name, artifact.kind, artifact.data))


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="run id, unique prefix, or 'latest'"),
    overrides: list[str] | None = typer.Argument(None, help="eval.* overrides, e.g. eval.parzen_samples=1000"),
    seed: int = typer.Option(0, "--seed"),
    results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP),
    device: str | None = typer.Option(None, "--device"),
) -> None:
    """Run the evaluation suite on the test split (and eval.splits) and append the numbers to the store."""
    _setup_logging()
    import torch

    from raygen.config import parse_override
    from raygen.engine.evaluate import evaluation_suite
    from raygen.engine.local import restore
    from raygen.engine.report import StoreReporter
    from raygen.results import RunRecorder

    parsed = dict(parse_override(o) for o in overrides or [])
    bad = [k for k in parsed if not k.startswith("eval.")]
    if bad:
        _fail(f"evaluate accepts only eval.* overrides, got {', '.join(bad)}")
    try:
        algo, dataset, cfg, run_id = restore(results, run, device=device, overrides=parsed)
    except (KeyError, FileNotFoundError, RuntimeError, ConfigError) as err:
        _fail(str(err.args[0] if isinstance(err, KeyError) else err))
    torch.manual_seed(seed)
    metrics, artifacts = evaluation_suite(algo, dataset, cfg, torch.Generator().manual_seed(seed), pictures=False)
    StoreReporter(RunRecorder(results, cfg, run_id=run_id))(algo.updates, metrics, artifacts=artifacts)
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
    Console(width=200).print(table)


@app.command()
def runs(results: Path = typer.Option(Path("results"), "--results", help=RESULTS_HELP)) -> None:
    """List the runs in a results store."""
    from rich.console import Console
    from rich.table import Table

    from raygen.results import read_runs

    frame = read_runs(results)
    table = Table("run_id", "algorithm", "dataset", "status", "steps", "wall_time_s")
    for row in frame.sort_values("started_at").itertuples() if not frame.empty else []:
        table.add_row(row.run_id, row.algorithm, row.dataset, row.status, str(row.steps), f"{row.wall_time_s or 0:.1f}")
    Console(width=200).print(table)


@app.command("config")
def show_config(
    algorithm: str = typer.Argument(...),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
    dataset: str = typer.Option(..., "--dataset", "-d"),
    config: Path | None = typer.Option(None, "--config", "-c"),
) -> None:
    """Print the fully resolved config as YAML (a starting point for --config files)."""
    from raygen.config import build_config, parse_override

    try:
        cfg = build_config(
            algorithm=algorithm, dataset=dataset, file=config, overrides=dict(parse_override(o) for o in overrides or [])
        )
    except (ConfigError, KeyError) as err:
        _fail(str(err.args[0] if isinstance(err, KeyError) else err))
    typer.echo(cfg.to_yaml())


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
    verbose: bool = typer.Option(False, "--verbose", "-v"),
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
    from raygen.engine.sweep import run_sweep

    try:
        outcome = run_sweep(spec, results, resume=True if resume else None, address=address,
                            verbose=2 if verbose else 1)
    except SpecError as err:
        _fail(str(err))
    typer.echo(f"sweep {outcome.sweep_id}: {outcome.trials} trials {outcome.statuses}")
    if outcome.best:
        typer.echo(f"best: {outcome.best}")


def _register_analysis() -> None:
    from raygen.analysis_cli import register

    register(app)


_register_analysis()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
