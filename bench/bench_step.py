"""Cost of one engine step in the bar-by-bar driver (what a live runner pays per bar), p50 and p99.

The same SMA crossover (5 bps) as bench_backtest, on a seeded random walk, driven through
`quantlab.trading.feed.drive`'s loop by hand so the two parts of a live bar are timed apart:
  append  the bar into the growing history plus the strategy's features and event on its trailing window
  step    Engine.step: broker events, OMS sync, accounting, marks, strategy, sizing, risk, OMS, broker, audit

The step is timed twice. "step" runs right after its bar's append, as live: the append's pandas work (about
1 ms) has just filled the CPU caches with its own code and data, so the step runs cold. "warm step" runs the
same steps on a second engine whose history was appended first: the step's own cost, caches warm.

    .venv/bin/python bench/bench_step.py              # 1 symbol x 20,000 bars and 100 symbols x 2,500 bars
    .venv/bin/python bench/bench_step.py --bars 5000
"""
import argparse
import time

import numpy as np
import pandas as pd

from quantlab.strategies import get_strategy
from quantlab.trading.brokers.sim import BasisPoints, SimBroker
from quantlab.trading.engine import Engine
from quantlab.trading.feed import HistoricalFeed


def walk(bars: int, assets: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (bars, assets)), axis=0))
    idx = pd.date_range("2000-01-03 21:00", periods=bars, freq="D", tz="UTC")
    cols = [f"S{k}" for k in range(assets)]
    c = pd.DataFrame(close, idx, cols)
    return {"open": c.shift(1).fillna(c), "high": c * 1.005, "low": c * 0.995, "close": c, "volume": c * 0 + 1e6}


def engine_on_feed(data: dict) -> tuple[Engine, HistoricalFeed]:
    engine = Engine(get_strategy("sma_cross", fast=10, slow=50), list(data["close"].columns), broker=SimBroker(commission=BasisPoints(5)))
    feed = HistoricalFeed(data)
    engine.open_feed(feed.fields, capacity=len(feed))
    return engine, feed


def measure(bars: int, assets: int) -> dict:
    data = walk(bars, assets)
    engine, feed = engine_on_feed(data)
    append, step, warm = [], [], []
    clock = time.perf_counter_ns
    for bar in feed:  # as live: append the bar, then step it
        t0 = clock(); i = engine.append(bar); t1 = clock()
        engine.step(i, decide=i == 0 or bool(engine.events[i])); t2 = clock()
        append.append(t1 - t0); step.append(t2 - t1)
    twin, feed = engine_on_feed(data)
    for i in [twin.append(bar) for bar in feed]:  # the whole history first, then the steps alone
        t1 = clock(); twin.step(i, decide=i == 0 or bool(twin.events[i])); warm.append(clock() - t1)
    assert twin.portfolio.cash == engine.portfolio.cash  # the same decisions either way
    q = lambda xs, p: np.percentile(np.array(xs) / 1e3, p)
    return {"symbols": assets, "bars": bars, "orders": len(engine.oms.orders),
            "step p50 us": q(step, 50), "step p99 us": q(step, 99), "warm step p50 us": q(warm, 50), "warm step p99 us": q(warm, 99),
            "append p50 us": q(append, 50), "append p99 us": q(append, 99)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=20_000, help="bars for the one-symbol case")
    args = ap.parse_args()
    rows = [measure(args.bars, 1), measure(2_500, 100)]
    print(pd.DataFrame(rows).round(1).to_string(index=False))
