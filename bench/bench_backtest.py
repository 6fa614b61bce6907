"""Backtest speed, side by side in one run on the same work: an SMA(10/50) crossover, long/flat, 5 bps costs.

Workloads (synthetic seeded random-walk OHLC, so the sizes are free):
  single  one asset x 1,000,000 bars
  panel   100 assets x 2,500 bars
  sweep   100 (fast, slow) pairs on one asset x 100,000 bars (10M bar-combinations)
  trail   every bar, on_bar keeps a 5% trailing stop under a long-above-SMA(50) entry; one asset x 200,000 bars
  vol     every bar, a volatility-target weight re-sized (an order on most bars); one asset x 100,000 bars
          (trail and vol: quantlab event engine and backtrader only, the same logic in each; backtrader on
          --bt-bars and half of it; quantlab's fills are counted from the broker's reports, and its lazy tables
          are formatted outside the timing and printed beside it, as for single and panel: backtrader builds none)

Engines (each measured in its own fresh process, so none inherits another's heap, JIT caches or threads):
  backtrader  (event-driven reference; timed on a reduced bar count, reported as bars/s)
  vectorbt    (vectorised reference; Portfolio.from_signals, signals shifted one bar and filled at the open)
  quantlab event engine  quantlab.strategies.event_backtest -> run_backtest: the whole pipeline (strategy,
              portfolio sizing, risk, OMS state machine, SimBroker fills, accounting with its invariant, the
              audit trail recorded), and a BacktestResult with equity, positions, orders, fills, round trips
              and the run card. The audit's decisions / order_events / closes tables are formatted on first
              read; that extra time is printed beside the figure.
  quantlab vector        quantlab.backtest.vector (sma_cross_weights + simulate; sma_cross_sweep for the sweep)

Every timing is the best of `--repeat` runs (`--bt-repeat` for backtrader) after one warm-up run (numba
compiles and caches are excluded, and so is vectorbt's ~70 s first-call compile). Run:

    .venv/bin/python bench/bench_backtest.py            # full (~2 min; ~8 min when vectorbt compiles for the first time)
    .venv/bin/python bench/bench_backtest.py --rounds 2 # the same twice, interleaved, best of each (~4 min once compiled)
    .venv/bin/python bench/bench_backtest.py --quick    # 10x smaller everything
    .venv/bin/python bench/bench_backtest.py --skip backtrader,vectorbt   # quantlab only

vectorbt is optional (not a quantlab dependency): `pip install vectorbt` (1.2.0) installs into the project's
.venv without touching numpy 2.4 / pandas 3.1; without it the vectorbt rows are skipped. Two pandas-3 slow
paths of vectorbt are avoided so that its engine, not its accessors, is timed (see vbt_run).

Measured 2026-11-24 (fourth session) on this machine kind (2 cores, a noisy shared VM: a fixed pure-Python
loop varies by up to 40% between minutes, and slow spells hit whichever engine is running, so ratios move
between runs). `--rounds 2` (each engine twice, interleaved, best of each kept):

    workload  backtrader  quantlab event  quantlab vector   vectorbt   (bars, or bar-combinations, per second)
    single         9,739       1,041,646       23,334,451  9,567,271
    panel         10,737       1,230,972       19,821,448  7,546,287
    sweep          9,478               -       52,382,308 10,972,764
    ratios: event / backtrader 107.0x (single), 114.6x (panel)  [goal 100x]
            vector / vectorbt sweep 4.8x [goal 3x]; single 2.4x, panel 2.6x
    (each round alone: 105x and 115x, 108x and 114x; two earlier full runs that day, on code a few
    percent slower: 105x and 112x, 108x and 113x)

The event figures include the run card (data fingerprint, git sha) and a BacktestResult whose orders,
fills and round-trip tables, like the audit's decisions, order events and closes, are formatted when first
read: "+0.50 s to format the lazy tables" beside each event figure is that formatting, done once if at all.

Like-for-like, the same `event_backtest` calls on the code at the start of the session (c88333d) and at
its end, each version in its own process, best of 3, alternated three times: single 1.210 s -> 0.883 s
(1.37x), panel 0.285 s -> 0.188 s (1.52x). What changed: a run's surviving records went from 284,000 to
81,000 objects (flat OMS order log and flat audit lists) and are promoted straight to the collector's
oldest generation (the collector's passes over them had cost ~0.3 s per million-bar run); result tables
are lazy; the fingerprint and git run beside the engine; the equity curve is rebuilt with np.repeat; wide
books hand orders_for_targets only the changed symbols; and a set of hot-path trims (see the notebooks).
backtrader's rate does not depend on the size of the run (9,318 bars/s at 50,000 bars, 9,574 at
1,000,000 bars in 104.5 s, 10,564 on 100 assets x 2,500 bars, third session), so timing it on fewer bars
is fair.

The event engine spends ~14 us of Python per event bar here (1M-bar single run: 53,769 event bars =
27,548 decisions + 26,221 fill bars), spread thinly over strategy, portfolio, risk, OMS, broker and audit
(no function above 12% in a sampling profile).
"""
from __future__ import annotations

