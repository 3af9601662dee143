"""Benchmark: the results store at sweep scale (issue 10, Scale). Targets at 10 000 runs: `raygen runs` <= 2 s;
reading all metrics <= 3x reading the same rows from one Parquet file; report and dashboard export <= 2 GB.

    python benchmarks/bench_store.py [--runs 10000] [--rows 361] [--real] [--store DIR] [--keep] [--no-report]

Writes a synthetic store shaped like a real sweep (analysis/synthetic.py benchmark_store: per run one run file,
21 metric flushes, 6 artifact saves; ended runs folded into segments as RunRecorder does). By default the
folded end state is written directly (BulkWriter: the same files, minutes instead of hours at 10 000 runs);
--real writes every piece and folds it, as the runs would. Then, side by side in this one run:
  - `raygen runs` as a command (a fresh process, imports included): first call (no run-row cache) and second;
  - raygen.results.read_metrics vs pyarrow reading the same rows from one Parquet file (the ratio);
  - read_runs, read_artifacts, and DuckDB over the metric glob vs over the one file;
  - `raygen report` and `raygen dashboard --html` as commands: wall time and peak memory (max RSS).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEAK = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True); "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(r.returncode, time.perf_counter() - t, u.ru_utime + u.ru_stime, u.ru_maxrss); "
    "print(r.stderr[-2000:], file=sys.stderr)"
)


def _time(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _command(args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak resident GiB) of a command in a fresh process (imports included).

    CPU seconds are printed beside wall seconds because on a shared machine the wall time mostly measures
    the other processes."""
    proc = subprocess.run([sys.executable, "-c", PEAK, *args], capture_output=True, text=True, check=True)
    code, seconds, cpu, kib = proc.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(args)} failed ({code}):\n{proc.stderr}")
    return float(seconds), float(cpu), int(kib) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=361, help="metric rows per run")
    parser.add_argument("--real", action="store_true", help="write every piece and fold it (slow at 10 000 runs)")
    parser.add_argument("--store", type=Path, help="use this store instead of writing a synthetic one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    parser.add_argument("--no-report", action="store_true", help="skip the report and dashboard commands")
    args = parser.parse_args(argv)

    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from analysis.synthetic import benchmark_store
    from raygen.results import read_artifacts, read_metrics, read_runs

    work = Path(tempfile.mkdtemp(prefix="raygen-bench-store-"))
    root = args.store or work / "store"
    raygen = [sys.executable, "-m", "raygen.cli"]
    try:
        if args.store is None:
            t_write, _ = _time(lambda: benchmark_store(root, trials=args.runs, metric_rows=args.rows,
                                                       bulk=not args.real))
            how = "pieces written and folded" if args.real else "folded state written directly"
            print(f"wrote {args.runs} runs x {args.rows} metric rows in {t_write:.1f} s ({how})")
        files = {sub: sum(1 for p in (root / sub).rglob("*.parquet") if ".cache" not in p.parts)
                 for sub in ("runs", "metrics", "artifacts")}
        print(f"files: {files['runs']} run rows, {files['metrics']} metric files, {files['artifacts']} artifact files")

        cache = root / "runs" / ".cache"
        shutil.rmtree(cache, ignore_errors=True)
        t_runs_cold, cpu_runs_cold, _ = _command([*raygen, "runs", "--results", str(root)])
        t_runs_warm, cpu_runs_warm, _ = _command([*raygen, "runs", "--results", str(root)])
        t_runs_read, runs = _time(lambda: read_runs(root))

        t_metrics, metrics = _time(lambda: read_metrics(root))
        one = work / "one.parquet"
        pq.write_table(pa.Table.from_pandas(metrics, preserve_index=False), one)
        t_one, same = _time(lambda: pq.read_table(one).to_pandas())
        assert len(same) == len(metrics)
        t_metrics2, _ = _time(lambda: read_metrics(root))  # both sides warm now: the ratio uses the second read
        t_one2, _ = _time(lambda: pq.read_table(one).to_pandas())
        t_arts, arts = _time(lambda: read_artifacts(root))
        con = duckdb.connect()
        t_duck_glob, n_glob = _time(lambda: con.execute(
            "SELECT count(*) FROM read_parquet(?)", [str(root / "metrics" / "*.parquet")]).fetchone()[0])
        t_duck_one, _ = _time(lambda: con.execute("SELECT count(*) FROM read_parquet(?)", [str(one)]).fetchone()[0])

        print(f"store: {len(runs)} runs, {len(metrics)} metric rows ({n_glob} visible to DuckDB), {len(arts)} artifacts")
        print(f"raygen runs (command, no run-row cache): {t_runs_cold:7.2f} s wall, {cpu_runs_cold:6.2f} s CPU")
        print(f"raygen runs (command, cached):           {t_runs_warm:7.2f} s wall, {cpu_runs_warm:6.2f} s CPU"
              "   (target <= 2 s)")
        print(f"read_runs:                               {t_runs_read:7.2f} s")
        print(f"read_artifacts:                          {t_arts:7.2f} s")
        print(f"read_metrics:                            {t_metrics2:7.2f} s   (first read {t_metrics:.2f} s)")
        print(f"one Parquet file, same rows:             {t_one2:7.2f} s   (first read {t_one:.2f} s)")
        print(f"DuckDB count(*) metrics glob / one file: {t_duck_glob:7.2f} s / {t_duck_one:.2f} s")
        print(f"ratio read_metrics / one file:           {t_metrics2 / t_one2:7.2f}x   (target <= 3x)")
        print(f"ratio raygen runs cached / 2 s target:   {t_runs_warm / 2:7.2f}x wall, {cpu_runs_warm / 2:.2f}x CPU")
        if not args.no_report:
            t_report, cpu_report, gib_report = _command([*raygen, "report", str(root), "--out", str(work / "report")])
            t_dash, cpu_dash, gib_dash = _command([*raygen, "dashboard", str(root), "--html", "--out", str(work / "dash.html")])
            print(f"raygen report:           {t_report:7.2f} s wall, {cpu_report:6.2f} s CPU, peak {gib_report:5.2f} GiB"
                  "   (target <= 2 GB)")
            print(f"raygen dashboard --html: {t_dash:7.2f} s wall, {cpu_dash:6.2f} s CPU, peak {gib_dash:5.2f} GiB"
                  "   (target <= 2 GB)")
        if args.keep:
            print(f"kept {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
