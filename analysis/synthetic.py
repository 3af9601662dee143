"""Synthetic results stores in the documented schema, for tests, the benchmark and trying the report.

Files are written exactly as `raygen.results.RunRecorder` writes them: a run row (runs/<run_id>.parquet),
about 21 metric pieces and one artifact piece per file while the run is in progress
(metrics/.pending/<run_id>-<writer>-<seq>.parquet, ...), folded into the shared segments
(metrics/seg-*.parquet) when the run has ended, and the files (files/<run_id>/...); the
`final.<split>/<metric>` columns hold each metric's latest finite value. The numbers are
made up (seeded); they only have to look like the papers' quantities so every builder has something to do.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from raygen.results import store as store_module
from raygen.results.store import (
    ARTIFACTS_SCHEMA,
    METRICS_SCHEMA,
    PENDING,
    atomic_write_bytes,
    atomic_write_table,
    latest_values,
    run_row_table,
)
from raygen.results.store import fold as fold_pieces

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of an (H, W) or (H, W, 3) array in [0, 1]."""
    import matplotlib.image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, np.clip(image, 0, 1), format="png", cmap="gray")
    return buf.getvalue()


@dataclass
class SyntheticRun:
    run_id: str
    algorithm: str
    dataset: str
    config: dict[str, Any] = field(default_factory=dict)  # flat "section.key" -> value
    curves: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)  # "split/metric" -> (steps, values)
    finals: dict[str, float] = field(default_factory=dict)  # logged once at the last step
    status: str = "completed"
    seed: int = 0
    sweep_id: str | None = None
    trial_id: str | None = None
    params: dict[str, Any] | None = None
    stopped_early: bool = False
    images: dict[str, bytes] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    checkpoints: list[int] = field(default_factory=list)  # steps at which checkpoint.pt was saved
    started: datetime = T0