import argparse
import collections
import collections.abc
import importlib.util
import sys
import time
import warnings

import numpy as np
import pandas as pd

collections.Iterable = collections.abc.Iterable  # backtrader 1.9.78 still imports collections.Iterable
import matplotlib

matplotlib.use("Agg")

FAST, SLOW, BPS = 10, 50, 5.0


def make_bars(n_bars: int, n_assets: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    "Seeded random-walk OHLC panels (index: minute bars, UTC)."
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2000-01-03", periods=n_bars, freq="min", tz="UTC")
    cols = [f"A{j:03d}" for j in range(n_assets)]
    logret = rng.normal(0.0, 0.01, (n_bars, n_assets))
    close = 100.0 * np.exp(np.cumsum(logret, axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.002, (n_bars, n_assets)))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.002, (n_bars, n_assets))))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.002, (n_bars, n_assets))))
    vol = np.full((n_bars, n_assets), 1e6)
    mk = lambda a: pd.DataFrame(a, index=idx, columns=cols)
    return {"open": mk(open_), "high": mk(high), "low": mk(low), "close": mk(close), "volume": mk(vol)}


def best_time(fn, repeat: int) -> tuple[float, object]:
    "Warm up once, then the best wall time of `repeat` calls."
    out = fn()
    times = []
    for _ in range(repeat):
        out = None  # the previous run's result is freed before the clock starts, not during the next run
        t = time.perf_counter(); out = fn(); times.append(time.perf_counter() - t)
    return min(times), out


# -- backtrader --------------------------------------------------------------------------------------------
def bt_run(bars: dict[str, pd.DataFrame], pairs=((FAST, SLOW),)) -> float:
    "Run backtrader's SMA crossover on every asset (one cerebro, one data feed per asset); return final value."
    import backtrader as bt

    class SmaCross(bt.Strategy):
        params = dict(fast=FAST, slow=SLOW)

        def __init__(self):
            self.cross = {d: bt.indicators.CrossOver(bt.indicators.SMA(d.close, period=self.p.fast),
                                                     bt.indicators.SMA(d.close, period=self.p.slow)) for d in self.datas}

        def next(self):
            w = 1.0 / len(self.datas)
            for d in self.datas:
                c = self.cross[d][0]
                if c > 0: self.order_target_percent(d, target=w)
                elif c < 0: self.order_target_percent(d, target=0.0)

    values = []
    for fast, slow in pairs:
        cerebro = bt.Cerebro(stdstats=False)
        for sym in bars["close"].columns:
            df = pd.DataFrame({k: bars[k][sym] for k in ("open", "high", "low", "close", "volume")})
            df.index = df.index.tz_localize(None)
            cerebro.adddata(bt.feeds.PandasData(dataname=df, timeframe=bt.TimeFrame.Minutes), name=sym)
        cerebro.addstrategy(SmaCross, fast=fast, slow=slow)
        cerebro.broker.setcash(1_000_000.0)
        cerebro.broker.setcommission(commission=BPS / 1e4)
        cerebro.broker.set_checksubmit(False)
        cerebro.run()
        values.append(cerebro.broker.getvalue())
    return values[-1]


