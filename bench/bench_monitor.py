"""Monitoring's cost per bar, which every live bar pays: Monitor.on_bar (metrics, the dashboard's view, the watch rules)
with 1 and 100 positions; an alert through dedup and the rate limit to the journal; a /metrics scrape and a
/api/view read while the runner steps.

    .venv/bin/python bench/bench_monitor.py
"""
import json
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from quantlab.live import alerts as rules
from quantlab.live.alerts import Alerter
from quantlab.live.journal import Journal
from quantlab.live.monitor import Dashboard, Monitor
from quantlab.trading.orders import Fill
from quantlab.trading.portfolio import Portfolio
from quantlab.trading.risk import RiskEngine, RiskLimits


def _book(n: int) -> Portfolio:
    pf = Portfolio(10_000_000.0)
    for k in range(n): pf.apply(Fill(f"o{k}", f"S{k:03d}", 100.0, 50.0 + k, 0, fill_id=f"f{k}"))
    pf.mark({f"S{k:03d}": 50.0 + k for k in range(n)})
    return pf


def on_bar(n: int, bars: int = 20_000) -> tuple[float, float]:
    m, pf, risk = Monitor("bench", max_daily_loss=0.05), _book(n), RiskEngine(RiskLimits(max_daily_loss=0.05))
    working = [{"client_id": f"w{k}", "symbol": f"S{k:03d}", "status": "submitted", "quantity": 10.0} for k in range(min(n, 10))]
    ts, t = np.datetime64("2020-01-01T21:00", "ns").astype(np.int64), np.empty(bars)
    for i in range(bars):
        t0 = time.perf_counter()
        m.on_bar(i, ts + i * 86_400_000_000_000, pf, risk, working)
        t[i] = time.perf_counter() - t0
    return np.percentile(t, 50) * 1e6, np.percentile(t, 99) * 1e6


def alerts(n: int = 5_000) -> float:
    with tempfile.TemporaryDirectory() as d:
        j = Journal(Path(d) / "journal.sqlite")
        al = Alerter([], lambda a, s: j.event("alert", a.bar, a.client_id, {**a.record(), "status": s}), dedup_seconds=3600, max_per_minute=10)
        t0 = time.perf_counter()
        for k in range(n): al(rules.stale_data(f"no bar for {k} s", k))
        dt = (time.perf_counter() - t0) / n
        j.close()
    return dt * 1e6


def scrape(n: int = 200) -> tuple[float, float]:
    m, pf, risk = Monitor("bench"), _book(100), RiskEngine()
    for i in range(5000): m.on_bar(i, i * 86_400_000_000_000, pf, risk, [])
    with tempfile.TemporaryDirectory() as d:
        Journal(Path(d) / "journal.sqlite").close()
        dash = Dashboard(m, d, "t", lambda: {}).start()
        get = lambda p: urllib.request.urlopen(urllib.request.Request(dash.url + p, headers={"Authorization": "Bearer t"}), timeout=5).read()
        out = []
        for path in ("metrics", "api/view"):
            t0 = time.perf_counter()
            for _ in range(n): get(path)
            out.append((time.perf_counter() - t0) / n * 1e3)
        dash.stop()
    return tuple(out)


if __name__ == "__main__":
    for n in (1, 100):
        p50, p99 = on_bar(n)
        print(f"Monitor.on_bar, {n:>3} positions: p50 {p50:6.1f} us  p99 {p99:6.1f} us")
    print(f"an alert (dedup, rate limit, journaled with fsync): {alerts():.0f} us")
    m, v = scrape()
    print(f"GET /metrics (100 positions): {m:.2f} ms   GET /api/view (5,000 equity points): {v:.2f} ms")
