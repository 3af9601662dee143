"""Training-step cost of Professor Forcing relative to teacher forcing, on the same model and batch.

The thesis (§2.4.2) reports Professor Forcing training at 3× the cost of teacher forcing ("since our model
includes sampling phase, as well as passing the hidden distributions ... to the discriminator"); our target
is a ratio ≤ 3.

Both algorithms get the same generator weights and the same minibatch; one repetition runs a teacher-forcing
step, then a Professor Forcing step (interleaved, so drifts in machine load hit both alike). Professor
Forcing runs with both gates open (its most expensive step: NLL + C_f backward through the free-running
run and the discriminator, then the C_d update); a gate that is closed only makes a step cheaper.
Reported: median seconds per step, sequences per second, and the ratio of the medians.

    python benchmarks/bench_professor.py                 # CPU-sized: 1×256 GRU, D width 256, L=100, batch 32
    python benchmarks/bench_professor.py --paper --device cuda   # PTB §2.4.2: 1×1024, D 2048, L=500
    python benchmarks/bench_professor.py --smoke         # seconds; checks the script runs
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from raygen.algorithms.sequence import ProfessorForcing, TeacherForcing
from raygen.config import RunConfig
from raygen.data import Dataset
from raygen.distributed import LocalContext


class GatesOpen(LocalContext):
    """Reports a discriminator accuracy of 0.9: > 0.75 (generator gets C_f) and ≤ 0.99 (D is updated)."""

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        return torch.tensor(0.9, dtype=torch.float64)


def build(
    args: argparse.Namespace, device: torch.device
) -> tuple[TeacherForcing, dict[int, ProfessorForcing], torch.Tensor]:
    """Teacher forcing and one Professor Forcing model per discriminator width, all with the same generator."""
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, args.vocab, (4 * args.batch, args.seq_len), generator=g)
    dataset = Dataset(
        name="bench",
        kind="sequence",
        shape=(args.seq_len,),
        splits={"train": data, "valid": data, "test": data},
        vocab=[chr(ord("!") + i) for i in range(args.vocab)],
    )
    generator = {"layers": args.layers, "width": args.width, "embed_dim": args.embed}

    def config(name: str, algo: dict) -> RunConfig:
        return RunConfig.model_validate(
            {
                "algorithm": name,
                "dataset": "bench",
                "device": device.type,
                "train": {"batch_size": args.batch, "lr": 1e-4, "grad_clip": 5.0},
                "algo": algo,
            }
        )

    torch.manual_seed(0)
    tf = TeacherForcing(config("teacher", {"generator": generator}), dataset).to(device)
    pfs = {}
    for width in args.disc_width:
        pf = ProfessorForcing(
            config("professor", {"generator": generator, "discriminator": {"width": width}}), dataset
        )
        pf.generator.load_state_dict(tf.generator.state_dict())
        pf.ctx = GatesOpen()
        pfs[width] = pf.to(device)
    return tf, pfs, data[: args.batch].to(device)


def timed_step(algo, batch: torch.Tensor, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    algo.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--width", type=int, default=256, help="generator GRU width")
    p.add_argument("--embed", type=int, default=64, help="input embedding size")
    p.add_argument(
        "--disc-width",
        type=int,
        nargs="+",
        default=None,
        help="discriminator GRU/MLP width(s); several give one PF model each (default: --width)",
    )
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=50, help="symbols (PTB chars: 50)")
    p.add_argument("--reps", type=int, default=10, help="interleaved repetitions (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--paper", action="store_true", help="PTB sizes of §2.4.2: 1×1024, D 2048, L=500")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repetitions")
    args = p.parse_args()
    if args.paper:
        args.layers, args.width, args.disc_width, args.seq_len, args.embed = 1, 1024, [2048], 500, 128
    if args.smoke:
        args.width, args.disc_width, args.seq_len, args.batch, args.reps, args.warmup = (
            16,
            [8, 16],
            20,
            4,
            2,
            1,
        )
    args.disc_width = args.disc_width or [args.width]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tf, pfs, batch = build(args, device)
    times: dict[str, list[float]] = {"tf": [], **{f"pf{w}": [] for w in pfs}}
    for rep in range(args.warmup + args.reps):
        measured = {"tf": timed_step(tf, batch, device)}
        for width, pf in pfs.items():
            measured[f"pf{width}"] = timed_step(pf, batch, device)
        if rep >= args.warmup:
            for key, value in measured.items():
                times[key].append(value)
    medians = {k: statistics.median(v) for k, v in times.items()}
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    lines = [
        f"device: {name}",
        (
            f"generator {args.layers}x{args.width} (embed {args.embed}), L={args.seq_len}, batch {args.batch}, "
            f"V={args.vocab}, {args.reps} interleaved repetitions, median step times"
        ),
        (
            f"teacher forcing                 : {medians['tf'] * 1e3:9.1f} ms/step  "
            f"{args.batch / medians['tf']:8.1f} sequences/s"
        ),
    ]
    for width in pfs:
        m = medians[f"pf{width}"]
        lines.append(
            f"professor forcing, D width {width:5d}: {m * 1e3:9.1f} ms/step  {args.batch / m:8.1f} sequences/s  "
            f"ratio PF/TF {m / medians['tf']:6.2f}x"
        )
    lines.append("(thesis §2.4.2: PF costs 3x TF; target <= 3x)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
