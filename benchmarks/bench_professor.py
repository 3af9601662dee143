"""Training-step cost of Professor Forcing relative to teacher forcing, on the same model and batch.

The thesis (§2.4.2) reports Professor Forcing training at 3× the cost of teacher forcing ("since our model
includes sampling phase, as well as passing the hidden distributions ... to the discriminator"); our target
is a ratio ≤ 3. Its PTB model: a 1×1024 GRU generator, a discriminator whose layers all have 2048 units
(twice the generator's width) fed the pre-tanh states and the 128-wide character embeddings, L=500.

Both algorithms get the same generator weights and the same minibatch; one repetition runs a teacher-forcing
step, then one Professor Forcing step per discriminator width (interleaved, so drifts in machine load hit
all alike). Professor Forcing runs with both gates open (its most expensive step: NLL + C_f backward through
the free-running run and the discriminator, then the C_d update); a gate that is closed only makes a step
cheaper. Per model: median milliseconds per step, the PF/TF ratio of the medians, and the PF/TF ratio of
the matmul FLOPs of one step (torch's FlopCounterMode; elementwise work is not counted). On a device that
is busy with matmuls (a CPU at these sizes) the FLOP ratio is the floor of the time ratio, whatever the
implementation; where kernel launches and sequential steps dominate (a GPU at small batch) it is not.

On CPU the step times are CPU time of this process (time.process_time), not wall time: on a machine shared
with other jobs the wall time includes waiting for a core, which hits the slower step harder and makes
ratios drift; the CPU time of a single-threaded step does not. On CUDA they are synchronized wall times.

    python benchmarks/bench_professor.py                  # ~1 min on 1 CPU thread: G 1×256, D 64/256/512
    python benchmarks/bench_professor.py --paper --device cuda   # the PTB sizes themselves (§2.4.2)
    python benchmarks/bench_professor.py --smoke          # seconds; checks the script runs
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

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
    generator = {
        "layers": args.layers,
        "width": args.width,
        "embed_dim": args.embed,
        "behaviour_embedding": not args.no_embedding,
    }

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


def step_timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Seconds one call takes: CPU time of this process on CPU, synchronized wall time on CUDA."""

    def cpu(fn: Callable[[], object]) -> float:
        t0 = time.process_time()
        fn()
        return time.process_time() - t0

    def cuda(fn: Callable[[], object]) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    return cuda if device.type == "cuda" else cpu


def step_flops(algo, batch: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        algo.train_step(batch)
    return counter.get_total_flops()


def label(width: int, generator_width: int) -> str:
    if width == generator_width:
        return "generator's width"
    if width == 2 * generator_width:
        return "2x generator's width: the thesis' PTB proportion"
    return f"{width / generator_width:g}x generator's width"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--width", type=int, default=256, help="generator GRU width")
    p.add_argument("--embed", type=int, default=32, help="input embedding size (thesis PTB: width/8)")
    p.add_argument(
        "--no-embedding",
        action="store_true",
        help="behaviour = pre-tanh states only (default: also the embeddings, as on PTB §2.4.2)",
    )
    p.add_argument(
        "--disc-width",
        type=int,
        nargs="+",
        default=None,
        help="discriminator GRU/MLP width(s), one PF model each (default: width/4, width, 2×width)",
    )
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=50, help="symbols (PTB chars: 50)")
    p.add_argument("--reps", type=int, default=8, help="interleaved repetitions (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--paper", action="store_true", help="PTB sizes of §2.4.2: 1×1024, embed 128, D 2048, L=500"
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 repetitions")
    args = p.parse_args()
    if args.paper:
        args.layers, args.width, args.embed, args.disc_width, args.seq_len = 1, 1024, 128, [2048], 500
    if args.smoke:
        args.width, args.embed, args.disc_width, args.seq_len, args.batch = 16, 4, [8, 16, 32], 20, 4
        args.reps, args.warmup = 2, 1
    args.disc_width = args.disc_width or [args.width // 4, args.width, 2 * args.width]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tf, pfs, batch = build(args, device)
    timed = step_timer(device)
    times: dict[str, list[float]] = {"tf": [], **{f"pf{w}": [] for w in pfs}}
    for rep in range(args.warmup + args.reps):
        measured = {"tf": timed(lambda: tf.train_step(batch))}
        for width, pf in pfs.items():
            measured[f"pf{width}"] = timed(lambda pf=pf: pf.train_step(batch))
        if rep >= args.warmup:
            for key, value in measured.items():
                times[key].append(value)
    medians = {k: statistics.median(v) for k, v in times.items()}
    tf_flops = step_flops(tf, batch)

    if device.type == "cuda":
        name, clock = torch.cuda.get_device_name(), "synchronized wall time"
    else:
        name, clock = f"CPU, {torch.get_num_threads()} thread(s)", "CPU time of the process"
    behaviour = "pre-tanh" if args.no_embedding else "pre-tanh + embedding"
    lines = [
        f"device: {name}; step times: median {clock} over {args.reps} interleaved repetitions",
        (
            f"generator {args.layers}x{args.width} (embed {args.embed}), behaviour {behaviour}, "
            f"L={args.seq_len}, batch {args.batch}, V={args.vocab}"
        ),
        f"{'':28s} {'ms/step':>9s} {'PF/TF time':>11s} {'PF/TF FLOPs':>12s}",
        f"{'teacher forcing':28s} {medians['tf'] * 1e3:9.1f} {'':11s} {'':12s} {tf_flops / 1e9:.3g} GFLOP/step",
    ]
    for width, pf in pfs.items():
        m = medians[f"pf{width}"]
        flop_ratio = step_flops(pf, batch) / tf_flops
        lines.append(
            f"{f'professor forcing, D {width}':28s} {m * 1e3:9.1f} {m / medians['tf']:10.2f}x "
            f"{flop_ratio:11.2f}x  D {label(width, args.width)}"
        )
    lines.append("(thesis §2.4.2: PF costs 3x TF; target <= 3x)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
