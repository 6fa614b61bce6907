"""Execution algorithm speed (#16): slicing 1,000 parent orders over a day of minute bars (run by hand).

    .venv/bin/python bench/bench_execution.py [--runs 5] [--parents 1000]

Two figures:
- **plan**: `cumulative_targets` for every parent (VWAP on a volume profile, each parent its own window inside the
  390-minute session) and `plan_slices` rounding them to whole lots: the schedule of every child. Goal: under 1 s.
- **desk**: the same parents worked bar by bar by `ExecutionDesk` through an `OrderManager` and a `SimBroker`
  (risk check, submit, amend, fills) over the day: what a live or backtest day with 1,000 parents costs, for scale.

The bars are one symbol's synthetic minute bars (a random walk, a U-shaped volume profile); the speed of slicing
does not depend on the prices.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--parents", type=int, default=1000)
    a = p.parse_args()
    from quantlab.trading.execution import AlgoSpec, ExecutionDesk, VolumeProfile, cumulative_targets, plan_slices
    rng = np.random.default_rng(0)
    minutes = np.arange(9 * 60 + 31, 16 * 60 + 1)
    u = 1 + 3 * ((minutes - minutes.mean()) / (np.ptp(minutes) / 2)) ** 2  # U-shaped: busy open and close
    profile = VolumeProfile(pd.Series(u / u.sum(), index=minutes), 5e6, 20)
    qty = rng.integers(1, 200, a.parents) * 100.0 * rng.choice([-1, 1], a.parents)
    start = rng.integers(0, 300, a.parents)
    length = rng.integers(10, 90, a.parents)
    best = np.inf
    for _ in range(a.runs):
        t = time.perf_counter()
        K = int(length.max())
        targets = np.ones((a.parents, K))
        for k in range(a.parents):  # each parent's own window on the profile
            n = int(length[k]); targets[k, :n] = cumulative_targets("vwap", n, profile.share.to_numpy()[start[k]:start[k] + n])
        slices = plan_slices(qty, targets, lot=100)
        best = min(best, time.perf_counter() - t)
    assert np.allclose(slices.sum(axis=1), qty)
    print(f"plan: {a.parents} parents over a 390-minute day, {int((slices != 0).sum()):,} child slices: best of {a.runs} {best * 1e3:.1f} ms")

    from quantlab.core import Instrument
    from quantlab.trading.brokers.sim import BarArrays, SimBroker, VolumeShare
    from quantlab.trading.oms import OrderManager
    from quantlab.trading.portfolio import Portfolio
    idx = pd.date_range("2024-03-04 09:31", periods=390, freq="1min", tz="America/New_York").tz_convert("UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, 390)))
    vol = profile.share.to_numpy() * profile.adv
    panels = {f: pd.DataFrame({"X": close}, index=idx) for f in ("open", "high", "low", "close")}
    panels["volume"] = pd.DataFrame({"X": vol}, index=idx)
    pf = Portfolio(1e12, [Instrument("X")])
    broker = SimBroker(cash=1e12, partial=VolumeShare(0.5))
    broker.attach(BarArrays.from_panels(panels))
    oms = OrderManager(broker, pf)
    desk = ExecutionDesk(oms, pf)
    specs = {n: AlgoSpec("twap", int(n), 0.5, 5.0) for n in np.unique(length)}
    ts = idx.as_unit("ns").asi8
    t = time.perf_counter()
    for i in range(390):
        broker.on_bar(i); oms.now, oms.bar = ts[i], i
        for f in oms.sync(): pf.apply(f)
        pf.mark_row(["X"], close[:, None], i)
        for k in np.flatnonzero(start == i): desk.start("X", qty[k] / 100, specs[length[k]], i, ts[i], close[i], 60_000_000_000)
        desk.work(i, np.array([close[i]]), np.array([vol[i]]), {"X": 0})
    took = time.perf_counter() - t
    print(f"desk: {a.parents} parents worked over 390 bars ({len(oms.orders):,} children, {len(broker.fills_since(0)):,} fills): {took:.2f} s")


if __name__ == "__main__":
    main()
