"""Portfolio construction speed (#16): one rebalance of 500 assets from 3 years of daily returns (run by hand).

    .venv/bin/python bench/bench_construct.py [--runs 5] [--assets 500] [--days 756]

The returns are a one-factor model (market beta 0.5-1.5, 1% daily idiosyncratic noise; a speed bench needs the
shape of real data, not its content: the 20-stock panel is too small). Each run times Ledoit-Wolf
(`covariance(..., "ledoit_wolf")`) and long-only minimum variance with a 2% cap (`min_variance`), then the other
methods on the same covariance. Goal: Ledoit-Wolf + minimum variance under 1 s. The first call of the run pays
cvxpy's import (about 2 s, reported apart), as a process does once.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--assets", type=int, default=500)
    p.add_argument("--days", type=int, default=756)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    market = rng.standard_normal((a.days, 1)) * 0.01
    rets = pd.DataFrame(market * rng.uniform(0.5, 1.5, a.assets) + rng.standard_normal((a.days, a.assets)) * 0.01 + 3e-4,
                        columns=[f"S{i:03d}" for i in range(a.assets)])
    t = time.perf_counter(); import cvxpy  # noqa: F401
    print(f"import cvxpy: {time.perf_counter() - t:.2f} s (once a process)")
    from quantlab.research import construct as C
    from quantlab.research.covariance import covariance
    caps = C.Constraints(max_weight=0.02)
    times = {k: [] for k in ("ledoit_wolf", "min_variance", "ledoit_wolf + min_variance", "max_sharpe", "mean_variance", "risk_parity", "hrp")}
    for _ in range(a.runs):
        t0 = time.perf_counter(); S = covariance(rets, "ledoit_wolf"); t1 = time.perf_counter()
        C.min_variance(S, caps); t2 = time.perf_counter()
        times["ledoit_wolf"].append(t1 - t0); times["min_variance"].append(t2 - t1); times["ledoit_wolf + min_variance"].append(t2 - t0)
        mu = rets.mean() * 252
        for name, run in (("max_sharpe", lambda: C.max_sharpe(mu, S, constraints=caps)), ("mean_variance", lambda: C.mean_variance(mu, S, 5, caps)),
                          ("risk_parity", lambda: C.risk_parity(S)), ("hrp", lambda: C.hrp(S))):
            t = time.perf_counter(); run(); times[name].append(time.perf_counter() - t)
    print(f"{a.assets} assets, {a.days} days, best of {a.runs} (median):")
    for k, v in times.items(): print(f"  {k:28s} {min(v):6.3f} s  ({np.median(v):.3f})")


if __name__ == "__main__":
    main()
