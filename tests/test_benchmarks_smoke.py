"""Every benchmark script runs at a smoke size and prints its side-by-side ratio (no timing asserted)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    ("bench_ais.py", ["--smoke"]),
    ("bench_first_run.py", ["--smoke"]),
    ("bench_infusion_step.py", ["--smoke"]),
    ("bench_parzen.py", ["--samples", "300", "--points", "200", "--dim", "16", "--subset", "20"]),
    ("bench_professor.py", ["--smoke"]),
    ("bench_report.py", ["--trials", "12", "--rows", "20"]),
    ("bench_store.py", ["--runs", "12", "--rows", "40", "--real", "--no-report"]),
    pytest.param("bench_ray_train.py", ["--smoke"], marks=pytest.mark.ray),
    pytest.param("bench_sweep.py", ["--smoke"], marks=pytest.mark.ray),
]


@pytest.mark.parametrize("script, args", CASES)
def test_benchmark_runs_and_prints_a_ratio(script, args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DISABLE_USAGE_STATS": "1"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    text = (out.stdout + out.stderr).lower()
    assert "ratio" in text or re.search(r"\d+\.\d+\s?[x×]", text), text[-2000:]
