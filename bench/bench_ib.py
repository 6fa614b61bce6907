"""Interactive Brokers adapter speed, against the fake TWS on 127.0.0.1 (its own process; the unmodified ib_async client).

  barrier    IBBroker.on_bar: a reqCurrentTime round trip after which everything IB sent is booked. p50 / p99 at 20 a
             second, and in a burst (past 45 requests a second ib_async throttles itself to stay under IB's 50).
  fill       submit, a barrier (the order is at IB), the fake fills on a price sent over its control port, a barrier: the
             fill is in IBBroker.fills_since. p50 / p99.
  rehearsal  a replay session of the live runner through IBBroker and the fake (bars mirrored to the fake first):
             bars per second over 400 S&P 500 bars, every bar journaled with synchronous=FULL.

    .venv/bin/python bench/bench_ib.py
"""
import tempfile
import time
from pathlib import Path

import numpy as np

from quantlab.live.fake_tws import start_fake
from quantlab.live.runner import Runner, config_from_dict
from quantlab.strategies import get_strategy
from quantlab.trading.brokers.ib import IBBroker, spec_for
from quantlab.trading.orders import Order


def pct(xs):
    a = np.asarray(xs) * 1e3
    return f"p50 {np.percentile(a, 50):.2f} ms, p99 {np.percentile(a, 99):.2f} ms (n={len(a)})"


def bench_broker(d: Path) -> None:
    with start_fake(d / "fake") as fake:
        b = IBBroker(d / "state", {"AAPL": spec_for("AAPL")}, port=fake.port, client_id=3)
        barrier, fill = [], []
        for k in range(300):  # 20 a second: under the 45 requests a second ib_async allows itself (IB's limit is 50)
            t = time.perf_counter(); b.on_bar(k); barrier.append(time.perf_counter() - t); time.sleep(0.05)
        burst = []
        for k in range(100):  # as fast as possible: past 45 a second, ib_async holds requests back for up to a second
            t = time.perf_counter(); b.on_bar(k); burst.append(time.perf_counter() - t)
        n = len(b.fills_since(0))
        for k in range(100):
            t = time.perf_counter()
            b.submit(Order("AAPL", 1, client_id=f"f{k}"))
            b.on_bar(k)  # the order is at IB (ib_async may hold messages back to respect IB's 50 a second)
            fake.control.price(symbol="AAPL", price=190.0 + k * 0.01)
            b.on_bar(k)
            got = b.fills_since(n)
            fill.append(time.perf_counter() - t)
            assert any(f.quantity for f in got), "no fill"
            n += len(got)
            time.sleep(0.1)
        b.close()
    print(f"barrier   {pct(barrier)} at 20/s; {pct(burst)} in a burst (ib_async's 45 requests/s throttle)")
    print(f"fill      {pct(fill)} (submit, barrier, the fake's fill on a control command, barrier)")


def bench_rehearsal(d: Path) -> None:
    from arch.data import sp500
    df = sp500.load(); df.index = df.index.tz_localize("UTC")
    spx = {k.lower(): df[[k]].set_axis(["SPX"], axis=1).iloc[:400] for k in ("Open", "High", "Low", "Close", "Volume")}
    with start_fake(d / "fake2") as fake:
        cfg = config_from_dict({"name": "b", "state_dir": str(d / "run"), "strategy": {"name": "sma_cross", "params": {"fast": 5, "slow": 20}},
                                "broker": {"kind": "ib", "port": fake.port, "client_id": 4, "rehearsal_control": fake.control_port},
                                "feed": {"start": str(spx["close"].index[30])}, "alerts": {"sinks": []}})
        t = time.perf_counter()
        st = Runner(cfg, get_strategy("sma_cross", fast=5, slow=20), spx).run()
        dt = time.perf_counter() - t
    print(f"rehearsal {st['bars'] / dt:.0f} bars/s ({st['bars']} bars, {st['fills']} journaled fills, {dt:.1f} s incl. start-up)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        bench_broker(Path(d)); bench_rehearsal(Path(d))
