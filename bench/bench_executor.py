"""Throughput of a CPU-bound parameter sweep: in-process vs 2 local Dask workers (vs 2 local processes).

--kind python (default): each task runs a path-dependent trailing-stop rule over the S&P 500 index in pure
Python (100 stop levels, about 500k bars): CPU-bound, holds the GIL, the case processes exist for.
--kind numpy: each task scores one moving-average crossover rule on the S&P 500 index shipped with arch, then
bootstraps its returns 100 times and computes the full metrics summary of the 100 resampled histories
(one vectorised call): about 0.2 s of numpy/pandas work per task on an idle core.
The machine's load average is printed too: on a shared 2-core box a busy neighbour erases any speedup.

    .venv/bin/python bench/bench_executor.py [--kind python|numpy] [--tasks 96] [--workers 2]

Prints tasks per second for each executor and the speedup over in-process. Results are checked to be
identical across executors before any figure is printed.
"""
import argparse
import os
import time

import numpy as np
import pandas as pd

from quantlab.research import metrics
from quantlab.evaluate.executor import get_executor, values

_CLOSE = None
TASK = None


def _close():
    global _CLOSE
    if _CLOSE is None:
        from arch.data import sp500
        _CLOSE = sp500.load()["Adj Close"]
    return _CLOSE


def score(params):
    "Bootstrap summary of one crossover rule: median Sharpe and 5th percentile max drawdown."
    fast, slow, seed = params
    close = _close()
    held = (close.rolling(fast).mean() > close.rolling(slow).mean()).shift(1, fill_value=False)
    r = close.pct_change().where(held, 0.0).iloc[slow:].to_numpy()
    idx = np.random.default_rng(seed).integers(0, len(r), size=(len(r), 100))
    table = metrics.summary(pd.DataFrame(r[idx]))
    return float(table["sharpe"].median()), float(table["max_drawdown"].quantile(0.05))


def trailing_stop(params):
    "A path-dependent rule no numpy call can express: long the index, out after a trailing stop, back in after a new high."
    stop, slow, seed = params
    close = _close().to_numpy().tolist()
    best = -1.0
    for k in range(100):  # 100 stop levels per task: about 500k bars of pure Python
        level = stop * (1 + 0.01 * k)
        peak, inside, wealth, prev = close[0], True, 1.0, close[0]
        for price in close[1:]:
            if inside: wealth *= price / prev
            peak = max(peak, price) if inside else peak
            if inside and price < peak * (1 - level): inside = False
            elif not inside and price > peak: inside, peak = True, price
            prev = price
        best = max(best, wealth)
    return best


def timed(executor, tasks, label):
    "Values, wall seconds, and the summed seconds spent inside the tasks (their own wall clocks)."
    start = time.perf_counter()
    results = executor.map(TASK, tasks, desc=label)
    wall = time.perf_counter() - start
    return values(results), wall, sum(r.seconds for r in results)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=96)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--kind", choices=["python", "numpy"], default="python",
                    help="python: a pure-Python path-dependent rule (CPU-bound); numpy: bootstrap metrics (memory-heavy)")
    args = ap.parse_args()
    global TASK
    TASK = trailing_stop if args.kind == "python" else score
    import dask
    from distributed import LocalCluster

    fasts, slows = [5, 10, 20, 30, 50, 75], [100, 150, 200, 250]
    tasks = [(f, s, i) for i, (f, s) in enumerate((f, s) for f in fasts for s in slows)]
    if args.kind == "python": tasks = [(0.02 + 0.01 * (i % 12), s, i) for f, s, i in tasks]
    tasks = (tasks * (args.tasks // len(tasks) + 1))[:args.tasks]
    load0 = os.getloadavg()[0]
    TASK(tasks[0])  # warm the data cache and imports in this process

    reference, t_in, busy = timed(get_executor("inprocess"), tasks, "in-process")
    rows = [("in-process", t_in, busy)]
    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which hands freed memory back to the OS
    # at once; numpy code that allocates large temporaries then pays page faults on every allocation.
    default_env = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    relaxed_env = {k: v for k, v in default_env.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    for label, env in (("dask default env", default_env), ("dask, no MALLOC_TRIM_THRESHOLD_", relaxed_env)):
        with dask.config.set({"distributed.nanny.pre-spawn-environ": env}), \
             LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, protocol="tcp",
                          host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
             get_executor(cluster.scheduler_address.replace("tcp://", "dask://")) as ex:
            ex.map(TASK, tasks[:args.workers * 2], progress=False)  # warm the workers (imports, data)
            out, t, busy = timed(ex, tasks, label)
            assert out == reference, "Dask results differ from in-process"
            rows.append((f"{label} ({args.workers} workers)", t, busy))
    with get_executor(f"local:{args.workers}") as ex:
        out, t, busy = timed(ex, tasks, f"local:{args.workers}")
        assert out == reference, "local-process results differ from in-process"
        rows.append((f"local:{args.workers} (ProcessPoolExecutor)", t, busy))

    print(f"\n{len(tasks)} tasks, results identical across executors; load average {os.getloadavg()[0]:.1f} "
          f"(was {load0:.1f} at start) on {os.cpu_count()} cores")
    print("(task-s: seconds spent inside tasks, summed; task-s / wall = tasks running at once on average)")
    print(f"{'executor':44s} {'wall s':>8s} {'tasks/s':>8s} {'speedup':>8s} {'task-s':>8s} {'overlap':>8s}")
    for label, t, busy in rows:
        print(f"{label:44s} {t:8.2f} {len(tasks) / t:8.2f} {t_in / t:7.2f}x {busy:8.2f} {busy / t:8.2f}")


if __name__ == "__main__":
    main()