# -- every-bar workloads: a user's on_bar logic runs on every bar (no event skipping) -----------------------
TRAIL_WINDOW, TRAIL_PCT, VOL_WINDOW, VOL_TARGET = 50, 0.05, 20, 0.008


def bt_every_bar(bars: dict[str, pd.DataFrame], kind: str) -> float:
    """backtrader, the same logic as the quantlab strategies below, on one asset.

    trail: long when the close is above its SMA(50); out when it falls 5% below the highest close since entry.
    vol:   every bar, target weight min(1, 0.8% / stdev of the last 20 close-to-close returns): an order on most bars."""
    import backtrader as bt

    class Trail(bt.Strategy):
        def __init__(self):
            self.sma, self.peak, self.held = bt.indicators.SMA(self.data.close, period=TRAIL_WINDOW), 0.0, False

        def next(self):
            c = self.data.close[0]
            if self.held:
                self.peak = max(self.peak, c)
                if c < self.peak * (1 - TRAIL_PCT): self.held = False; self.order_target_percent(target=0.0)
            elif c > self.sma[0]: self.held, self.peak = True, c; self.order_target_percent(target=0.95)

    class VolTarget(bt.Strategy):
        def __init__(self):
            self.vol = bt.indicators.StdDev(bt.indicators.PctChange(self.data.close, period=1), period=VOL_WINDOW)

        def next(self):
            v = self.vol[0]
            if v == v and v > 0: self.order_target_percent(target=min(0.95, VOL_TARGET / v))

    cerebro = bt.Cerebro(stdstats=False)
    df = pd.DataFrame({k: bars[k].iloc[:, 0] for k in ("open", "high", "low", "close", "volume")})
    df.index = df.index.tz_localize(None)
    cerebro.adddata(bt.feeds.PandasData(dataname=df, timeframe=bt.TimeFrame.Minutes))
    cerebro.addstrategy(Trail if kind == "trail" else VolTarget)
    cerebro.broker.setcash(1_000_000.0)
    cerebro.broker.setcommission(commission=BPS / 1e4)
    cerebro.broker.set_checksubmit(False)
    cerebro.run()
    return cerebro.broker.getvalue()


def ql_every_bar(bars: dict[str, pd.DataFrame], kind: str):
    "quantlab's event engine, the same logic as `bt_every_bar`, written as a user would: state in the strategy, on_bar every bar."
    from quantlab.backtest.driver import run_backtest
    from quantlab.trading.brokers.sim import BasisPoints, SimBroker
    from quantlab.trading.strategy import Strategy

    class Trail(Strategy):
        def features(self, data):
            return {"sma": data["close"].rolling(TRAIL_WINDOW).mean()}

        def on_start(self, ctx):
            self.peak, self.held = 0.0, False

        def on_bar(self, ctx):
            c = ctx.row("close").item(0)
            if self.held:
                self.peak = max(self.peak, c)
                if c < self.peak * (1 - TRAIL_PCT): self.held = False; return {ctx.symbols[0]: 0.0}
            elif c > ctx.row("sma").item(0): self.held, self.peak = True, c; return {ctx.symbols[0]: 0.95}

    class VolTarget(Strategy):
        def features(self, data):
            return {"vol": data["close"].pct_change().rolling(VOL_WINDOW).std()}

        def on_bar(self, ctx):
            v = ctx.row("vol").item(0)
            if v == v and v > 0: return {ctx.symbols[0]: min(0.95, VOL_TARGET / v)}

    broker = SimBroker(cash=1_000_000.0, commission=BasisPoints(BPS))
    return run_backtest(Trail() if kind == "trail" else VolTarget(), dict(bars), broker=broker)


def ql_every_bar_run(bars, kind: str):
    "What is timed, as for the SMA workloads: the run and its equity; the fills counted from the broker's reports (no table formatted); and the result."
    res = ql_every_bar(bars, kind)
    return res.equity.iloc[-1], len(res.run.broker.fills_since(0)), res


