"""Infusion Training step: raygen's `Infusion.train_step` vs a bare hand-written PyTorch loop (issue 2).

Both do the same update on the same MNIST-shaped problem: a 784-1200-1200 ReLU MLP with per-step batch
norm and two 784-unit heads (sigmoid mean, variance 0.1·sigmoid + 1e-4), batch 100 of random [0, 1]
data shaped (100, 1, 28, 28), T = 10 steps of the denoising procedure with an increasing infusion rate
(α⁽ᵗ⁾ = 0.01·t), loss Σ_t (t/T)·(−log p⁽ᵗ⁾(x | z̃⁽ᵗ⁻¹⁾)), one Adam update per minibatch. The bare loop
imports nothing from raygen; it skips what raygen adds around the update (the per-step NLL metrics,
the training-chain lower bound every `algo.train_bound_every` updates, the non-finite-loss check, the
update counter).

One repetition times a raygen step, then a bare step (interleaved, so drifts in machine load hit both
alike). Reported: median milliseconds per step of each, and throughput(raygen) / throughput(bare) =
median bare time / median raygen time. Target: ≥ 0.95. With one CPU thread the script also reports the
ratio of CPU times, which machine load from other processes does not distort.

    python benchmarks/bench_infusion_step.py                    # CPU, torch's default threads
    python benchmarks/bench_infusion_step.py --threads 1 --reps 20
    python benchmarks/bench_infusion_step.py --device cuda
    python benchmarks/bench_infusion_step.py --smoke            # seconds; checks the script runs
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import time

import torch
from torch import nn


# ---------------------------------------------------------------------------------------------- bare loop
class BareOperator(nn.Module):
    def __init__(self, dim: int, hidden: tuple[int, ...], steps: int) -> None:
        super().__init__()
        widths = (dim, *hidden)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.norms = nn.ModuleList(
            nn.ModuleList(nn.BatchNorm1d(w) for _ in range(steps)) for w in hidden
        )  # [layer][step]
        self.head = nn.Linear(widths[-1], 2 * dim)

    def forward(self, z: torch.Tensor, step: int) -> torch.Tensor:
        h = z
        for linear, norms in zip(self.linears, self.norms):
            h = torch.relu(norms[step](linear(h)))
        return self.head(h)


class BareInfusion:
    def __init__(self, dim: int, hidden: tuple[int, ...], steps: int, omega: float, lr: float,
                 prior_mean: torch.Tensor, prior_std: torch.Tensor) -> None:
        self.dim, self.steps = dim, steps
        self.alphas = [t * omega for t in range(steps)]
        self.net = BareOperator(dim, hidden, steps)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.prior_mean, self.prior_std = prior_mean, prior_std

    def to(self, device: torch.device) -> BareInfusion:
        self.net.to(device)
        self.prior_mean, self.prior_std = self.prior_mean.to(device), self.prior_std.to(device)
        return self

    def train_step(self, batch: torch.Tensor) -> float:
        x = batch.reshape(batch.shape[0], -1)
        d, T = self.dim, self.steps
        z = self.prior_mean + self.prior_std * torch.randn_like(x)  # α⁽⁰⁾ = 0: z̃⁽⁰⁾ ~ p⁽⁰⁾
        loss = x.new_zeros(x.shape[0])
        for t in range(1, T + 1):
            h = self.net(z, t - 1)
            mean = torch.sigmoid(h[:, :d])
            std = (0.1 * torch.sigmoid(h[:, d:]) + 1e-4).sqrt()
            log_px = (-0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(1)
            loss = loss - (t / T) * log_px
            if t < T:
                with torch.no_grad():
                    eps = torch.randn_like(x)
                    mask = torch.rand_like(x) < self.alphas[t]
                    z = torch.where(mask, x, mean) + torch.where(mask, 0.01, std) * eps
        loss = loss.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()


# ---------------------------------------------------------------------------------------------- raygen
def build_raygen(args: argparse.Namespace, device: torch.device, data: torch.Tensor):
    from raygen.algorithms.infusion import Infusion
    from raygen.config import build_config
    from raygen.data import Dataset

    config = build_config(algorithm="infusion", dataset="mnist", overrides={
        "algo.steps": args.steps, "algo.omega": 0.01, "algo.alpha0": 0.0, "algo.net.hidden": list(args.hidden),
        "train.batch_size": args.batch, "train.lr": 1e-3, "device": device.type,
        "algo.train_bound_every": args.train_bound_every,
    })
    dataset = Dataset(name="bench", kind="image", shape=tuple(data.shape[1:]),
                      splits={"train": data, "valid": data, "test": data})
    algo = Infusion(config, dataset).to(device)
    algo.setup(data.to(device))
    algo.train()
    return algo


def timed(step, batch: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) of one step."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.thread_time()
    step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.thread_time() - c0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=10, help="T, infusion steps per training example")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--hidden", type=int, nargs="+", default=[1200, 1200])
    p.add_argument("--reps", type=int, default=10, help="interleaved repetitions (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--train-bound-every", type=int, default=10,
                   help="raygen's algo.train_bound_every (default 10 as the config; 1 = the training-chain "
                   "lower-bound metric in every step)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repetitions")
    args = p.parse_args()
    if args.smoke:
        args.hidden, args.steps, args.reps, args.warmup = [32, 32], 3, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    g = torch.Generator().manual_seed(0)
    data = torch.rand(10 * args.batch, 1, 28, 28, generator=g)
    flat = data.reshape(len(data), -1)
    torch.manual_seed(0)
    raygen = build_raygen(args, device, data)
    bare = BareInfusion(flat.shape[1], tuple(args.hidden), args.steps, 0.01, 1e-3,
                        flat.mean(0), (flat.var(0, unbiased=False) + 1e-5).sqrt()).to(device)
    batch = data[: args.batch].to(device)

    for _ in range(args.warmup):
        timed(raygen.train_step, batch, device)
        timed(bare.train_step, batch, device)
    ours, theirs = [], []
    for _ in range(args.reps):
        ours.append(timed(raygen.train_step, batch, device))
        theirs.append(timed(bare.train_step, batch, device))
    ours_wall, bare_wall = (statistics.median(t[0] for t in runs) for runs in (ours, theirs))
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {name}\n"
        f"MLP 784-{'-'.join(map(str, args.hidden))} (+2x784 heads), batch {args.batch}, T={args.steps}, "
        f"{args.reps} interleaved repetitions (medians)\n"
        f"raygen Infusion.train_step: {1e3 * ours_wall:8.1f} ms/step  ({args.batch / ours_wall:8.1f} examples/s)\n"
        f"bare PyTorch loop:          {1e3 * bare_wall:8.1f} ms/step  ({args.batch / bare_wall:8.1f} examples/s)\n"
        f"throughput ratio raygen/bare (wall time): {bare_wall / ours_wall:.3f}  (target >= 0.95)"
    )
    if device.type == "cpu" and torch.get_num_threads() == 1:
        # On a shared machine wall time also measures the neighbours; one thread's CPU time does not.
        ours_cpu, bare_cpu = (statistics.median(t[1] for t in runs) for runs in (ours, theirs))
        print(
            f"CPU time per step: raygen {1e3 * ours_cpu:.1f} ms, bare {1e3 * bare_cpu:.1f} ms; "
            f"throughput ratio (CPU time): {bare_cpu / ours_cpu:.3f}"
        )


if __name__ == "__main__":
    main()
