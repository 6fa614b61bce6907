"""Time schema.coerce_bars + validate.validate_bars on N synthetic NYSE 1-minute bars (run by hand).

    .venv/bin/python bench/bench_validate.py [N=10_000_000] [SYMBOLS=4]
"""
import sys
import time

import numpy as np
import pandas as pd

from quantlab.core import calendar
from quantlab.data.schema import coerce_bars
from quantlab.data.validate import validate_bars


def minute_bars(n: int, symbols: int, seed: int = 0) -> pd.DataFrame:
    "n regular-session NYSE minute bars (labelled at their end) split over `symbols` symbols."
    per = n // symbols
    sch = calendar("XNYS").schedule
    sch = sch[sch.index >= "2000-01-03"]
    o = pd.DatetimeIndex(sch["open"]).as_unit("ns").asi8
    c = pd.DatetimeIndex(sch["close"]).as_unit("ns").asi8
    counts = (c - o) // 60_000_000_000
    cum = np.cumsum(counts)
    m = int(np.searchsorted(cum, per)) + 1
    counts = counts[:m]
    k = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    ends = (np.repeat(o[:m], counts) + k * 60_000_000_000)[:per]
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(symbols):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 5e-4, per)))
        openp = np.r_[close[0], close[:-1]]
        parts.append(pd.DataFrame({"symbol": f"S{s:03d}", "ts": pd.to_datetime(ends, utc=True), "open": openp,
                                   "high": np.maximum(openp, close) * 1.0002, "low": np.minimum(openp, close) * 0.9998,
                                   "close": close, "volume": rng.integers(1, 10_000, per).astype(float)}))
    return pd.concat(parts, ignore_index=True)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    symbols = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    t = time.perf_counter(); df = minute_bars(n, symbols); t_make = time.perf_counter() - t
    t = time.perf_counter(); bars = coerce_bars(df); t_coerce = time.perf_counter() - t
    t = time.perf_counter(); rep = validate_bars(bars, calendar="XNYS"); t_val = time.perf_counter() - t
    print(f"rows={len(bars):,} symbols={symbols} make={t_make:.2f}s coerce={t_coerce:.2f}s validate={t_val:.2f}s")
    print(rep)
