"""Parzen-window estimator: batched raygen implementation vs naive per-point loops.

Default size is the Infusion Training setting (FIG 3.4): 10 000 samples scored on 10 000 points of dimension
784 (MNIST). The batched estimator runs on every point; the two per-point baselines are far slower, so they run
on a subset of points and their time is extrapolated linearly to all points (each point costs the same:
one pass over all samples). All three results are checked against each other on that subset.

    python benchmarks/bench_parzen.py            # 10 000 × 10 000 × 784, about 10 s on 2 cores
    python benchmarks/bench_parzen.py --quick    # 2 000 × 1 000 × 784, about 1 s
    python benchmarks/bench_parzen.py --samples 5000 --points 2000 --dim 100 --subset 50
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

from raygen.metrics import parzen_log_likelihood


def naive_numpy(samples: np.ndarray, data: np.ndarray, sigma: float) -> np.ndarray:
    """One test point at a time: squared distances to every sample, then a hand-written numpy logsumexp."""
    n, d = samples.shape
    const = -math.log(n) - 0.5 * d * math.log(2 * math.pi * sigma**2)
    out = np.empty(len(data))
    for i, x in enumerate(data):
        a = -((samples - x) ** 2).sum(axis=1) / (2 * sigma**2)
        m = a.max()
        out[i] = m + math.log(np.exp(a - m).sum()) + const
    return out


def scipy_per_point(samples: np.ndarray, data: np.ndarray, sigma: float) -> np.ndarray:
    """One test point at a time with scipy: cdist for the squared distances, scipy.special.logsumexp."""
    n, d = samples.shape
    const = -math.log(n) - 0.5 * d * math.log(2 * math.pi * sigma**2)
    out = np.empty(len(data))
    for i, x in enumerate(data):
        sq = cdist(x[None, :], samples, "sqeuclidean")[0]
        out[i] = logsumexp(-sq / (2 * sigma**2)) + const
    return out


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=10_000, help="number of model samples N")
    p.add_argument("--points", type=int, default=10_000, help="number of scored points M")
    p.add_argument("--dim", type=int, default=784, help="dimension D")
    p.add_argument("--subset", type=int, default=200, help="points timed for the per-point baselines")
    p.add_argument("--sigma", type=float, default=0.17, help="kernel width (Infusion Training: 0.17)")
    p.add_argument("--batch-size", type=int, default=100, help="data points per batch (batched estimator)")
    p.add_argument("--quick", action="store_true", help="small size: 2 000 samples × 1 000 points")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.quick:
        args.samples, args.points, args.subset = 2_000, 1_000, 100
    subset = min(args.subset, args.points)

    rng = np.random.default_rng(args.seed)
    # Uniform in [0, 1] like scaled MNIST pixels; float64 up front so no baseline pays for a conversion.
    samples = rng.random((args.samples, args.dim))
    data = rng.random((args.points, args.dim))

    print(
        f"Parzen benchmark: N={args.samples} samples × M={args.points} points × D={args.dim}, σ={args.sigma}"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}")

    batched, t_batched = timed(parzen_log_likelihood, samples, data, args.sigma, args.batch_size)
    print(
        f"  batched (raygen, float64, batch {args.batch_size}):  {t_batched:9.2f} s  (measured, all {args.points} points)"
    )

    naive_sub, t_naive_sub = timed(naive_numpy, samples, data[:subset], args.sigma)
    t_naive = t_naive_sub * args.points / subset
    print(
        f"  naive numpy per-point loop:        {t_naive:9.2f} s  "
        f"(extrapolated from {t_naive_sub:.2f} s measured on {subset} points)"
    )
    scipy_sub, t_scipy_sub = timed(scipy_per_point, samples, data[:subset], args.sigma)
    t_scipy = t_scipy_sub * args.points / subset
    print(
        f"  scipy per-point (cdist+logsumexp): {t_scipy:9.2f} s  "
        f"(extrapolated from {t_scipy_sub:.2f} s measured on {subset} points)"
    )

    ref = batched[:subset].numpy()
    err = max(np.abs(naive_sub - ref).max(), np.abs(scipy_sub - ref).max())
    print(f"  agreement on the subset: max |Δ log p| = {err:.2e} nats (mean LL {batched.mean().item():.2f})")
    print(f"speed-up of batched over naive numpy: {t_naive / t_batched:6.1f}×")
    print(f"speed-up of batched over scipy:       {t_scipy / t_batched:6.1f}×")
    if err > 1e-6:
        raise SystemExit(f"implementations disagree by {err:.2e} nats")


if __name__ == "__main__":
    main()
