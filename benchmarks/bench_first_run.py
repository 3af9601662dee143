"""The README's main job, old preset vs new, side by side over several seeds in one process.

`raygen train infusion --dataset digits --steps 1000` used the MNIST-sized 2×1200 operator network and the
paper's MNIST evaluation sizes (10 repeats) on 8×8 digits. The digits preset (`Infusion.dataset_presets`)
fits the network, its learning rate and the evaluation to the 64-dimensional data. This script trains
every preset named with every seed, times each whole run (training + final evaluation, as the CLI runs
it; CPU seconds split into training and final evaluation) and reads both quality numbers from the run's own final evaluation, whose
protocol the presets share (checked below): the test lower bound (every digits test example, k importance
samples each, mean over the evaluation repeats; the repeat count changes only its noise, not what it
estimates) and the Parzen log-likelihood of the test split under the same number of samples and σ grid
(Parzen grows with the sample count, so presets that differed there would not be comparable).

One seed is not enough to compare presets: the ± a single run reports is over test examples, which both
presets share; what differs between presets is the trained model, which varies from seed to seed. The
summary gives mean ± standard error over seeds per preset, and the per-seed difference from the first preset
(same seeds, so the same data order and test points) as mean ± standard error.

    OMP_NUM_THREADS=1 python benchmarks/bench_first_run.py                  # old vs new, seeds 0-2 (~20 CPU-minutes)
    python benchmarks/bench_first_run.py --presets old new 2x512+train.lr=0.001 2x768+train.lr=0.001 --runs runs.jsonl
    python benchmarks/bench_first_run.py --smoke                            # seconds: checks it runs

Presets: `old` (2×1200, lr 1e-3, 10 repeats: the digits config before the digits preset), `new` (the digits preset as
it is now), `NxW` (the digits preset with an N-layer operator of width W), each optionally followed by
`+KEY=VALUE` overrides. With `--runs FILE` every run is appended to FILE (JSON lines) and a run already
there (same preset, seed, steps and resolved settings) is read instead of trained again, so one table can
gather runs made at different times.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import statistics
import tempfile
import time

from raygen.config import build_config, parse_override
from raygen.engine.local import run_local
from raygen.results import read_runs

# The digits config before the digits preset: the image preset alone (Infusion's MNIST sizes, Adam 1e-3).
OLD = {"algo.net.hidden": [1200, 1200], "train.lr": 1e-3, "eval.repeats": 10}
# Fields of the final evaluation that must agree for the presets' numbers to be comparable (repeats may differ).
PROTOCOL = ("test_examples", "likelihood_samples", "dequantize", "parzen", "parzen_samples", "parzen_sigmas",
            "parzen_valid_examples")


def preset_overrides(spec: str) -> dict:
    """`old`, `new` or `NxW`, then optional `+KEY=VALUE` overrides."""
    name, *extra = spec.split("+")
    if name == "old":
        base = dict(OLD)
    elif name == "new":
        base = {}
    elif match := re.fullmatch(r"(\d+)x(\d+)", name):
        base = {"algo.net.hidden": [int(match.group(2))] * int(match.group(1))}
    else:
        raise SystemExit(f"unknown preset '{spec}' (known: old, new or NxW such as 2x768, then +KEY=VALUE ...)")
    return {**base, **dict(parse_override(text) for text in extra)}


class _StageClock(logging.Handler):
    """Notes the process CPU time when the final evaluation starts (its first log line)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.eval_start: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.eval_start is None and record.getMessage().startswith("final evaluation"):
            self.eval_start = time.process_time()


def settings(cfg) -> dict:
    """What a recorded run must match to be reused: the resolved settings a preset may change."""
    return {"hidden": "x".join(map(str, cfg.algo.net.hidden)), "lr": cfg.train.lr, "batch": cfg.train.batch_size,
            "repeats": cfg.eval.repeats, "protocol": {k: getattr(cfg.eval, k) for k in PROTOCOL}}


def one_run(name: str, overrides: dict, steps: int, seed: int, root: str, recorded: list[dict]) -> dict:
    cfg = build_config(algorithm="infusion", dataset="digits",
                       overrides={**overrides, "train.steps": steps, "seed": seed})
    key = {"preset": name, "seed": seed, "steps": steps, **json.loads(json.dumps(settings(cfg)))}
    for row in recorded:
        if {k: row.get(k) for k in key} == key:
            return {**row, "reused": True}
    results = f"{root}/{len(recorded)}"
    clock = _StageClock()
    evaluate_log = logging.getLogger("raygen.engine.evaluate")
    level, propagate = evaluate_log.level, evaluate_log.propagate
    evaluate_log.addHandler(clock)
    # The clock needs the INFO records; they stop here rather than print through the root logger's handler.
    evaluate_log.setLevel(logging.INFO)
    evaluate_log.propagate = False
    start, cpu = time.perf_counter(), time.process_time()
    try:
        run_id = run_local(cfg, results, progress=False)
    finally:
        evaluate_log.removeHandler(clock)
        evaluate_log.setLevel(level)
        evaluate_log.propagate = propagate
    seconds, cpu_end = time.perf_counter() - start, time.process_time()
    row = read_runs(results).set_index("run_id").loc[run_id]
    eval_start = clock.eval_start if clock.eval_start is not None else cpu_end
    return {**key, "wall": seconds, "cpu": cpu_end - cpu, "train_cpu": eval_start - cpu,
            "eval_cpu": cpu_end - eval_start, "lb": float(row["final.test/lower_bound"]),
            "parzen": float(row["final.test/parzen_ll"]), "reused": False}


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / √n; nan for one value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan)


