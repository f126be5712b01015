"""Running the benchmark at smoke size from the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench_smoke(out: Path, *options: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -m bench.run --smoke OPTIONS --out OUT`` from the repository's root."""
    return subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", *options, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
