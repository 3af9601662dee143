"""Benchmark: building the full report vs reading the store once (issue 5; target: report ≤ 5× read).

    python benchmarks/bench_report.py [--trials 1000] [--rows 500] [--store DIR] [--keep]

Writes a synthetic store (one infusion sweep, `trials` trials × `rows` metric rows each; analysis/synthetic.py)
unless --store names an existing one, then prints:
  - read (raygen.results): read_runs + read_metrics + read_artifacts, the per-file pandas readers;
  - read (analysis.load):  the bulk pyarrow readers the report uses;
  - report:                build_report end to end (it reads the store itself);
and the ratio report / read for both readers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=500, help="metric rows per trial")
    parser.add_argument("--store", type=Path, help="use this store instead of writing a synthetic one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and report")
    args = parser.parse_args(argv)

    from analysis.load import read_artifacts_fast, read_metrics_fast, read_runs_fast, read_sweep_specs
    from analysis.report import build_report
    from analysis.synthetic import benchmark_store
    from raygen.results import read_artifacts, read_metrics, read_runs

    work = Path(tempfile.mkdtemp(prefix="raygen-bench-"))
    root = args.store or work / "store"
    try:
        if args.store is None:
            t_write, _ = _time(lambda: benchmark_store(root, trials=args.trials, metric_rows=args.rows))
            print(f"wrote synthetic store: {args.trials} trials x {args.rows} metric rows in {t_write:.1f} s ({root})")
        # Warm the imports and the OS file cache so neither side pays for them alone.
        import matplotlib.figure  # noqa: F401
        import optuna.importance  # noqa: F401

        read_runs(root)
        t_read_raygen, (runs, metrics, _) = _time(lambda: (read_runs(root), read_metrics(root), read_artifacts(root)))
        t_read_fast, _ = _time(lambda: (read_runs_fast(root), read_metrics_fast(root), read_artifacts_fast(root),
                                        read_sweep_specs(root)))
        t_report, summary = _time(lambda: build_report(root, work / "report"))
        print(f"store: {len(runs)} runs, {len(metrics)} metric rows")
        print(f"read (raygen.results readers): {t_read_raygen:7.2f} s")
        print(f"read (analysis.load readers):  {t_read_fast:7.2f} s")
        print(f"build_report:                  {t_report:7.2f} s  ({len(summary.built)} built, "
              f"{len(summary.skipped)} not built, {len(summary.errors)} errors)")
        print(f"ratio report / read (raygen.results): {t_report / t_read_raygen:5.2f}x")
        print(f"ratio report / read (analysis.load):  {t_report / t_read_fast:5.2f}x   (target <= 5x)")
        if args.keep:
            print(f"kept {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
