"""Time quantlab's indicators, factors and cross-sectional tools on 500 assets x 20 years of daily bars.

    .venv/bin/python bench/bench_factors.py [--assets 500] [--years 20] [--seed 7]

The bars are a seeded geometric random walk (OHLCV), with a quarter of the assets listing late (leading NaNs),
built as the store's long bars frame and pivoted with panels_from_bars, as research code would.
Prints one line per step (wall-clock and process CPU seconds; CPU is the fairer figure on a shared machine)
and the totals. Run by hand; nothing here is asserted.
"""
import argparse
import time

import numpy as np
import pandas as pd

from quantlab.research.factors import FACTORS, cs_rank, cs_zscore, demean, neutralize, winsorize, momentum, market_beta
from quantlab.research.guard import check_no_lookahead
from quantlab.research.indicators import INDICATORS, panels_from_bars


def random_bars(n_assets: int, years: int, seed: int) -> pd.DataFrame:
    "A long bars frame (symbol, ts, open, high, low, close, volume) of random-walk prices."
    rng = np.random.default_rng(seed)
    n = 252 * years
    ts = pd.date_range("2000-01-03 21:00", periods=n, freq="B", tz="UTC")
    rets = rng.normal(0.0003, 0.02, (n, n_assets)) + rng.normal(0, 0.01, (n, 1))     # a common market factor
    close = 50 * np.exp(np.cumsum(rets, axis=0))
    open_ = close * np.exp(rng.normal(0, 0.005, close.shape))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.01, close.shape)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.01, close.shape)))
    volume = rng.lognormal(13, 1, close.shape).round()
    listed = np.zeros(n_assets, dtype=int)
    late = rng.choice(n_assets, n_assets // 4, replace=False)
    listed[late] = rng.integers(1, n // 2, len(late))
    keep = np.arange(n)[:, None] >= listed[None, :]
    symbols = np.array([f"S{i:04d}" for i in range(n_assets)])
    rows = np.nonzero(keep.T)                                                         # (asset, time) pairs, sorted
    return pd.DataFrame({"symbol": symbols[rows[0]], "ts": ts[rows[1]],
                         "open": open_.T[rows], "high": high.T[rows], "low": low.T[rows],
                         "close": close.T[rows], "volume": volume.T[rows]})


def timed(label: str, fn, results: list):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    results.append((label, seconds, cpu))
    print(f"{label:<58s} {seconds:8.3f} {cpu:8.3f}", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=500)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    results = []
    print(f"{'step':<58s} {'wall s':>8s} {'cpu s':>8s}")
    bars = timed("generate random-walk bars", lambda: random_bars(args.assets, args.years, args.seed), results)
    fields = timed("panels_from_bars (long -> 5 panels)", lambda: panels_from_bars(bars), results)
    print(f"# panel: {fields['close'].shape[0]} bars x {fields['close'].shape[1]} assets, "
          f"{len(bars):,} long rows", flush=True)
    for name, fn in INDICATORS.items():
        timed(f"indicator {name}", lambda: fn(fields), results)
    for name, fn in FACTORS.items():
        timed(f"factor {name}", lambda: fn(fields), results)
    mom, beta = momentum(fields["close"]), market_beta(fields["close"])
    sectors = pd.Series(np.random.default_rng(args.seed).integers(0, 11, args.assets).astype(str), index=fields["close"].columns)
    for label, fn in [("cs_rank", lambda: cs_rank(mom)), ("cs_zscore", lambda: cs_zscore(mom)),
                      ("winsorize quantile", lambda: winsorize(mom)), ("winsorize sigma", lambda: winsorize(mom, method="sigma")),
                      ("demean by 11 sectors", lambda: demean(mom, sectors)),
                      ("neutralize on beta", lambda: neutralize(mom, {"beta": beta})),
                      ("neutralize on beta + 11 sector dummies", lambda: neutralize(mom, {"beta": beta}, groups=sectors))]:
        timed(f"cross-section {label}", fn, results)
    timed("guard: check_no_lookahead(momentum_beta_neutral, 5 cuts)",
          lambda: check_no_lookahead(FACTORS["momentum_beta_neutral"], fields, n_dates=5), results)
    lib = [r for r in results if r[0].startswith(("indicator", "factor"))]
    print(f"{'TOTAL indicators + factor library':<58s} {sum(r[1] for r in lib):8.3f} {sum(r[2] for r in lib):8.3f}")
    print(f"{'TOTAL all steps':<58s} {sum(r[1] for r in results):8.3f} {sum(r[2] for r in results):8.3f}")


if __name__ == "__main__":
    main()
