"""AIS throughput: raygen's batched AIS (chains × examples in one tensor) vs a per-example loop of the same kernel.

Both sides run `raygen.metrics.ais_log_likelihood` with the same decoder, schedule and HMC kernel (16 chains, 10
leapfrog steps, adaptive step size); the only difference is `batch_examples`: all N examples in one tensor of
16·N rows, or one example (16 rows: its chains are still one tensor) at a time. Throughput is examples ×
intermediate distributions per second. The per-example loop runs on a subset of the examples and is
extrapolated linearly (every example costs the same). Each side is timed with two gradients of log p(x | z):
autograd through the decoder (any log-likelihood function), and `MLPLogLikelihood` (the chain rule by hand);
a ratio always compares the two sides with the same gradient. Repetitions are interleaved and the best time
of each cell is kept (the machine may be shared); the ratio of each repetition is printed too. With one
thread (the default) times are the process's CPU time, which other processes' load does not inflate.

Decoders: random MLPs with a Bernoulli observation model, tanh hidden layers. `digits`: 10 → 64 → 64 → 64
(a decoder for the 8×8 digits data); `mnist`: Wu et al.'s MNIST decoder 10 → 64 → 256 → 1024 → 784.

The ceiling: one leapfrog step of one chain costs F = 4·Σ fan_in·fan_out FLOPs of matrix products (forward,
and the backward to z), whatever else it does. The script measures the GEMM throughput of exactly these
products at 16 rows (the loop) and at 16·N rows (batched), and prints (a) the time the batched run's GEMMs
alone take, hence the largest ratio any batched implementation could reach against the measured loop, and
(b) G(16·N)/G(16): the ratio if both sides were only matrix products (a compute-bound decoder).

    python benchmarks/bench_ais.py                   # both decoders, 1 thread (about two minutes)
    python benchmarks/bench_ais.py --threads 2       # both sides with 2 torch threads
    python benchmarks/bench_ais.py --decoders digits
    python benchmarks/bench_ais.py --smoke           # tiny sizes, a few seconds
"""

from __future__ import annotations

import argparse
import itertools
import resource
import time
from collections.abc import Callable

import torch
from torch import nn

from raygen.metrics import AISConfig, ais_log_likelihood, bernoulli_log_prob
from raygen.metrics.ais import MLPLogLikelihood

# name: (latent, hidden widths, data dimension, intermediate distributions T, examples timed in the loop)
DECODERS = {
    "digits": (10, [64, 64], 64, 20, 10),
    "mnist": (10, [64, 256, 1024], 784, 4, 4),
}
CHAINS, LEAPFROG = 16, 10


def decoder(latent: int, hidden: list[int], dim: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    widths = [latent, *hidden]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.Tanh()]
    layers.append(nn.Linear(widths[-1], dim))
    return nn.Sequential(*layers).requires_grad_(False)


def gemm_seconds(net: nn.Sequential, rows: list[int], calls: list[int], repeats: int, clock: Callable) -> list[float]:
    """Best time of one forward + backward-to-z pass of the decoder's matrix products alone, at each row count
    (the row counts interleaved, so that load from other processes hits them alike)."""
    lins = [m for m in net if isinstance(m, nn.Linear)]

    def once(z: torch.Tensor) -> None:
        h = z
        for lin in lins:
            h = torch.addmm(lin.bias, h, lin.weight.t())
        for lin in reversed(lins):
            h = h @ lin.weight

    zs = [torch.randn(r, lins[0].in_features) for r in rows]
    best = [float("inf")] * len(rows)
    for _ in range(repeats):
        for i, (z, c) in enumerate(zip(zs, calls, strict=True)):
            once(z)
            t0 = clock()
            for _ in range(c):
                once(z)
            best[i] = min(best[i], (clock() - t0) / c)
    return best