def ql_tables_seconds(res) -> float:
    "Seconds to format every table a BacktestResult leaves for first read (orders, fills, round trips; decisions, order events, closes)."
    t = time.perf_counter(); res.orders, res.fills, res.trades, res.audit.tables(); return time.perf_counter() - t


# -- vectorbt ----------------------------------------------------------------------------------------------
def vbt_available() -> bool:
    return importlib.util.find_spec("vectorbt") is not None


def vbt_run(bars: dict[str, pd.DataFrame], fast=FAST, slow=SLOW):
    """vectorbt: MA crossover, entries/exits shifted one bar and filled at that bar's open; returns final values.

    The moving averages come from vbt.MA.run (each distinct window once) and the engine is
    Portfolio.from_signals; the cross detection is done in numpy, because vectorbt's own ma_above /
    fshift accessors fall back to slow paths under pandas 3 (2-3 s per 100k bars), which would not be
    a fair measure of the engine. The index is made tz-naive for vectorbt for the same reason."""
    import vectorbt as vbt
    close, open_ = bars["close"], bars["open"]
    close = close.set_axis(close.index.tz_localize(None))  # a tz-aware index makes vectorbt box every timestamp
    fast, slow = np.atleast_1d(fast), np.atleast_1d(slow)
    windows, inv = np.unique(np.r_[fast, slow], return_inverse=True)
    ma = vbt.MA.run(close, list(windows)).ma.to_numpy().reshape(len(close), len(windows), close.shape[1])
    f, s = ma[:, inv[:len(fast)], :], ma[:, inv[len(fast):], :]
    above = (f > s).reshape(len(close), -1)  # (T, pairs x assets)
    prev = np.vstack([np.zeros((1, above.shape[1]), bool), above[:-1]])
    entries, exits = above & ~prev, ~above & prev
    entries = np.vstack([np.zeros((1, above.shape[1]), bool), entries[:-1]])  # act on the next bar ...
    exits = np.vstack([np.zeros((1, above.shape[1]), bool), exits[:-1]])
    reps = above.shape[1] // close.shape[1]
    opens, closes = np.tile(open_.to_numpy(), (1, reps)), np.tile(close.to_numpy(), (1, reps))  # ... at its open
    pf = vbt.Portfolio.from_signals(pd.DataFrame(closes, index=close.index), entries, exits, price=opens,
                                    fees=BPS / 1e4, init_cash=1_000_000.0, freq="1min")
    return pf.final_value()


# -- quantlab ----------------------------------------------------------------------------------------------
def ql_vector_run(bars, fast=FAST, slow=SLOW):
    from quantlab.backtest.vector import simulate, sma_cross_weights
    n = bars["close"].shape[1]
    w = sma_cross_weights(bars["close"], fast, slow, long=1.0 / n)
    return simulate(w, bars["close"], bars["open"], commission_bps=BPS, lot_size=0).final_value


def ql_sweep_run(bars, grid):
    from quantlab.backtest.vector import sma_cross_sweep
    return sma_cross_sweep(bars["close"], bars["open"], grid, commission_bps=BPS, lot_size=0).final_value


def ql_event_available() -> bool:
    return importlib.util.find_spec("quantlab.backtest.driver") is not None and importlib.util.find_spec("quantlab.strategies") is not None


def ql_event_run(bars, fast=FAST, slow=SLOW):
    "The SMA run and its equity (what is timed), and the result (its tables unformatted)."
    from quantlab.strategies import event_backtest
    res = event_backtest("sma_cross", bars, dict(fast=fast, slow=slow), commission_bps=BPS)
    return res.equity.iloc[-1], res


def workloads(a):
    "The shared inputs (seeded, so every process builds the same bars)."
    k = 10 if a.quick else 1
    single_n, panel_n, panel_a, sweep_n = 1_000_000 // k, 2_500, 100 // k, 100_000 // k
    fasts, slows = np.arange(5, 55, 5), np.arange(60, 260, 20)
    grid = pd.DataFrame([(f, s) for f in fasts for s in slows], columns=["fast", "slow"])
    return k, single_n, panel_n, panel_a, sweep_n, grid