def fmt(values: list[float], digits: int = 2) -> str:
    mean, se = mean_se(values)
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--presets", nargs="+", default=["old", "new"],
                        help="old, new, or NxW (the digits preset with an N-layer operator of width W), each "
                        "optionally followed by +KEY=VALUE overrides; the first is the reference for the differences")
    parser.add_argument("--runs", help="JSON-lines file of runs: recorded runs are reused, new ones appended")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    presets = {name: preset_overrides(name) for name in args.presets}
    if args.smoke:  # the same comparison at a size that runs in seconds
        args.steps, args.seeds = 20, [0, 1]
        small = {"eval.repeats": 1, "eval.parzen_samples": 200, "eval.likelihood_samples": 2,
                 "eval.test_examples": 50, "eval.train_examples": 10, "algo.sampling_steps": 15}
        presets = {name: {**o, **small, **({"algo.net.hidden": [64, 64]} if name == "old" else {})}
                   for name, o in presets.items()}
    recorded: list[dict] = []
    if args.runs:
        try:
            with open(args.runs) as f:
                recorded = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            pass
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as root:
        for seed in args.seeds:  # seed-major: an interrupted run still has every preset at the first seeds
            for name, overrides in presets.items():
                r = one_run(name, overrides, args.steps, seed, root, recorded)
                rows.append(r)
                if args.runs and not r["reused"]:
                    with open(args.runs, "a") as f:
                        f.write(json.dumps({k: v for k, v in r.items() if k != "reused"}) + "\n")
                print(f"  {r['preset']} seed {seed}: {r['cpu']:6.1f} CPU s ({r['train_cpu']:.1f} training), "
                      f"{r['wall']:6.1f} wall s, test LB {r['lb']:7.2f}, Parzen {r['parzen']:6.2f}"
                      f"{' (recorded)' if r['reused'] else ''}", flush=True)
    protocols = {str(r["protocol"]) for r in rows}
    if len(protocols) > 1:
        raise SystemExit(f"the presets' final evaluations differ beyond repeats, numbers not comparable: {protocols}")
    protocol = rows[0]["protocol"]
    print(f"\ninfusion on digits, {args.steps} updates, seeds {' '.join(map(str, args.seeds))}; test split: "
          f"{protocol['likelihood_samples']} importance samples per example, Parzen with "
          f"{protocol['parzen_samples']} samples, for every preset. Mean ± standard error over seeds; higher is "
          "better for LB and Parzen.")
    w = max(8, *map(len, presets))
    print(f"{'preset':{w}} {'network':>10} {'lr':>7} {'repeats':>7} {'CPU s':>14} {'training CPU s':>14} {'final eval CPU s':>16} "
          f"{'wall s':>14} {'test LB':>14} {'Parzen LL':>14}")
    by_preset = {name: [r for r in rows if r["preset"] == name] for name in presets}
    for name, rs in by_preset.items():
        print(f"{name:{w}} {rs[0]['hidden']:>10} {rs[0]['lr']:>7g} {rs[0]['repeats']:>7} {fmt([r['cpu'] for r in rs], 1):>14} "
              f"{fmt([r['train_cpu'] for r in rs], 1):>14} {fmt([r['eval_cpu'] for r in rs], 1):>16} "
              f"{fmt([r['wall'] for r in rs], 1):>14} {fmt([r['lb'] for r in rs]):>14} "
              f"{fmt([r['parzen'] for r in rs]):>14}")
    reference, *others = by_preset
    base = by_preset[reference]
    # CPU seconds hardly depend on what else the machine runs; wall seconds do (a loaded machine).
    for name in others:
        rs = by_preset[name]
        cpu_ratio = statistics.fmean(r["cpu"] for r in base) / statistics.fmean(r["cpu"] for r in rs)
        wall_ratio = statistics.fmean(r["wall"] for r in base) / statistics.fmean(r["wall"] for r in rs)
        print(f"{name} vs {reference}: time ratio {reference}/{name} CPU {cpu_ratio:.2f}x, wall {wall_ratio:.2f}x; "
              f"per-seed difference {name} − {reference}: test LB {fmt([n['lb'] - o['lb'] for n, o in zip(rs, base)])}, "
              f"Parzen {fmt([n['parzen'] - o['parzen'] for n, o in zip(rs, base)])} nats")


if __name__ == "__main__":
    main()
