"""A floor for the every-bar vol-target workload: the same decisions in one flat Python loop, with no layers.

bench_backtest.py's "vol" workload re-sizes a volatility-target weight on every bar, so an order goes
through the whole pipeline on most bars. This script does the same arithmetic in a single function: fill
the pending order at the next open with 5 bps commission, mark, read the strategy's weight, size against
equity at the close, send the order, and keep order, fill and decision records in flat lists. There is no
OMS state machine, risk engine, simulated broker model, portfolio, audit or position book.

It is not an engine, and nothing in quantlab uses it. It is a measuring stick. It says how fast this
workload could go in CPython on this machine if the layers cost nothing, and it checks that it makes the
same trades as quantlab: the same fills, and the same final equity to 1e-9.

    .venv/bin/python bench/bench_floor.py            # 30,000 bars, best of 5
    .venv/bin/python bench/bench_floor.py --bars 100000
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_backtest as B  # noqa: E402


def flat_vol_target(op, cl, vol, cash=1_000_000.0, bps=B.BPS) -> tuple[float, int]:
    "The vol-target decisions in one loop: (final equity, fills)."
    pos, last, pending, seq = 0.0, 0.0, None, itertools.count(1)
    orders, order_log, fills, decisions = {}, [], [], []
    for i in range(len(cl)):
        if pending is not None:  # the broker: a market order fills at this bar's open
            cid, q = pending
            p = op[i]
            comm = abs(q) * p * bps * 1e-4
            fills.append((cid, q, p, i, comm))
            cash -= q * p + comm
            pos += q
            orders[cid] = "filled"; order_log.append((cid, i, "filled"))
            pending = None
        v = vol[i]  # the strategy
        if not (v == v and v > 0): continue
        w = min(0.95, B.VOL_TARGET / v)
        if w == last: continue
        last = w
        decisions.append((i, w, pos, cash))
        mark = cl[i]
        delta = float(math.trunc(w * (cash + pos * mark) / mark)) - pos  # sizing at the close, whole units
        if delta == 0: continue
        cid = f"o{next(seq)}"
        orders[cid] = "submitted"; order_log.append((cid, i, "submitted"))
        pending = (cid, delta)
    return cash + pos * cl[-1], len(fills)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=30_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    bars = B.make_bars(a.bars, 1, 4)
    close = bars["close"].iloc[:, 0]
    op, cl = bars["open"].iloc[:, 0].tolist(), close.tolist()
    vol = close.pct_change().rolling(B.VOL_WINDOW).std().tolist()
    floor, (equity, fills) = B.best_time(lambda: flat_vol_target(op, cl, vol), a.repeat)
    engine, (ql_equity, ql_fills, _) = B.best_time(lambda: B.ql_every_bar_run(bars, "vol"), 2)
    assert fills == ql_fills and abs(equity - ql_equity) <= 1e-9 * abs(ql_equity), (equity, fills, ql_equity, ql_fills)
    print(f"{a.bars:,} bars, {fills:,} fills, the same in both; best of {a.repeat} and 2")
    print(f"  flat loop        {floor:7.3f} s  {a.bars / floor:>10,.0f} bars/s  {floor / a.bars * 1e6:6.1f} us/bar")
    print(f"  quantlab engine  {engine:7.3f} s  {a.bars / engine:>10,.0f} bars/s  {engine / a.bars * 1e6:6.1f} us/bar"
          f"  ({engine / floor:.1f}x the flat loop)")


if __name__ == "__main__":
    main()
