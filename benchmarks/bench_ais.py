"""AIS throughput: raygen's batched AIS (chains × examples in one tensor) vs a per-example loop of the same kernel.

Both run `raygen.metrics.ais_log_likelihood` with the same decoder, schedule and HMC kernel (16 chains, 10
leapfrog steps, adaptive step size); the only difference is `batch_examples`: all examples in one tensor of
16·N rows, or one example (16 rows) at a time. Throughput is examples × intermediate distributions per second.
The per-example loop runs on a subset of the examples and is extrapolated linearly (every example costs the
same). The decoder is a random MLP with a Bernoulli observation model on MNIST-sized data; the default widths
are those of Wu et al.'s MNIST decoders (latent 10 → 64 → 256 → 1024 → 784, tanh).

    python benchmarks/bench_ais.py                 # 100 examples × 100 distributions, Wu et al. decoder
    python benchmarks/bench_ais.py --hidden 64     # a small decoder: per-call overhead dominates the loop
    python benchmarks/bench_ais.py --smoke         # tiny sizes, a few seconds
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from torch import nn

from raygen.metrics import AISConfig, ais_log_likelihood, bernoulli_log_prob


def decoder(latent: int, hidden: list[int], dim: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    widths = [latent, *hidden]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.Tanh()]
    layers.append(nn.Linear(widths[-1], dim))
    return nn.Sequential(*layers).requires_grad_(False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--steps", type=int, default=100, help="intermediate distributions T")
    p.add_argument("--latent", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--dim", type=int, default=784)
    p.add_argument("--subset", type=int, default=5, help="examples timed for the per-example loop")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.smoke:
        args.examples, args.steps, args.hidden, args.dim, args.subset = 8, 5, [16], 20, 2
    subset = min(args.subset, args.examples)

    net = decoder(args.latent, args.hidden, args.dim, args.seed)
    x = (torch.rand(args.examples, args.dim, generator=torch.Generator().manual_seed(args.seed)) > 0.5).float()

    def loglik(z: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return bernoulli_log_prob(xx, net(z))

    print(
        f"AIS benchmark: {args.examples} examples × {args.steps} distributions, 16 chains, 10 leapfrog steps; "
        f"decoder {args.latent}→{'→'.join(map(str, args.hidden))}→{args.dim}"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    def run(n: int, batch: int) -> float:
        cfg = AISConfig(steps=args.steps, batch_examples=batch)
        t0 = time.perf_counter()
        ais_log_likelihood(loglik, x[:n], args.latent, cfg, generator=torch.Generator().manual_seed(1))
        return time.perf_counter() - t0

    run(1, 1)  # warm-up: first-call allocations and lazy initialisation are not part of either side
    t_batched = run(args.examples, args.examples)
    t_loop = run(subset, 1) * args.examples / subset
    work = args.examples * args.steps
    print(f"  batched (one tensor of {16 * args.examples} rows): {t_batched:8.2f} s  {work / t_batched:10.1f} ex·dist/s")
    print(
        f"  per-example loop (16 rows at a time):     {t_loop:8.2f} s  {work / t_loop:10.1f} ex·dist/s "
        f"(extrapolated from {subset} examples)"
    )
    print(f"speed-up ratio of batched over the per-example loop: {t_loop / t_batched:.1f}x")


if __name__ == "__main__":
    main()