def measure(engine: str, a) -> list[dict]:
    "Time one engine on all workloads (run in its own fresh process by `main`)."
    k, single_n, panel_n, panel_a, sweep_n, grid = workloads(a)
    rows = []

    def record(workload, work, seconds, note=""):
        rows.append(dict(engine=engine, workload=workload, work=work, seconds=seconds, per_second=work / seconds, note=note))

    if engine == "backtrader":
        b = make_bars(a.bt_bars // k, 1, 1)
        s, _ = best_time(lambda: bt_run(b), a.bt_repeat); record("single", a.bt_bars // k, s, f"({a.bt_bars // k:,} bars)")
        p = {f: v.iloc[:, :a.bt_assets] for f, v in make_bars(panel_n, panel_a, 2).items()}
        s, _ = best_time(lambda: bt_run(p), a.bt_repeat); record("panel", panel_n * a.bt_assets, s, f"({a.bt_assets} assets)")
        sb = make_bars(a.bt_bars // 5 // k, 1, 3)
        pairs = list(grid.itertuples(index=False))[:a.bt_pairs]
        s, _ = best_time(lambda: bt_run(sb, pairs), a.bt_repeat); record("sweep", len(sb["close"]) * len(pairs), s, f"({len(pairs)} pairs)")
        for kind, n in (("trail", a.bt_bars // k), ("vol", a.bt_bars // 2 // k)):
            eb = make_bars(n, 1, 4)
            s, _ = best_time(lambda: bt_every_bar(eb, kind), a.bt_repeat); record(kind, n, s, f"({n:,} bars)")
    elif engine == "vectorbt":
        warnings.filterwarnings("ignore")
        single, panel, sweep_bars = make_bars(single_n, 1, 1), make_bars(panel_n, panel_a, 2), make_bars(sweep_n, 1, 3)
        s, _ = best_time(lambda: vbt_run(single), a.repeat); record("single", single_n, s)
        s, _ = best_time(lambda: vbt_run(panel), a.repeat); record("panel", panel_n * panel_a, s)
        s, _ = best_time(lambda: vbt_run(sweep_bars, grid["fast"].to_numpy(), grid["slow"].to_numpy()), a.repeat)
        record("sweep", sweep_n * len(grid), s, f"({len(grid)} pairs)")
    elif engine == "quantlab event":
        eb, panel = make_bars(a.event_bars // k, 1, 1), make_bars(panel_n, panel_a, 2)
        s, (_, res) = best_time(lambda: ql_event_run(eb), a.repeat)  # the tables are formatted on the last timed run's result
        record("single", len(eb["close"]), s, f"(+{ql_tables_seconds(res):.2f} s to format the lazy tables)")
        s, (_, res) = best_time(lambda: ql_event_run(panel), a.repeat)
        record("panel", panel_n * panel_a, s, f"(+{ql_tables_seconds(res):.2f} s to format the lazy tables)")
        for kind, n in (("trail", 200_000 // k), ("vol", 100_000 // k)):
            eb = make_bars(n, 1, 4)
            s, (_, fills, res) = best_time(lambda: ql_every_bar_run(eb, kind), a.repeat)
            record(kind, n, s, f"({fills:,} fills; +{ql_tables_seconds(res):.2f} s to format the lazy tables)")
    elif engine == "quantlab vector":
        single, panel, sweep_bars = make_bars(single_n, 1, 1), make_bars(panel_n, panel_a, 2), make_bars(sweep_n, 1, 3)
        s, _ = best_time(lambda: ql_vector_run(single), a.repeat); record("single", single_n, s)
        s, _ = best_time(lambda: ql_vector_run(panel), a.repeat); record("panel", panel_n * panel_a, s)
        s, _ = best_time(lambda: ql_sweep_run(sweep_bars, grid), a.repeat)
        record("sweep", sweep_n * len(grid), s, f"({len(grid)} pairs)")
    return rows


def print_spread(df: pd.DataFrame) -> None:
    "Each round's event / backtrader ratio, and their spread: the engines ran one after the other in that round."
    per_round = df.pivot_table(index=["workload", "round"], columns="engine", values="per_second")
    if "quantlab event" not in per_round or "backtrader" not in per_round: return
    ratio = (per_round["quantlab event"] / per_round["backtrader"]).dropna().unstack("round")
    print("\nevent / backtrader, round by round (the spread is what one run's ratio is worth; the median pairs engines within a round):")
    for workload, r in ratio.iterrows():
        print(f"  {workload:<8} " + "  ".join(f"{v:6.1f}x" for v in r) + f"   spread {r.min():.1f}x - {r.max():.1f}x   median {r.median():.1f}x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10x smaller workloads")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (best is kept)")
    ap.add_argument("--bt-repeat", type=int, default=2, help="timed backtrader runs per measurement (best is kept; each is slow)")
    ap.add_argument("--bt-bars", type=int, default=50_000, help="bars for backtrader's single-asset run")
    ap.add_argument("--bt-assets", type=int, default=10, help="assets for backtrader's panel run (2,500 bars each)")
    ap.add_argument("--bt-pairs", type=int, default=3, help="pairs for backtrader's sweep (on --bt-bars/5 bars)")
    ap.add_argument("--event-bars", type=int, default=1_000_000, help="bars for the quantlab event engine's single run")
    ap.add_argument("--rounds", type=int, default=1, help="measure every engine this many times, interleaved; keep each best "
                    "(on a noisy shared machine this stops one engine's slow minute from deciding a ratio)")
    ap.add_argument("--skip", default="", help="comma list of engines to skip: backtrader,vectorbt,event,vector")
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    engines = [e for e, key in (("backtrader", "backtrader"), ("vectorbt", "vectorbt"), ("quantlab event", "event"),
                                ("quantlab vector", "vector")) if key not in skip]
    if "vectorbt" in engines and not vbt_available():
        print("vectorbt not importable here: pip install vectorbt (see the report for the version that worked)")
        engines.remove("vectorbt")
    if "quantlab event" in engines and not ql_event_available():
        print("quantlab.backtest.driver / quantlab.strategies not importable: event engine skipped"); engines.remove("quantlab event")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}")
    # each engine in a fresh process: none inherits another's heap, JIT caches or worker threads (vectorbt's
    # run left the event engine ~40% slower when they shared one process)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    rows = []
    for rnd in range(a.rounds):
        if a.rounds > 1: print(f"round {rnd + 1} of {a.rounds}")
        for engine in engines:
            with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
                for r in pool.submit(measure, engine, a).result():
                    rows.append(r | {"round": rnd})
                    print(f"  {r['engine']:<18} {r['workload']:<8} {r['work']:>12,d} in {r['seconds']:8.3f} s = {r['per_second']:>14,.0f} /s  {r['note']}", flush=True)

    df = pd.DataFrame(rows)
    if df.empty: return
    if a.rounds > 1: print_spread(df)
    df = df.loc[df.groupby(["engine", "workload"]).seconds.idxmin()]  # each engine's best round
    rate = df.pivot_table(index="workload", columns="engine", values="per_second")
    print("\nbars (or bar-combinations) per second:")
    print(rate.map(lambda v: f"{v:,.0f}").to_string())
    ratios = {}
    for eng, ref in (("quantlab event", "backtrader"), ("quantlab vector", "vectorbt"), ("quantlab vector", "backtrader")):
        if eng in rate and ref in rate: ratios[f"{eng} / {ref}"] = rate[eng] / rate[ref]
    if ratios:
        print("\nspeed ratios (goals: event / backtrader >= 100 on single and panel, >= 40 on trail, >= 20 on vol;"
              " vector sweep / vectorbt sweep >= 3):")
        print(pd.DataFrame(ratios).map(lambda v: f"{v:,.1f}x").to_string())


if __name__ == "__main__":
    main()