def bench_decoder(name: str, args: argparse.Namespace, clock: Callable) -> None:
    latent, hidden, dim, steps, subset = DECODERS[name]
    if args.smoke:
        hidden, dim, steps, subset = [16], 20, 3, 2
    steps = args.steps or steps
    n = args.examples
    subset = min(subset, n)
    net = decoder(latent, hidden, dim, args.seed)
    x = (torch.rand(n, dim, generator=torch.Generator().manual_seed(args.seed)) > 0.5).float()
    kernels: dict[str, Callable] = {
        "autograd": lambda z, xx: bernoulli_log_prob(xx, net(z)),
        "by hand": MLPLogLikelihood(net),
    }
    widths = [latent, *hidden, dim]
    flops = 4 * sum(a * b for a, b in itertools.pairwise(widths))  # per leapfrog step per chain
    grads = 1 + (steps - 1) * LEAPFROG  # gradient evaluations per chain in one AIS run
    print(
        f"\ndecoder {name} {'-'.join(map(str, widths))}: {n} examples × {steps} distributions, {CHAINS} chains × "
        f"{LEAPFROG} leapfrog steps; batched = one tensor of {CHAINS * n} rows, loop = {CHAINS} rows per call "
        f"(timed on {subset} examples, extrapolated)"
    )

    def run(fn: Callable, examples: int, batch: int) -> float:
        cfg = AISConfig(steps=steps, chains=CHAINS, leapfrog_steps=LEAPFROG, batch_examples=batch)
        t0 = clock()
        ais_log_likelihood(fn, x[:examples], latent, cfg, generator=torch.Generator().manual_seed(1))
        return clock() - t0

    for fn in kernels.values():  # warm-up: first-call allocations and lazy initialisation belong to neither side
        run(fn, 1, 1)
    times: dict[str, dict[str, list[float]]] = {k: {"batched": [], "loop": []} for k in kernels}
    for _ in range(args.repeats):
        for k, fn in kernels.items():
            times[k]["batched"].append(run(fn, n, n))
            times[k]["loop"].append(run(fn, subset, 1) * n / subset)
    work = n * steps
    print(f"  {'gradient':10} {'batched ex·dist/s':>18} {'loop ex·dist/s':>15} {'ratio':>7}   per repetition")
    best = {}
    for k, t in times.items():
        tb, tl = min(t["batched"]), min(t["loop"])
        best[k] = (tb, tl)
        reps = ", ".join(f"{a / b:.1f}" for a, b in zip(t["loop"], t["batched"], strict=True))
        print(f"  {k:10} {work / tb:18.1f} {work / tl:15.1f} {tl / tb:6.1f}x   ({reps})")
    (ab, al), (hb, hl) = best["autograd"], best["by hand"]
    print(f"  gradient by hand vs autograd: batched {ab / hb:.2f}x faster, loop {al / hl:.2f}x faster")

    g_small, g_big = gemm_seconds(net, [CHAINS, CHAINS * n], [args.gemm_calls * 20, args.gemm_calls], 7, clock)
    rate_small, rate_big = CHAINS * flops / g_small / 1e9, CHAINS * n * flops / g_big / 1e9
    t_gemm = grads * g_big  # the batched run's matrix products alone
    print(
        f"  ceiling: F = {flops / 1e3:.1f} kFLOP per leapfrog step per chain; GEMM throughput "
        f"{rate_small:.1f} GFLOP/s at {CHAINS} rows, {rate_big:.1f} GFLOP/s at {CHAINS * n} rows"
    )
    print(
        f"    the batched run's GEMMs alone take {t_gemm:.2f} s ({100 * t_gemm / hb:.0f}% of its time by hand): "
        f"were all else free, batched AIS would be at most {al / t_gemm:.1f}x the autograd loop, "
        f"{hl / t_gemm:.1f}x the loop by hand"
    )
    print(f"    a decoder that is all matrix products: at most {rate_big / rate_small:.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoders", nargs="+", choices=sorted(DECODERS), default=["digits", "mnist"])
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--steps", type=int, default=None, help="intermediate distributions T (default per decoder)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, the same for both sides")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repetitions (best time kept)")
    p.add_argument("--gemm-calls", type=int, default=5, help="calls per timing of the batched GEMMs")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.smoke:
        args.examples, args.repeats, args.gemm_calls = 8, 1, 1
    torch.set_num_threads(args.threads)
    # With one thread the process's CPU time is the work done, whatever else runs on the machine; with more,
    # CPU time would add the threads up, so the wall clock is used (and the machine must be otherwise idle).
    clock = time.process_time if args.threads == 1 else time.perf_counter
    print(
        f"AIS throughput, batched vs a per-example loop of the same kernel; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s) for both sides; times are "
        f"{'process CPU time' if args.threads == 1 else 'wall-clock time'}"
    )
    t0 = time.perf_counter()
    for name in args.decoders:
        bench_decoder(name, args, clock)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"\nwall {time.perf_counter() - t0:.0f} s, process CPU {usage.ru_utime + usage.ru_stime:.0f} s "
        "(wall ≫ CPU/threads means the machine was shared: only the ratios mean something)"
    )


if __name__ == "__main__":
    main()
