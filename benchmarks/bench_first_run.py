"""The README's main job, old preset vs new, side by side in one process.

`raygen train infusion --dataset digits --steps 1000` used the MNIST-sized 2×1200 operator network and the
paper's MNIST evaluation sizes (10 repeats, 10 000 Parzen samples) on 8×8 digits. The digits preset
(`Infusion.dataset_presets`) fits the network and the evaluation to the 64-dimensional data. This script
trains both presets with the same seed, times each whole run (training + final evaluation, as the CLI
runs it) and scores both on the same test points with the same protocol: the test lower bound from the
run's own final evaluation (every digits test example, mean over its repeats) and a Parzen log-likelihood
recomputed for both models with the same number of samples and σ grid (Parzen grows with the sample
count, so each run's own Parzen number is not comparable across presets).

    OMP_NUM_THREADS=1 python benchmarks/bench_first_run.py             # the README's numbers (~6 CPU-minutes)
    python benchmarks/bench_first_run.py --smoke                        # seconds: checks it runs
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import torch

from raygen.config import build_config
from raygen.engine.evaluate import parzen_metrics
from raygen.engine.local import restore, run_local
from raygen.results import read_runs

# The digits config before the digits preset: the image preset alone (Infusion's MNIST sizes).
OLD = {"algo.net.hidden": [1200, 1200], "eval.repeats": 10, "eval.parzen_samples": 10_000}


def one_run(name: str, overrides: dict, steps: int, seed: int, parzen_samples: int, root: str) -> dict:
    cfg = build_config(algorithm="infusion", dataset="digits",
                       overrides={**overrides, "train.steps": steps, "seed": seed})
    results = f"{root}/{name}"
    start, cpu = time.perf_counter(), time.process_time()
    run_id = run_local(cfg, results, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    row = read_runs(results).set_index("run_id").loc[run_id]
    algo, dataset, rcfg, _ = restore(results, run_id)
    common = rcfg.with_overrides({"eval.parzen_samples": parzen_samples})
    torch.manual_seed(1234)  # the same sampling noise for both models
    with torch.no_grad():
        parzen = parzen_metrics(algo, dataset, common, "test")
    return {"preset": name, "hidden": "x".join(map(str, cfg.algo.net.hidden)), "repeats": cfg.eval.repeats,
            "own_parzen_samples": cfg.eval.parzen_samples, "seconds": seconds, "cpu": cpu,
            "test_lower_bound": float(row["final.test/lower_bound"]), "parzen_ll": parzen["parzen_ll"],
            "parzen_se": parzen["parzen_ll_se"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parzen-samples", type=int, default=10_000, help="for both models' common Parzen")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    old, new = dict(OLD), {}
    if args.smoke:  # the same comparison at a size that runs in seconds
        args.steps, args.parzen_samples = 20, 200
        small = {"eval.repeats": 1, "eval.parzen_samples": 200, "eval.likelihood_samples": 2,
                 "eval.test_examples": 50, "eval.train_examples": 10, "algo.sampling_steps": 15}
        old = {**old, **small, "algo.net.hidden": [64, 64]}
        new = {**small}
    with tempfile.TemporaryDirectory() as root:
        rows = [one_run("old", old, args.steps, args.seed, args.parzen_samples, root),
                one_run("new", new, args.steps, args.seed, args.parzen_samples, root)]
    print(f"infusion on digits, {args.steps} updates, seed {args.seed}; Parzen with {args.parzen_samples} "
          "samples for both")
    print(f"{'preset':6} {'network':>10} {'repeats':>7} {'parzen n':>8} {'wall s':>8} {'CPU s':>8} {'test LB':>9} "
          f"{'Parzen LL':>16}")
    for r in rows:
        print(f"{r['preset']:6} {r['hidden']:>10} {r['repeats']:>7} {r['own_parzen_samples']:>8} "
              f"{r['seconds']:8.1f} {r['cpu']:8.1f} {r['test_lower_bound']:9.2f} {r['parzen_ll']:9.2f} ± "
              f"{r['parzen_se']:5.2f}")
    o, n = rows
    # CPU seconds do not depend on what else the machine runs; wall seconds do (a loaded machine).
    print(f"time ratio old/new: wall {o['seconds'] / n['seconds']:.2f}x, CPU {o['cpu'] / n['cpu']:.2f}x; "
          f"test LB new - old: "
          f"{n['test_lower_bound'] - o['test_lower_bound']:+.2f} nats; Parzen LL new - old: "
          f"{n['parzen_ll'] - o['parzen_ll']:+.2f} nats (higher is better for both)")


if __name__ == "__main__":
    main()
