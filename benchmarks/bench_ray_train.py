"""Ray Train overhead (issue 4): the same training in-process vs inside a 1-worker TorchTrainer, and the
throughput of 2 data-parallel workers vs 1.

The model is a walkback operator (a 2-D toy problem with a 2x256 MLP by default, `--hidden` to change it),
trained for `--steps` updates with the loop's own reports every 50 updates and no evaluation. Throughput is
measured from the results store, identically for every runner: (last report step - first report step) /
(time between those two reports), so Ray's start-up and the first updates' warm-up are excluded. Every
worker and the in-process run use one CPU thread (a 1-CPU Ray worker gets OMP_NUM_THREADS=1).

Reported:
* overhead ratio = throughput(1-worker TorchTrainer) / throughput(in-process); target >= 0.95;
* scaling ratio = examples/s with 2 workers / examples/s with 1 worker (each worker takes a full batch per
  update, so 2 workers process twice the examples per update; 2.0 is perfect, and on a machine with only two
  busy cores it cannot be reached).

    python benchmarks/bench_ray_train.py                  # 2000 updates per run
    python benchmarks/bench_ray_train.py --steps 5000 --hidden 512 512
    python benchmarks/bench_ray_train.py --smoke          # seconds; checks the script runs
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import torch


def throughput(results: str | Path) -> float:
    """Updates per second between the first and the last training report of the run in `results`."""
    from raygen.results import read_metrics

    m = read_metrics(results)
    loss = m[(m["split"] == "train") & (m["metric"] == "loss")].sort_values("step")
    first, last = loss.iloc[0], loss.iloc[-1]
    return float((last["step"] - first["step"]) / (last["time"] - first["time"]).total_seconds())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--smoke", action="store_true", help="200 updates of a small model")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.hidden = 200, [32]
    logging.basicConfig(level=logging.WARNING)

    import ray

    from raygen.config import build_config
    from raygen.engine.local import run_local
    from raygen.engine.ray_train import ensure_ray, run_distributed

    cfg = build_config(algorithm="walkback", dataset="toy2d:swissroll", overrides={
        "train.steps": args.steps, "train.batch_size": args.batch_size, "train.log_every": 50,
        "train.eval_every": 10**9, "train.checkpoint_every": 10**9, "train.progress": False,
        "algo.walkback_steps": 4, "algo.net.hidden": list(args.hidden), "algo.reversibility_steps": 0,
        "eval.final": False,
    })
    root = Path(tempfile.mkdtemp(prefix="raygen-bench-train-"))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_local(cfg, root / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    local = throughput(root / "local")

    # raygen's own private cluster: every socket on 127.0.0.1, 2 CPUs. Never $RAY_ADDRESS's cluster: the
    # numbers are for a cluster of known size.
    os.environ.pop("RAY_ADDRESS", None)
    ensure_ray(num_cpus=2, log_to_driver=False)
    try:
        run_distributed(cfg, root / "ray1", workers=1)
        one = throughput(root / "ray1")
        run_distributed(cfg, root / "ray2", workers=2)
        two = throughput(root / "ray2")
    finally:
        ray.shutdown()

    batch = cfg.train.batch_size
    print(f"model: walkback, MLP {list(args.hidden)}, batch {batch} per worker, {args.steps} updates, 1 thread each")
    print(f"in-process:            {local:8.1f} updates/s  {local * batch:10.0f} examples/s")
    print(f"TorchTrainer 1 worker: {one:8.1f} updates/s  {one * batch:10.0f} examples/s")
    print(f"TorchTrainer 2 workers:{two:8.1f} updates/s  {two * 2 * batch:10.0f} examples/s")
    print(f"overhead ratio (1 worker / in-process) = {one / local:.3f}   (target >= 0.95)")
    print(f"scaling ratio (2 workers / 1 worker, examples/s) = {2 * two / one:.3f}   (2.0 = linear)")
    print(f"results: {root}")


if __name__ == "__main__":
    main()
