"""Bars per second of quantlab's event-driven engine (full pipeline) against backtrader, on the same work.

Work: an SMA(10/50) crossover, long while the fast average is above the slow one, market orders filled at
the next bar's open, no commission, (a) one asset x 1,000,000 bars, (b) 100 assets x 2,500 bars (1% of
equity each). Prices are seeded geometric random walks, so the runs are
reproducible (log-price random walks without drift: daily-like volatility 1.5% for 2,500 bars,
minute-like 0.1% for 1,000,000 bars); the engine's behaviour on real data is covered by tests/test_engine.py.

    .venv/bin/python bench/bench_engine.py            # full sizes (backtrader on a 200,000-bar slice for case a)
    .venv/bin/python bench/bench_engine.py --quick    # smaller sizes

Measured 2026-11-24 (fourth session) on the shared 2-core machine, full sizes; quantlab best of 3
(`--repeat`), backtrader one run (its rate is steady); see bench_backtest.py for the issue's side-by-side
comparison with costs, interleaved rounds and vectorbt:
  one asset, 1,000,000 bars: 54,486 event bars, 27,572 fills; Engine.run 1,041,566 bars/s
      (run_backtest 1,035,942 bars/s); backtrader 9,843 bars/s -> 106x (105x)
  100 assets x 2,500 bars: 2,440 event bars, 6,819 fills; Engine.run 1,224,999 bars/s
      (run_backtest 1,213,056 bars/s); backtrader 11,342 bars/s -> 108x (107x)
  (third session: 782,000 and 878,000 bars/s, 78x and 80x, one timing each; second: 555,000 and 440,000,
  73x and 64x; first: 233,000 and 378,000, 28x and 40x.)
Without commissions backtrader runs the 100-asset case ~5% faster here than in bench_backtest.py (11.3k
against 10.7k bars/s). One timing each instead of the best of 3 reads lower (97x and 92x on code a few
percent slower, the same day): the first run in a process pays for fresh memory.
"""
import argparse
import collections
import collections.abc
import math
import sys
import time

import numpy as np
import pandas as pd

from quantlab.backtest.driver import run_backtest
from quantlab.trading.brokers.sim import SimBroker
from quantlab.trading.engine import Engine
from quantlab.backtest.driver import run_events
from quantlab.trading.strategy import Strategy


class SmaCross(Strategy):
    defaults = {"fast": 10, "slow": 50, "weight": 1.0}

    def features(self, data):
        c = data["close"]
        fast, slow = c.rolling(self.params["fast"]).mean(), c.rolling(self.params["slow"]).mean()
        return {"signal": (fast > slow).astype(float).where(slow.notna())}

    def events(self, data, features):
        s = features["signal"]
        return s.ne(s.shift()) & s.notna()

    def on_bar(self, ctx):
        return ctx.row("signal") * self.params["weight"]   # NaN (warm-up) counts as 0


def random_walk(n_bars, n_assets, seed=1):
    rng = np.random.default_rng(seed)
    sigma = 0.015 if n_bars <= 10_000 else 0.001   # daily-like, or minute-like for the long series (no drift)
    r = rng.normal(0.0, sigma, size=(n_bars, n_assets))
    close = 100 * np.exp(np.cumsum(r, axis=0))
    gap = rng.normal(0, sigma / 5, size=(n_bars, n_assets))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(gap)
    hi = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, sigma / 3, size=close.shape)))
    lo = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, sigma / 3, size=close.shape)))
    vol = rng.integers(100_000, 1_000_000, size=close.shape).astype(float)
    idx = pd.date_range("1990-01-01 21:00", periods=n_bars, freq="min" if n_bars > 10_000 else "D", tz="UTC")
    cols = [f"S{j:03d}" for j in range(n_assets)]
    return {k: pd.DataFrame(v, index=idx, columns=cols) for k, v in
            {"open": open_, "high": hi, "low": lo, "close": close, "volume": vol}.items()}


def bench_quantlab(panels, weight, mode="events", repeat=1):
    "Best wall time (and its CPU time) of `repeat` Engine.run calls, and of `repeat` run_backtest calls."
    t_engine = c_engine = t_full = math.inf
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        run = run_events(SmaCross(weight=weight), panels, broker=SimBroker(commission=0), cash=1e7, mode=mode)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        if dt < t_engine: t_engine, c_engine = dt, dc
    for _ in range(repeat):
        t = time.perf_counter()
        res = run_backtest(SmaCross(weight=weight), panels, cash=1e7, broker=SimBroker(commission=0), mode=mode)
        t_full = min(t_full, time.perf_counter() - t)
    bars = panels["close"].size
    return {"bars": bars, "event_bars": run.events, "fills": len(res.fills), "engine_s": t_engine, "engine_cpu_s": c_engine,
            "engine_bars_per_s": bars / t_engine, "run_backtest_s": t_full, "run_backtest_bars_per_s": bars / t_full,
            "final_equity": float(run.equity.iloc[-1])}


