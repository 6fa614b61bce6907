"""Live runner speed: decision to order, the pre-trade risk check, and recovery from a long journal.

  decision   a bar's arrival at the runner (it is journaled first) to its first order reaching the paper broker:
             the journal's bar row, the feature window, the engine step (strategy, sizing, risk, OMS) and the
             order intent journaled before the broker sees it. p50 / p99 over the bars that made an order;
             1 symbol (SMA cross) and 100 symbols (an equal-weight book re-sized every 5th bar).
  risk       RiskEngine.check with 100 positions held and every limit set (gross and net exposure included).
  recovery   a restart on a journal of ~100,000 events: integrity check, replay of every bar, reconciliation.

    .venv/bin/python bench/bench_live.py                 # all three (~3 min: the journal's fsyncs are real)
    .venv/bin/python bench/bench_live.py --only risk
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from quantlab.live.journal import Journal
from quantlab.live.runner import Runner, config_from_dict
from quantlab.strategies import get_strategy
from quantlab.trading.brokers.paper import PaperBroker
from quantlab.trading.orders import Fill, Order
from quantlab.trading.portfolio import Portfolio
from quantlab.trading.risk import RiskEngine, RiskLimits
from quantlab.trading.strategy import Strategy


def walk(bars: int, assets: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (bars, assets)), axis=0))
    idx = pd.date_range("2000-01-03 21:00", periods=bars, freq="D", tz="UTC")
    c = pd.DataFrame(close, idx, [f"S{k:03d}" for k in range(assets)])
    return {"open": c.shift(1).fillna(c), "high": c * 1.005, "low": c * 0.995, "close": c, "volume": c * 0 + 1e6}


class EqualWeight(Strategy):
    "Every 5th bar: equal weights, tilted by the last return so every symbol trades."
    def on_bar(self, ctx):
        if ctx.i % 5 == 0:
            r = ctx.row("close") / np.maximum(ctx.history("close", 2).iloc[0].to_numpy(), 1e-9) - 1
            return (1 + np.sign(r) * 0.2) / len(ctx.symbols) * 0.9


def decision_to_order(strategy, data, bars_label: str) -> dict:
    stamps, arrived = {}, {}
    record_bar, submit = Journal.record_bar, PaperBroker.submit
    def on_bar(self, i, bar): arrived["t"], arrived["i"] = time.perf_counter_ns(), i; return record_bar(self, i, bar)
    def on_submit(self, order):
        stamps.setdefault(arrived["i"], time.perf_counter_ns() - arrived["t"]); return submit(self, order)
    Journal.record_bar, PaperBroker.submit = on_bar, on_submit
    try:
        d = Path(tempfile.mkdtemp())
        cfg = config_from_dict({"name": "bench", "state_dir": str(d), "strategy": {"name": "bench"}})
        Runner(cfg, strategy, data).run()
    finally:
        Journal.record_bar, PaperBroker.submit = record_bar, submit
    us = np.array(list(stamps.values())) / 1e3
    return {"case": bars_label, "bars with an order": len(us), "p50 us": np.percentile(us, 50), "p99 us": np.percentile(us, 99)}


def risk_check(positions: int = 100, orders: int = 20_000) -> dict:
    syms = [f"S{k:03d}" for k in range(positions)]
    pf = Portfolio(10_000_000.0)
    for k, s in enumerate(syms): pf.apply(Fill(f"f{k}", s, 100.0, 100.0, ts=0))
    pf.mark({s: 101.0 for s in syms})
    risk = RiskEngine(RiskLimits(max_order_notional=1e6, max_order_quantity=1e5, max_position_notional=5e6, max_position_quantity=1e5,
                                 max_gross_exposure=2.0, max_net_exposure=1.5, price_band=0.1, max_position_weight=0.5))
    working = {s: 10.0 for s in syms[:20]}
    batch = [Order(syms[k % positions], 5.0) for k in range(orders)]
    times = np.empty(orders)
    clock = time.perf_counter_ns
    for k, o in enumerate(batch):
        t = clock(); risk.check(o, pf, None, working); times[k] = clock() - t
    return {"case": f"risk check, {positions} positions", "p50 us": np.percentile(times, 50) / 1e3, "p99 us": np.percentile(times, 99) / 1e3}


class Churn(Strategy):
    "An order on every bar (the journal's worst case)."
    def on_bar(self, ctx): return np.array([0.5 + 0.3 * ((ctx.i % 2) * 2 - 1)])


def recovery(events: int = 100_000) -> dict:
    data = walk(events // 6 + 50, 1)  # ~6 events per bar: decision, intent, sent, fill, filled, snapshot
    d = Path(tempfile.mkdtemp())
    cfg = config_from_dict({"name": "rec", "state_dir": str(d), "strategy": {"name": "churn"}})
    t = time.perf_counter(); Runner(cfg, Churn(), data).run(max_bars=len(data["close"]) - 1); build = time.perf_counter() - t
    n = Journal(d / "journal.sqlite").con.execute("select count(*) from events").fetchone()[0]
    t = time.perf_counter(); Runner(cfg, Churn(), data).run(max_bars=0); took = time.perf_counter() - t
    return {"case": f"recovery from {n:,} events ({len(data['close']) - 1:,} bars)", "seconds": took, "journal built in s": build}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["decision", "risk", "recovery"])
    a = ap.parse_args()
    rows = []
    if a.only in (None, "decision"):
        rows.append(decision_to_order(get_strategy("sma_cross", fast=5, slow=20), walk(2_000, 1), "decision to order, 1 symbol"))
        rows.append(decision_to_order(EqualWeight(), walk(300, 100), "decision to order, 100 symbols"))
    if a.only in (None, "risk"): rows.append(risk_check())
    if a.only in (None, "recovery"): rows.append(recovery())
    print(pd.DataFrame(rows).round(1).to_string(index=False))
