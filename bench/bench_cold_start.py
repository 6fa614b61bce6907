"""Cold start as a newcomer feels it: whole processes, median of N (run by hand; prints figures, not a test).

    .venv/bin/python bench/bench_cold_start.py [--runs 7]

Times `quantlab backtest sma_cross -p fast 20 -p slow 100` (the README's first backtest: 5,031 bars of the bundled
S&P 500), `quantlab --help`, and `import quantlab.strategies`, each as a fresh process, interleaved so that machine
noise falls on all of them alike. Goal (#17): the CLI backtest under 2 s.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
CASES = {
    "quantlab backtest sma_cross -p fast 20 -p slow 100": [str(BIN / "quantlab"), "backtest", "sma_cross", "-p", "fast", "20", "-p", "slow", "100"],
    "quantlab --help": [str(BIN / "quantlab"), "--help"],
    "python -c 'import quantlab.strategies'": [sys.executable, "-c", "import quantlab.strategies"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    a = p.parse_args()
    times = {k: [] for k in CASES}
    with tempfile.TemporaryDirectory() as d:
        for cmd in CASES.values(): subprocess.run(cmd, cwd=d, capture_output=True)  # warm the OS file cache and numba's cache
        for _ in range(a.runs):
            for k, cmd in CASES.items():
                t0 = time.perf_counter()
                done = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
                times[k].append(time.perf_counter() - t0)
                if done.returncode: sys.exit(f"{k} failed: {done.stderr[-500:]}")
    for k, v in times.items():
        print(f"{k:<55} median {statistics.median(v):.2f} s  (min {min(v):.2f}, max {max(v):.2f}, {a.runs} runs)")


if __name__ == "__main__":
    main()
