"""The event engine's work per bar, counted rather than timed: Python bytecodes and C-level calls run by quantlab.

Why count. This machine kind is a shared VM whose speed drifts by 20-40% between minutes, so a 5% change in
bench_backtest.py's timings needs many alternated rounds to see. The interpreter's work does not drift: the
same code on the same bars executes the same bytecodes and makes the same calls, every run. On the event
engine's per-order path, time tracks the bytecode count closely (about 17 ns per bytecode here, with the C
calls on top), so a change that removes bytecodes or numpy calls can be judged at once, and exactly.

It counts only frames in quantlab's own modules (and the bench's strategies): numpy's and pandas' Python code
that quantlab calls is not counted as bytecodes, but each call into C made from quantlab code is counted.

Workloads (bench_backtest's, on fewer bars: tracing is ~50x slower than running):
  single  SMA(10/50) crossover, event skipping, 1 asset x 30,000 bars
  panel   the same on 100 assets x 500 bars
  trail   a trailing stop in on_bar, every bar, 1 asset x 30,000 bars
  vol     a volatility target re-sized every bar (an order on most bars), 1 asset x 10,000 bars

    .venv/bin/python bench/bench_opcodes.py                      # all four, this checkout
    .venv/bin/python bench/bench_opcodes.py --workload vol --top 30
    .venv/bin/python bench/bench_opcodes.py --root OLD           # another source tree (a `git worktree`), same bars

`--root DIR` imports `quantlab` from DIR (for example a tree made by `git worktree add OLD <sha>`), so two versions can
be compared on the same workloads. single and panel need `quantlab.strategies.event_backtest` in that tree; trail
and vol need `quantlab.backtest.driver.run_backtest` (trees from before the layered package have only the first).
"""
from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = {"single": (30_000, 1), "panel": (500, 100), "trail": (30_000, 1), "vol": (10_000, 1)}


def traced(run, ours) -> tuple[collections.Counter, collections.Counter, collections.Counter]:
    "Call `run` under a tracer: bytecodes per (file, function), Python calls per function, and C calls per callee, all made by `ours` code."
    opcodes, py_calls, c_calls = collections.Counter(), collections.Counter(), collections.Counter()

    def trace(frame, event, arg):
        if not ours(frame.f_code): return None
        frame.f_trace_opcodes = True
        if event == "opcode": opcodes[(frame.f_code.co_filename, frame.f_code.co_name)] += 1
        return trace

    def profile(frame, event, arg):
        if event == "c_call" and ours(frame.f_code): c_calls[getattr(arg, "__qualname__", repr(arg))] += 1
        elif event == "call" and ours(frame.f_code): py_calls[frame.f_code.co_name] += 1

    sys.setprofile(profile); sys.settrace(trace)
    try: run()
    finally: sys.settrace(None); sys.setprofile(None)
    return opcodes, py_calls, c_calls


def count(workload: str, top: int) -> None:
    "Run `workload` once untraced (imports, caches), then once traced; print the counts per bar."
    sys.path.insert(0, str(HERE))
    import bench_backtest as B
    import quantlab

    package = str(Path(quantlab.__file__).resolve().parent)
    n, assets = WORKLOADS[workload]
    if workload in ("single", "panel"):
        bars = B.make_bars(n, assets, 1 if workload == "single" else 2)
        run = lambda: B.ql_event_run(bars)
    else:
        bars = B.make_bars(n, 1, 4)
        run = lambda: B.ql_every_bar(bars, workload)
    run()
    opcodes, py_calls, c_calls = traced(run, lambda code: code.co_filename.startswith(package) or code.co_filename == B.__file__)
    cells = n * assets
    short = lambda path: os.path.relpath(path, os.path.dirname(package)) if path.startswith(package) else os.path.basename(path)
    print(f"{workload}: {cells:,} bar-cells ({n:,} bars x {assets}); quantlab from {package}")
    print(f"  per bar-cell: {sum(opcodes.values()) / cells:8.1f} bytecodes, {sum(py_calls.values()) / cells:6.2f} Python calls, "
          f"{sum(c_calls.values()) / cells:6.2f} C calls")
    modules = collections.Counter()
    for (path, _), v in opcodes.items(): modules[short(path)] += v
    print("  bytecodes per bar-cell by module: " + ", ".join(f"{m} {v / cells:.1f}" for m, v in modules.most_common()))
    print("  C calls per bar-cell: " + ", ".join(f"{k} {v / cells:.2f}" for k, v in c_calls.most_common(12)))
    if top: print("  Python calls per bar-cell: " + ", ".join(f"{k} {v / cells:.3f}" for k, v in py_calls.most_common(top)))
    for (path, name), v in opcodes.most_common(top): print(f"  {v / cells:8.2f}  {short(path)}:{name}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    ap.add_argument("--root", help="a source tree to import quantlab from (default: this checkout's)")
    ap.add_argument("--top", type=int, default=12, help="functions to list, most bytecodes first")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child: return count(a.workload, a.top)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [a.root or str(HERE.parent), os.environ.get("PYTHONPATH")])))
    for w in WORKLOADS if a.workload == "all" else [a.workload]:  # each in a fresh process: its own imports and caches
        subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", "--workload", w, "--top", str(a.top)], env=env, check=True)


if __name__ == "__main__":
    main()