def bench_backtrader(panels, weight):
    collections.Iterable = collections.abc.Iterable   # backtrader 1.9.78 on Python 3.10+
    import backtrader as bt

    class BtSma(bt.Strategy):
        def __init__(self):
            self.sig = {d: bt.ind.SMA(d.close, period=10) > bt.ind.SMA(d.close, period=50) for d in self.datas}
        def next(self):
            for d in self.datas:
                want = weight if self.sig[d][0] else 0.0
                if want != getattr(d, "_last", None):
                    d._last = want
                    self.order_target_percent(d, target=want)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(1e7)
    for s in panels["close"].columns:
        df = pd.DataFrame({k: panels[k][s] for k in ("open", "high", "low", "close", "volume")})
        df.index = df.index.tz_convert(None)
        cerebro.adddata(bt.feeds.PandasData(dataname=df), name=s)
    cerebro.addstrategy(BtSma)
    t, c = time.perf_counter(), time.process_time()
    cerebro.run(runonce=True, preload=True)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    bars = panels["close"].size
    return {"bars": bars, "seconds": dt, "cpu_seconds": dc, "bars_per_s": bars / dt, "cpu_bars_per_s": bars / dc,
            "final_value": cerebro.broker.getvalue()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-backtrader", action="store_true")
    p.add_argument("--repeat", type=int, default=3, help="quantlab timings: best of this many runs (backtrader: one run)")
    a = p.parse_args()
    n1, bt1 = (100_000, 50_000) if a.quick else (1_000_000, 200_000)
    cases = {"one_asset": (random_walk(n1, 1), 1.0, bt1), "hundred_assets": (random_walk(2_500, 100, seed=2), 0.01, None)}
    rows = []
    bench_quantlab(random_walk(2_000, 2, seed=3), 0.5)  # warm-up: numba's cached round-trip kernel loads on first use
    for name, (panels, w, bt_bars) in cases.items():
        q = bench_quantlab(panels, w, repeat=a.repeat)
        print(f"[{name}] quantlab events: {q['bars']:,} bars, {q['event_bars']:,} event bars, {q['fills']:,} fills; "
              f"Engine.run {q['engine_s']:.2f}s wall = {q['engine_bars_per_s']:,.0f} bars/s ({q['engine_cpu_s']:.2f}s CPU = {q['bars'] / q['engine_cpu_s']:,.0f} bars/s); "
              f"run_backtest (+ result tables) {q['run_backtest_s']:.2f}s = {q['run_backtest_bars_per_s']:,.0f} bars/s", flush=True)
        small = {k: v.iloc[:min(len(v), 100_000)] for k, v in panels.items()}
        qn = bench_quantlab(small, w, mode="every_bar")
        print(f"[{name}] quantlab every_bar (naive reference, {qn['bars']:,} bars): {qn['engine_bars_per_s']:,.0f} bars/s", flush=True)
        row = {"case": name, "quantlab_bars_per_s": q["engine_bars_per_s"], "quantlab_cpu_bars_per_s": q["bars"] / q["engine_cpu_s"],
               "quantlab_run_backtest_bars_per_s": q["run_backtest_bars_per_s"],
               "quantlab_every_bar_bars_per_s": qn["engine_bars_per_s"]}
        if not a.no_backtrader:
            sub = {k: v.iloc[:bt_bars] for k, v in panels.items()} if bt_bars else panels
            b = bench_backtrader(sub, w)
            print(f"[{name}] backtrader: {b['bars']:,} bars in {b['seconds']:.1f}s wall = {b['bars_per_s']:,.0f} bars/s "
                  f"({b['cpu_seconds']:.1f}s CPU = {b['cpu_bars_per_s']:,.0f} bars/s)", flush=True)
            row.update(backtrader_bars_per_s=b["bars_per_s"], backtrader_cpu_bars_per_s=b["cpu_bars_per_s"],
                       ratio=q["engine_bars_per_s"] / b["bars_per_s"], ratio_cpu=q["bars"] / q["engine_cpu_s"] / b["cpu_bars_per_s"],
                       ratio_run_backtest=q["run_backtest_bars_per_s"] / b["bars_per_s"])
        rows.append(row)
    print(pd.DataFrame(rows).set_index("case").round(1).to_string())


if __name__ == "__main__":
    sys.exit(main())