def _number(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    return json.dumps(v, sort_keys=True)


def _writer(run_id: str) -> str:
    """A fixed writer id per run (RunRecorder draws a random one), so that a seeded store is reproducible."""
    return hashlib.sha1(run_id.encode()).hexdigest()[:12]


def _tables(root: Path, run: SyntheticRun, metric_files: int) -> tuple[list, list, pa.Table]:
    """(metric pieces, artifact pieces, run row) of one run as RunRecorder would name and fill them; each
    piece is (file name, table). Writes the artifact files themselves."""
    last_step = max([s for steps, _ in run.curves.values() for s in steps] + [int(run.config.get("train.steps", 0))])
    rows = []
    for key, (steps, values) in run.curves.items():
        split, _, metric = key.partition("/")
        for i, (s, v) in enumerate(zip(steps, values)):
            rows.append((str(split), str(metric), int(s), float(v), i))
    for key, value in run.finals.items():
        split, _, metric = key.partition("/")
        rows.append((split, metric, last_step, float(value), 0))
    rows.sort(key=lambda r: (r[2], r[4]))
    writer, seq = _writer(run.run_id), 0
    metric_pieces, art_pieces = [], []
    if rows:
        table = pa.table({
            "run_id": [run.run_id] * len(rows),
            "step": [r[2] for r in rows],
            "split": [r[0] for r in rows],
            "metric": [r[1] for r in rows],
            "value": [r[3] for r in rows],
            "time": [run.started + timedelta(seconds=r[2]) for r in rows],
        }, schema=METRICS_SCHEMA)
        # Cut at step boundaries into at most `metric_files` pieces, as one flush per report would.
        steps = np.asarray(table["step"].to_numpy())
        bounds = sorted({int(np.searchsorted(steps, steps[i])) for i in
                         np.linspace(0, len(rows), max(1, metric_files), endpoint=False).astype(int)} | {len(rows)})
        for lo, hi in itertools.pairwise(bounds):
            metric_pieces.append((f"{run.run_id}-{writer}-{seq:06d}.parquet", table.slice(lo, hi - lo)))
            seq += 1
        final = latest_values(table.to_pandas()).get(run.run_id, {})
    else:
        final = {}
    files = [*((last_step, k, "image", v) for k, v in run.images.items()),
             *((last_step, k, "text", v.encode()) for k, v in run.texts.items()),
             *((s, "checkpoint.pt", "checkpoint", b"synthetic checkpoint") for s in run.checkpoints)]
    for step, name, kind, data in files:
        path = root / "files" / run.run_id / name
        atomic_write_bytes(path, data)
        art = pa.Table.from_pylist([{"run_id": run.run_id, "step": step, "name": name, "kind": kind,
                                     "path": str(path.relative_to(root)),
                                     "time": run.started + timedelta(seconds=step)}], schema=ARTIFACTS_SCHEMA)
        art_pieces.append((f"{run.run_id}-{writer}-{seq:06d}.parquet", art))
        seq += 1
    ended = run.started + timedelta(seconds=10 + last_step) if run.status != "running" else None
    nested: dict[str, Any] = {}
    for key, value in run.config.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    row: dict[str, Any] = {
        "run_id": run.run_id, "algorithm": run.algorithm, "dataset": run.dataset, "status": run.status,
        "error": "NonFiniteLossError: loss is nan" if run.status == "failed" else None,
        "seed": run.seed, "device": "cpu", "workers": 1, "sweep_id": run.sweep_id, "trial_id": run.trial_id,
        "params_json": json.dumps(run.params, sort_keys=True) if run.params is not None else None,
        "resources_json": None, "stopped_early": run.stopped_early, "smoke": False, "node": "synthetic",
        "started_at": run.started, "ended_at": ended,
        "wall_time_s": (ended - run.started).total_seconds() if ended else None, "steps": last_step,
        "heartbeat_at": ended or run.started + timedelta(seconds=last_step), "heartbeat_step": last_step,
        "config_json": json.dumps({"algorithm": run.algorithm, "dataset": run.dataset, "seed": run.seed, **nested},
                                  sort_keys=True),
        "versions_json": "{}", "git_commit": None,
        "final_at_json": json.dumps({k: pd.Timestamp(t).isoformat() for k, (_, t) in sorted(final.items())}),
    }
    row["config.algorithm"] = run.algorithm
    row["config.dataset"] = run.dataset
    row["config.seed"] = float(run.seed)
    for key, value in run.config.items():
        row[f"config.{key}"] = _number(value)
    for key, (value, _) in sorted(final.items()):
        row[f"final.{key}"] = value
    return metric_pieces, art_pieces, run_row_table(row)


def write_run(root: str | Path, run: SyntheticRun, *, metric_files: int = 21, fold: bool = True) -> None:
    """Write one run's row, metrics and artifacts the way RunRecorder does.

    Metric rows go to up to `metric_files` pieces (a real run flushes once per report), each artifact to a
    piece of its own, and the run row last; an ended run's pieces are then folded into the segments, as
    RunRecorder does when a run ends (`fold=False` leaves them as a killed run would).
    """
    root = Path(root)
    metric_pieces, art_pieces, row = _tables(root, run, metric_files)
    for table, pieces in (("metrics", metric_pieces), ("artifacts", art_pieces)):
        for name, piece in pieces:
            atomic_write_table(root / table / PENDING / name, piece)
    atomic_write_table(root / "runs" / f"{run.run_id}.parquet", row)
    if fold and run.status != "running":
        for name in ("metrics", "artifacts"):
            fold_pieces(root, name, [run.run_id])


class BulkWriter:
    """Writes ended runs straight into the state their folds would leave (the same run files, the same
    segments: pieces appended to a segment until it holds SEGMENT_SOURCES pieces or SEGMENT_ROWS rows,
    each listing its pieces), without the small files in between: a 10 000-run store in minutes, not hours.
    tests/test_store_bench.py checks both ways give the same store."""

    def __init__(self, root: str | Path, metric_files: int = 21) -> None:
        self.root = Path(root)
        self.metric_files = metric_files
        self.open: dict[str, tuple[list, list[str], int]] = {t: ([], [], 0) for t in ("metrics", "artifacts")}

    def add(self, run: SyntheticRun) -> None:
        assert run.status != "running", "a running run's pieces are not folded; use write_run"
        metric_pieces, art_pieces, row = _tables(self.root, run, self.metric_files)
        for table, pieces in (("metrics", metric_pieces), ("artifacts", art_pieces)):
            if not pieces:
                continue
            tables, names, rows = self.open[table]
            if len(names) >= store_module.SEGMENT_SOURCES or rows >= store_module.SEGMENT_ROWS:
                self._flush(table)
                tables, names, rows = self.open[table]
            tables += [t for _, t in pieces]
            names += [n for n, _ in pieces]
            self.open[table] = (tables, names, rows + sum(t.num_rows for _, t in pieces))
        atomic_write_table(self.root / "runs" / f"{run.run_id}.parquet", row)

    def _flush(self, table: str) -> None:
        tables, names, _ = self.open[table]
        if names:
            name = f"seg-{hashlib.sha1(names[0].encode()).hexdigest()[:12]}.parquet"
            atomic_write_table(self.root / table / name, pa.concat_tables(tables), names)
            atomic_write_bytes(self.root / table / ".tail", name.encode())
        self.open[table] = ([], [], 0)

    def close(self) -> None:
        for table in self.open:
            self._flush(table)


def write_sweep_spec(root: str | Path, sweep_id: str, spec: Mapping[str, Any]) -> None:
    atomic_write_bytes(Path(root) / "sweeps" / f"{sweep_id}.json", json.dumps(spec, indent=1).encode())


# ---------------------------------------------------------------------------------------------- stores


def _curve(rng: np.random.Generator, final: float, steps: int, points: int, start: float) -> tuple[list[int], list[float]]:
    xs = np.linspace(steps / points, steps, points).round().astype(int)
    frac = 1 - np.exp(-4 * xs / steps)
    values = start + (final - start) * frac / frac[-1] + rng.normal(0, abs(final - start) * 0.01 + 1e-3, points)
    values[-1] = final
    return xs.tolist(), values.tolist()


def _image(rng: np.random.Generator, size: int = 28) -> bytes:
    return png_bytes(rng.random((size, size)))


def _infusion_lb(steps: int, rate: float) -> float:
    """A made-up test lower bound peaking at an infusion rate that decreases with the number of steps."""
    best = 0.3 if steps == 1 else 0.5 / steps
    return 1400 - 60000 * (rate - best) ** 2 / max(steps, 1) + 30 * math.log(steps + 1)


def infusion_run(rng: np.random.Generator, run_id: str, *, steps: int, rate: float, seed: int,
                 schedule: str = "increasing", dataset: str = "mnist", curve_points: int = 8, train_steps: int = 400,
                 images: bool = True, **extra: Any) -> SyntheticRun:
    alpha0, omega = (rate, 0.0) if steps == 1 else (0.0, rate)
    lb = _infusion_lb(steps, rate) + rng.normal(0, 5)
    run = SyntheticRun(
        run_id, "infusion", dataset, seed=seed,
        config={"train.steps": train_steps, "train.lr": 1e-4, "algo.steps": steps, "algo.schedule": schedule,
                "algo.alpha0": alpha0, "algo.omega": omega, **extra.pop("config", {})},
        **extra,
    )
    run.curves["valid/lower_bound"] = _curve(rng, lb - 20, train_steps, curve_points, lb - 900)
    run.curves["train/loss"] = _curve(rng, -lb, train_steps, curve_points, -lb + 800)
    run.curves["valid/parzen_ll"] = _curve(rng, 300 + rng.normal(0, 3), train_steps, max(2, curve_points // 2), 100)
    run.finals.update({
        "test/lower_bound": lb, "test/lower_bound_std": abs(rng.normal(0.1, 0.02)),
        "train/lower_bound": lb - 100, "train/lower_bound_std": abs(rng.normal(0.5, 0.05)),
        "test/importance": lb + 450, "test/importance_std": abs(rng.normal(0.5, 0.05)),
        "train/importance": lb + 460, "train/importance_std": abs(rng.normal(1.0, 0.1)),
        "test/importance_isotropic": 400 + rng.normal(0, 5), "test/importance_isotropic_std": 0.46,
        "train/importance_isotropic": 440 + rng.normal(0, 5), "train/importance_isotropic_std": 1.6,
        "test/parzen_ll": 300 + rng.normal(0, 5), "test/parzen_ll_se": 1.7, "test/parzen_sigma": 0.1668,
    })
    if images:
        run.images = {"samples.png": _image(rng), "nearest.png": _image(rng), "chains.png": _image(rng, 40),
                      "infusion_chains.png": _image(rng, 40), "inpainting.png": _image(rng)}
        run.texts = {"samples.txt": "synthetic"}
    return run


def demo_store(root: str | Path, seed: int = 0) -> Path:
    """A small store with runs for every paper table the report supports, two sweeps and a few odd cases.

    Deliberately absent: bits/dim and Inception scores (so the report lists those as not built).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    n = 0

    def rid(prefix: str) -> str:
        nonlocal n
        n += 1
        return f"{prefix}-{n:04d}"

    # Infusion TAB A.1 grid (increasing schedule) and two constant-schedule panels, 2 seeds each.
    grid = {1: [0.0, 0.1, 0.3, 0.5], 5: [0.01, 0.05, 0.1], 10: [0.01, 0.02, 0.06], 15: [0.01, 0.02]}
    for steps, rates in grid.items():
        for rate in rates:
            for s in range(2):
                write_run(root, infusion_run(rng, rid("infusion"), steps=steps, rate=rate, seed=s,
                                             started=T0 + timedelta(minutes=n)))
    for steps in (10, 15):
        for rate in (0.04, 0.08):
            write_run(root, infusion_run(rng, rid("infusion"), steps=steps, rate=rate, seed=0, schedule="constant",
                                         images=False, started=T0 + timedelta(minutes=n)))

    # Walkback: diagonal Gaussian K = 5/10/15 (2 seeds), isotropic K = 15, a toy run; one failed run.
    for k, (lb_tr, lb_te) in {5: (700, 510), 10: (890, 800), 15: (1150, 1020)}.items():
        for s in range(2):
            # The 5-step model uses k_mode=random: its K is only known from the logged test/walkback_steps.
            cfg = {"train.steps": 300, "algo.operator": "gaussian", "algo.k_mode": "random" if k == 5 else "fixed"}
            if k != 5:
                cfg["algo.walkback_steps"] = k
            run = SyntheticRun(rid("walkback"), "walkback", "mnist", seed=s, started=T0 + timedelta(minutes=n),
                               config=cfg)
            run.finals["test/walkback_steps"] = float(k)
            run.curves["valid/lower_bound"] = _curve(rng, lb_te, 300, 6, lb_te - 500)
            run.finals.update({"train/lower_bound": lb_tr + rng.normal(0, 4), "test/lower_bound": lb_te + rng.normal(0, 4),
                               "train/importance": 1300 + rng.normal(0, 4), "test/importance": 1240 + rng.normal(0, 4),
                               "test/importance_std": 2.0, "test/reversibility_ratio": 0.036 + rng.normal(0, 0.002)})
            # eval.isotropic: the isotropic-output IS estimate is logged beside the diagonal one (Table 3.1b).
            run.finals.update({"train/importance_isotropic": 790.0 + rng.normal(0, 2),
                               "test/importance_isotropic": 710.0 + rng.normal(0, 2)})
            run.images = {"chains.png": _image(rng, 40), "samples.png": _image(rng), "inpainting.png": _image(rng),
                          "long_chain.png": _image(rng, 40)}
            write_run(root, run)
    run = SyntheticRun(rid("walkback"), "walkback", "toy2d:circle", started=T0 + timedelta(minutes=n),
                       config={"train.steps": 100, "algo.walkback_steps": 30, "algo.operator": "gaussian"})
    run.finals["test/lower_bound"] = 1.5
    run.images = {"samples.png": _image(rng, 32), "chains.png": _image(rng, 32)}
    write_run(root, run)
    write_run(root, SyntheticRun(rid("walkback"), "walkback", "mnist", status="failed",
                                 config={"train.steps": 300, "algo.walkback_steps": 5}))

    # Professor forcing family: PTB (BPC curves), sequential MNIST (NLL), hidden-state distances.
    for algo, bpc, nll, cd, nf in (("teacher", 1.50, 81.0, 3000.0, 22.8), ("professor", 1.48, 79.6, 1800.0, 16.4)):
        for s in range(2):
            run = SyntheticRun(rid(algo), algo, "ptb", seed=s, started=T0 + timedelta(minutes=n),
                               config={"train.steps": 200, "algo.hidden": 64})
            run.curves["valid/bpc"] = _curve(rng, bpc + rng.normal(0, 0.005), 200, 6, 3.0)
            run.curves["train/nll"] = _curve(rng, bpc * math.log(2) - 0.05, 200, 10, 2.5)
            run.finals.update({"test/bpc": bpc + 0.02, "test/centroid_distance": cd + rng.normal(0, 30),
                               "test/nearest_free_distance": nf + rng.normal(0, 0.3)})
            if algo == "professor":
                run.curves["valid/disc_accuracy"] = _curve(rng, 0.8, 200, 6, 0.5)
                run.curves["train/gate_generator_open"] = _curve(rng, 0.6, 200, 6, 0.0)
                run.curves["train/gate_discriminator_open"] = _curve(rng, 0.9, 200, 6, 1.0)
            run.images = {"tsne.png": _image(rng, 48)}
            write_run(root, run)
            run = SyntheticRun(rid(algo), algo, "seqmnist", seed=s, started=T0 + timedelta(minutes=n),
                               config={"train.steps": 200, "algo.hidden": 64})
            run.curves["valid/nll"] = _curve(rng, 0.2, 200, 5, 0.7)
            image_nll = nll + rng.normal(0, 0.3)
            run.finals.update({"test/nll_image": image_nll, "test/nll": image_nll / 784})
            write_run(root, run)

    # Sweep 1: infusion omega x steps x lr (TPE), with a conditional parameter, failures, one running trial.
    sid = "infusion-omega"
    # The resolved form raygen's sweep runner stores (raygen/engine/sweep_spec.py ResolvedSweep.to_json).
    def param(name: str, kind: str, low=None, high=None, log=False, choices=None, when=None) -> dict[str, Any]:
        return {"name": name, "kind": kind, "low": low, "high": high, "log": log, "step": None,
                "choices": choices, "when": when or {}, "path": name}

    write_sweep_spec(root, sid, {
        "sweep_id": sid, "name": sid, "method": "tpe", "algorithm": "infusion", "dataset": "mnist",
        "metric": {"name": "valid/lower_bound", "goal": "maximize"},
        "metrics": [{"name": "valid/lower_bound", "goal": "maximize"}],
        "parameters": {
            "algo.omega": param("algo.omega", "float", 0.005, 0.2),
            "algo.steps": param("algo.steps", "categorical", choices=[5, 10, 15]),
            "train.lr": param("train.lr", "float", 1e-5, 1e-2, log=True),
            "algo.schedule": param("algo.schedule", "categorical", choices=["increasing", "constant"]),
            "algo.alpha0": param("algo.alpha0", "float", 0.0, 0.1, when={"algo.schedule": ["constant"]}),
        },
    })
    for t in range(24):
        steps = [5, 10, 15][t % 3]
        omega = float(np.round(rng.uniform(0.005, 0.2), 4))
        lr = float(10 ** rng.uniform(-5, -2))
        schedule = "constant" if t % 4 == 0 else "increasing"
        params = {"algo.omega": omega, "algo.steps": steps, "train.lr": lr, "algo.schedule": schedule,
                  "algo.alpha0": float(np.round(rng.uniform(0, 0.1), 3)) if schedule == "constant" else None}
        status = "failed" if t in (5, 17) else "running" if t == 23 else "completed"
        run = infusion_run(rng, rid("sweep-infusion"), steps=steps, rate=omega, seed=0, schedule=schedule,
                           images=t < 6, sweep_id=sid, trial_id=f"{t:05d}", params=params, status=status,
                           stopped_early=t in (3, 11), started=T0 + timedelta(hours=1, minutes=t),
                           config={"train.lr": lr})
        if status != "completed":
            run.finals = {}
            run.curves = {"valid/lower_bound": run.curves["valid/lower_bound"]} if status == "running" else {}
        write_run(root, run)

    # Sweep 2: multi-objective professor forcing (BPC vs discriminator updates), no stored spec for one param.
    sid = "pf-pareto"
    write_sweep_spec(root, sid, {
        "name": sid, "method": "nsga2",
        "metrics": [{"name": "valid/bpc", "goal": "minimize"}, {"name": "train/seconds_per_step", "goal": "minimize"}],
        "parameters": {"algo.gate_high": {"min": 0.9, "max": 0.999}, "algo.hidden": {"values": [32, 64, 128]}},
    })
    for t in range(12):
        hidden = [32, 64, 128][t % 3]
        gate = float(np.round(rng.uniform(0.9, 0.999), 3))
        run = SyntheticRun(rid("sweep-pf"), "professor", "ptb", sweep_id=sid, trial_id=f"{t:05d}",
                           params={"algo.gate_high": gate, "algo.hidden": hidden}, started=T0 + timedelta(hours=2, minutes=t),
                           config={"train.steps": 100, "algo.hidden": hidden, "algo.gate_high": gate})
        run.curves["valid/bpc"] = _curve(rng, 1.6 - 0.001 * hidden + rng.normal(0, 0.01), 100, 5, 3)
        run.finals["train/seconds_per_step"] = 0.001 * hidden * (1 + rng.random())
        write_run(root, run)
    return root


def benchmark_store(root: str | Path, trials: int = 1000, metric_rows: int = 500, seed: int = 0, *,
                    metric_files: int = 21, checkpoints: int = 5, bulk: bool = False) -> Path:
    """One infusion sweep of `trials` ended trials, each as the README's main job writes it: `metric_rows`
    metric rows in `metric_files` flushes, `checkpoints` checkpoint saves and a text sample (one artifact
    piece each), then folded. `bulk` writes the same end state directly (BulkWriter)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    sid = "bench-sweep"
    write_sweep_spec(root, sid, {
        "name": sid, "metric": {"name": "valid/lower_bound", "goal": "maximize"},
        "parameters": {"algo.omega": {"min": 0.005, "max": 0.2}, "algo.steps": {"values": [1, 5, 10, 15]},
                       "train.lr": {"min": 1e-5, "max": 1e-2, "log": True}},
    })
    n_finals = 17  # the finals infusion_run logs
    per_curve = max(1, (metric_rows - n_finals) // 3)
    bulk_writer = BulkWriter(root, metric_files) if bulk else None
    for t in range(trials):
        steps = [1, 5, 10, 15][t % 4]
        omega = float(rng.uniform(0.005, 0.2))
        lr = float(10 ** rng.uniform(-5, -2))
        run = infusion_run(rng, f"bench-{t:05d}", steps=steps, rate=omega, seed=t % 3, curve_points=per_curve,
                           images=t < 10, sweep_id=sid, trial_id=f"{t:05d}",
                           params={"algo.omega": omega, "algo.steps": steps, "train.lr": lr},
                           started=T0 + timedelta(minutes=t), config={"train.lr": lr}, train_steps=10_000)
        # the model selection rows a real run stores at the end of training (raygen/engine/loop.py)
        best = int(np.argmax(run.curves["valid/lower_bound"][1]))
        run.finals["selection/step"] = float(run.curves["valid/lower_bound"][0][best])
        run.finals["selection/lower_bound"] = run.curves["valid/lower_bound"][1][best]
        # valid/parzen_ll has half the points; top up train/loss so each run has exactly `metric_rows` rows.
        rows = sum(len(v[0]) for v in run.curves.values()) + len(run.finals)
        if rows < metric_rows:
            run.curves["train/grad_norm"] = _curve(rng, 1.0, 10_000, metric_rows - rows, 5.0)
        run.checkpoints = [int(10_000 * (i + 1) / checkpoints) for i in range(checkpoints)]
        run.texts = run.texts or {"samples.txt": "synthetic"}
        if bulk_writer is not None:
            bulk_writer.add(run)
        else:
            write_run(root, run, metric_files=metric_files)
    if bulk_writer is not None:
        bulk_writer.close()
    return root
