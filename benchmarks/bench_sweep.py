"""Sweep efficiency (issue 4): how much wall time the Ray Tune + Optuna machinery adds to a sweep.

N trials of about `--trial-seconds` each run with concurrency C on a local Ray (C CPUs). A trial's time is
its run row's wall time in the results store (from the trial's start of work to its completed status), so
Ray's scheduling, trial-process start-up, imports, the Optuna searcher and the store writes around it all
count as overhead. Reported: efficiency = sweep wall time / (sum of trial times / C); 1.0 is perfect
packing. Target: <= 1.15 for 30-second trials. Ray's own start-up is excluded (timed and printed apart).

The trial length is set by calibrating the number of updates of a small walkback model in this process
(one thread, as a 1-CPU Ray trial gets).

    python benchmarks/bench_sweep.py                                  # 4 trials of ~30 s, 2 at a time
    python benchmarks/bench_sweep.py --trials 8 --concurrency 4 --trial-seconds 60
    python benchmarks/bench_sweep.py --trial-seconds 5                # shorter trials (overhead weighs more)
    python benchmarks/bench_sweep.py --smoke                          # seconds; checks the script runs
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import torch

FIXED = {
    "train.batch_size": 256,
    "train.log_every": 50,
    "train.eval_every": 1000000,
    "train.checkpoint_every": 1000000,
    "train.eval_examples": 256,
    "train.progress": False,
    "algo.walkback_steps": 4,
    "algo.net.hidden": [128, 128],
    "algo.reversibility_steps": 0,
    "eval.final": False,
}


def calibrate(seconds: float) -> int:
    """Updates that take about `seconds` in one thread (the rate of a short in-process run)."""
    from raygen.config import build_config
    from raygen.engine.loop import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = build_config(algorithm="walkback", dataset="toy2d:swissroll",
                           overrides={**FIXED, "train.steps": 40})
        train(cfg, lambda *a, **k: None)  # warm-up (allocations, caches)
        cfg = build_config(algorithm="walkback", dataset="toy2d:swissroll",
                           overrides={**FIXED, "train.steps": 200})
        start = time.perf_counter()
        train(cfg, lambda *a, **k: None)
        rate = 200 / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return max(20, int(rate * seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--trial-seconds", type=float, default=30.0)
    parser.add_argument("--smoke", action="store_true", help="2 trials of ~2 s")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.concurrency, args.trial_seconds = 2, 2, 2.0
    logging.basicConfig(level=logging.WARNING)

    import ray

    from raygen.engine.ray_train import ensure_ray
    from raygen.engine.sweep import run_sweep
    from raygen.engine.sweep_spec import resolve
    from raygen.results import read_runs

    steps = calibrate(args.trial_seconds)
    spec = resolve({
        "name": "bench-sweep",
        "algorithm": "walkback",
        "dataset": "toy2d:swissroll",
        "fixed": {**FIXED, "train.steps": steps},
        "metric": {"name": "train/loss", "goal": "minimize"},
        "method": "random",
        "run_cap": args.trials,
        "max_concurrent": args.concurrency,
        "resources": {"cpu": 1},
        "parameters": {"train.lr": {"min": 1.0e-4, "max": 1.0e-3, "log": True}},
    })
    results = tempfile.mkdtemp(prefix="raygen-bench-sweep-")
    start = time.perf_counter()
    # raygen's own private cluster: every socket on 127.0.0.1, `concurrency` CPUs. Never $RAY_ADDRESS's
    # cluster: the numbers are for a cluster of known size.
    os.environ.pop("RAY_ADDRESS", None)
    ensure_ray(num_cpus=args.concurrency, log_to_driver=False)
    ray_start = time.perf_counter() - start
    try:
        start = time.perf_counter()
        outcome = run_sweep(spec, results)
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    runs = read_runs(results)
    times = runs["wall_time_s"].astype(float)
    ideal = times.sum() / args.concurrency
    print(f"trials: {len(runs)} x {steps} updates ({outcome.statuses}), concurrency {args.concurrency}")
    print(f"trial time (s): mean {times.mean():.2f}, min {times.min():.2f}, max {times.max():.2f}")
    print(f"Ray start-up (excluded): {ray_start:.1f} s")
    print(f"sweep wall time: {wall:.1f} s; sum of trial times / C: {ideal:.1f} s")
    print(f"efficiency ratio = wall / (sum / C) = {wall / ideal:.3f}   (target <= 1.15 for 30-second trials)")
    print(f"results: {results}")


if __name__ == "__main__":
    main()
