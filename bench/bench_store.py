"""Benchmark the store on >= 10 million minute bars (run by hand, prints figures; not a test).

    .venv/bin/python bench/bench_store.py [--symbols 20] [--sessions 1300] [--keep DIR]

Generates a realistic random-walk minute file (NYSE regular sessions, several symbols: geometric random walk
with intraday volume smile, OHLC consistent) into Parquet in a temporary directory, then times each stage:
read the input file, coerce (schema), validate, store (BarStore.write_bars), and reads (full, a one-month
slice, as_of, as_of after corrections). Each figure is compared with a bare pyarrow.parquet.read_table (+
to_pandas) of the same data. Memory: peak of the Python/numpy heap per stage (tracemalloc), peak of Arrow's
memory pool, and the process's peak RSS so far (resource.getrusage).
"""
from __future__ import annotations

import argparse
import gc
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from quantlab.data import schema
from quantlab.data import validate
from quantlab.core import calendar
from quantlab.data.store import BarStore


def minute_bars(symbols: int, sessions: int, seed: int = 0) -> pd.DataFrame:
    "Random-walk 1-minute bars (bar end stamps) over the last `sessions` NYSE sessions before 2024."
    cal = calendar("XNYS")
    sched = cal.schedule.loc[:"2023-12-29"].tail(sessions)
    opens = sched["open"].to_numpy("datetime64[ns]").astype("int64")
    closes = sched["close"].to_numpy("datetime64[ns]").astype("int64")
    per = ((closes - opens) // 60_000_000_000).astype("int64")          # 390, or 210 on early closes
    k = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)     # minute within session
    ends = np.repeat(opens, per) + (k + 1) * 60_000_000_000
    n = len(ends)
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(symbols):
        vol = 0.0008 * (1 + 0.8 * np.cos(np.pi * k / 389) ** 2)          # U-shaped intraday volatility
        r = rng.standard_normal(n) * vol
        close = 50 * (1 + i) * np.exp(np.cumsum(r))
        open_ = np.r_[close[0], close[:-1]]
        wick = np.abs(rng.standard_normal((2, n))) * vol * 0.5
        high = np.maximum(open_, close) * np.exp(wick[0])
        low = np.minimum(open_, close) * np.exp(-wick[1])
        volume = np.round(rng.lognormal(7, 1, n) * (1 + 2 * np.cos(np.pi * k / 389) ** 2))
        frames.append(pd.DataFrame({"symbol": f"SYM{i:03d}", "ts": pd.to_datetime(ends, utc=True),
                                    "open": open_.round(4), "high": high.round(4), "low": low.round(4),
                                    "close": close.round(4), "volume": volume}))
    return pd.concat(frames, ignore_index=True)


class Stage:
    "Time and memory of one stage."
    rows_total = 0

    def __init__(self, name: str, rows: int):
        self.name, self.rows = name, rows

    def __enter__(self):
        gc.collect()
        tracemalloc.reset_peak()
        pa.default_memory_pool().release_unused()
        self.arrow0 = pa.total_allocated_bytes()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.secs = time.perf_counter() - self.t0
        _, peak = tracemalloc.get_traced_memory()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        arrow = pa.default_memory_pool().max_memory() / 2**20
        print(f"{self.name:<44} {self.secs:8.2f} s {self.rows / self.secs / 1e6:9.2f} M rows/s   "
              f"heap peak {peak / 2**20:8.0f} MiB   arrow pool max {arrow:7.0f} MiB   max RSS so far {rss:7.0f} MiB",
              flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=1300)
    ap.add_argument("--keep", default=None, help="work in this directory and keep it (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_store_"))
    work.mkdir(parents=True, exist_ok=True)
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        bars = minute_bars(args.symbols, args.sessions)
        n = len(bars)
        src = work / "minute_bars.parquet"
        pq.write_table(pa.Table.from_pandas(bars, preserve_index=False), src, row_group_size=1_000_000)
        del bars
        print(f"generated {n:,} minute bars, {args.symbols} symbols x {n // args.symbols:,} minutes "
              f"({src.stat().st_size / 2**20:.0f} MiB Parquet) in {time.perf_counter() - t0:.1f} s; "
              f"python {sys.version.split()[0]}, pandas {pd.__version__}, pyarrow {pa.__version__}")
        print(f"{'stage':<44} {'time':>10} {'throughput':>14}")
        with Stage("baseline: pq.read_table(input).to_pandas()", n):
            df = pq.read_table(src).to_pandas()
        with Stage("coerce (schema.coerce_bars)", n):
            coerced = schema.coerce_bars(df, file=src)
        with Stage("validate (validate.validate_bars, 1min)", n):
            report = validate.validate_bars(coerced, file=src, freq="1min")
        print(f"   -> {len(report.errors)} errors, {len(report.warnings)} warnings")
        del coerced
        store = BarStore(work / "store")
        with Stage("ingest: write_bars(validate=True) all stages", n):
            res = store.write_bars(df, source={"file": str(src)}, freq="1min")
        print(f"   -> {res.rows_new:,} new rows, {len(res.files)} files, "
              f"{sum((store.root / f).stat().st_size for f in res.files) / 2**20:.0f} MiB")
        with Stage("re-ingest the same file (no change)", n):
            res2 = store.write_bars(df, source={"file": str(src)}, freq="1min", validate=False)
        assert not res2.changed
        files = [str(store.root / e["file"]) for e in store.manifest()["datasets"]["bars"].values()]
        del df
        with Stage("baseline: pq.read_table(store files).to_pandas()", n):
            base = pq.read_table(files, partitioning=None).to_pandas()
        del base
        with Stage("read_bars() full", n):
            full = store.read_bars()
        assert len(full) == n
        del full
        lo, hi = pd.Timestamp("2023-06-01", tz="UTC"), pd.Timestamp("2023-06-30 23:59", tz="UTC")
        with Stage("read_bars(start, end) one month, all symbols", n):
            part = store.read_bars(start=lo, end=hi)
        m = len(part)
        print(f"   -> {m:,} rows (throughput above is per stored row scanned)")
        with Stage("baseline: pq.read_table(filters=month)", n):
            bpart = pq.read_table(files, partitioning=None, filters=[("ts", ">=", lo), ("ts", "<=", hi)]).to_pandas()
        assert len(bpart) == m
        del part, bpart
        as_of = pd.Timestamp("2022-06-15 18:00", tz="UTC")
        with Stage("read_bars(as_of=2022-06-15) no versions", n):
            a = store.read_bars(as_of=as_of)
        print(f"   -> {len(a):,} rows")
        del a
        # correct 1% of the bars (a new version each), then read as_of (the dedupe path)
        full = store.read_bars(["SYM000", "SYM001"])
        fix = full.sample(frac=0.01, random_state=1).drop(columns="available_at")
        fix = fix.assign(close=fix.close * 1.0001, high=fix[["high", "close"]].max(axis=1) * 1.0001)
        with Stage(f"write {len(fix):,} corrections (2 partitions)", len(fix)):
            store.write_bars(fix, known_at="2024-06-01", freq="1min", validate=False)
        del full
        with Stage("read_bars() full, with versions", n):
            v = store.read_bars()
        assert len(v) == n
        del v
        with Stage("read_bars(as_of=...) with versions", n):
            v = store.read_bars(as_of="2024-05-31")
        del v
    finally:
        if not args.keep: shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
