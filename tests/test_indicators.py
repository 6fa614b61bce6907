"""quantlab.research.indicators against TA-Lib's own output, independent pandas/numpy/statsmodels computations, on real data.

Close-only indicators run on the 20 adjusted closes of pypfopt/stock_prices.csv (late listings = leading NaNs);
ATR/OBV/stochastic run on the backtrader YHOO/ORCL/NVDA OHLCV files, ingested through the store.
"""
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import talib

from quantlab.data.loaders import load_file
from quantlab.data.store import BarStore
from quantlab.core import DataError, UsageError, session_closes
from quantlab.research.indicators import (INDICATORS, atr, bollinger, dollar_volume, ema, macd, market_returns, obv,
                                 panels_from_bars, relative_volume, returns, rolling_beta, rolling_corr, rsi, sma,
                                 stochastic, to_panel, volatility)

BACKTRADER = {"YHOO": "yhoo-1996-2015.txt", "ORCL": "orcl-1995-2014.txt", "NVDA": "nvda-1999-2014.txt"}


@pytest.fixture(scope="module")
def closes(pypfopt_closes) -> pd.DataFrame:
    "pypfopt's 20 adjusted closes as a panel stamped at the NYSE close (UTC)."
    return pypfopt_closes.copy()


@pytest.fixture(scope="module")
def spy(pypfopt_spy) -> pd.Series:
    return pypfopt_spy.copy()


def _raw_ohlcv(shared_data, symbol) -> pd.DataFrame:
    raw = pd.read_csv(shared_data / "backtrader" / BACKTRADER[symbol], parse_dates=["Date"])
    return raw.rename(columns=str.lower)


def backtrader_bars(shared_data, store_root) -> pd.DataFrame:
    "Long bars of YHOO/ORCL/NVDA, loaded, written to a fresh store and read back (the path research data takes)."
    store = BarStore(store_root)
    for symbol, name in BACKTRADER.items():
        loaded = load_file(shared_data / "backtrader" / name, preset="backtrader", symbol=symbol)
        store.write_bars(loaded.bars, source=loaded.source)
    return store.read_bars()


@pytest.fixture(scope="module")
def ohlcv(shared_data, tmp_path_factory) -> dict:
    return panels_from_bars(backtrader_bars(shared_data, tmp_path_factory.mktemp("store")))


def _talib_on_own_rows(func, *series, **params):
    "TA-Lib on one asset's own (non-NaN) rows, returned on those rows."
    frame = pd.concat(series, axis=1).dropna()
    out = func(*[frame.iloc[:, i].to_numpy() for i in range(frame.shape[1])], **params)
    outs = out if isinstance(out, tuple) else (out,)
    return [pd.Series(o, index=frame.index) for o in outs]


def _assert_same(ours: pd.Series, ref: pd.Series, rtol=1e-10):
    "ours equals ref on ref's rows and is NaN everywhere else."
    assert ours.reindex(ref.index).notna().sum() == ref.notna().sum()
    np.testing.assert_allclose(ours.reindex(ref.index).to_numpy(), ref.to_numpy(), rtol=rtol, equal_nan=True)
    assert ours.drop(ref.index).isna().all()


# ---------------------------------------------------------------- panels

def test_panels_from_bars_pivots_the_long_frame(ohlcv, shared_data):
    close = ohlcv["close"]
    assert list(ohlcv) == ["open", "high", "low", "close", "volume"]
    assert close.index.is_monotonic_increasing and close.index.is_unique and str(close.index.tz) == "UTC"
    assert sorted(close.columns) == ["NVDA", "ORCL", "YHOO"]
    raw = _raw_ohlcv(shared_data, "NVDA")
    assert close["NVDA"].notna().sum() == len(raw)
    assert close["NVDA"].loc[: session_closes(raw["date"].iloc[[0]])[0]].iloc[:-1].isna().all()  # listed later: leading NaN
    np.testing.assert_array_equal(close["NVDA"].dropna().to_numpy(), raw["close"].to_numpy())


def test_store_in_data_dir_to_panels_to_atr(shared_data, data_dir):
    # BarStore() with no root uses $QUANTLAB_DATA_DIR, which the data_dir fixture points at a fresh directory
    loaded = load_file(shared_data / "backtrader" / BACKTRADER["NVDA"], preset="backtrader", symbol="NVDA")
    BarStore().write_bars(loaded.bars, source=loaded.source)
    assert (data_dir / "manifest.json").exists()
    fields = panels_from_bars(BarStore(data_dir).read_bars(["NVDA"], start="2005-01-01", end="2009-12-31 23:59"))
    raw = _raw_ohlcv(shared_data, "NVDA")
    raw = raw[(raw["date"] >= "2005-01-01") & (raw["date"] <= "2009-12-31")]
    ref = talib.ATR(*(raw[k].to_numpy(dtype="float64") for k in ("high", "low", "close")), 20)
    np.testing.assert_allclose(atr(fields["high"], fields["low"], fields["close"], 20)["NVDA"].to_numpy(), ref, equal_nan=True)


def test_to_panel_rejects_duplicates_and_missing_columns():
    bars = pd.DataFrame({"symbol": ["A", "A"], "ts": pd.to_datetime(["2024-01-02"] * 2, utc=True), "close": [1., 2.]})
    with pytest.raises(DataError, match="duplicate"):
        to_panel(bars)
    with pytest.raises(DataError, match="volume"):
        to_panel(bars, "volume")


def test_unsorted_panel_is_refused(closes):
    with pytest.raises(UsageError, match="sorted"):
        sma(closes.iloc[::-1], 20)


# ---------------------------------------------------------------- TA-Lib oracle, close-only, 20 stocks

CLOSE_ONLY = [
    ("sma", lambda c: [sma(c, 30)], lambda s: _talib_on_own_rows(talib.SMA, s, timeperiod=30)),
    ("ema", lambda c: [ema(c, 30)], lambda s: _talib_on_own_rows(talib.EMA, s, timeperiod=30)),
    ("rsi", lambda c: [rsi(c, 14)], lambda s: _talib_on_own_rows(talib.RSI, s, timeperiod=14)),
    ("macd", lambda c: list(macd(c, 12, 26, 9).values()),
     lambda s: _talib_on_own_rows(talib.MACD, s, fastperiod=12, slowperiod=26, signalperiod=9)),
    ("bollinger", lambda c: list(bollinger(c, 20, 2.0).values()),
     lambda s: _talib_on_own_rows(talib.BBANDS, s, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=0)),
]


@pytest.mark.parametrize("name,ours,ref", CLOSE_ONLY, ids=[c[0] for c in CLOSE_ONLY])
def test_close_indicators_match_talib_on_every_stock(closes, name, ours, ref):
    outputs = ours(closes)
    assert all(o.shape == closes.shape for o in outputs)
    for symbol in closes.columns:
        for mine, theirs in zip(outputs, ref(closes[symbol])):
            _assert_same(mine[symbol], theirs)


def test_sma_and_bollinger_match_pandas_rolling(closes):
    # an independent computation: pandas rolling mean / population std on each listed stretch
    mid, bands = sma(closes, 20), bollinger(closes, 20, 2.0)
    ref_mid = closes.rolling(20).mean()
    ref_std = closes.rolling(20).std(ddof=0)
    np.testing.assert_allclose(mid.to_numpy(), ref_mid.to_numpy(), rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(bands["upper"].to_numpy(), (ref_mid + 2 * ref_std).to_numpy(), rtol=1e-7, equal_nan=True)


def test_ema_and_rsi_follow_the_documented_recursions(closes):
    # EMA: seed = SMA of the first n, then alpha = 2/(n+1); RSI: Wilder averages seeded with simple means
    s = closes["GOOG"].dropna().to_numpy()
    n = 10
    e = np.empty(len(s)); e[: n - 1] = np.nan; e[n - 1] = s[:n].mean()
    for t in range(n, len(s)): e[t] = e[t - 1] + 2 / (n + 1) * (s[t] - e[t - 1])
    np.testing.assert_allclose(ema(closes, n)["GOOG"].dropna().to_numpy(), e[n - 1:], rtol=1e-9)
    d = np.diff(s); up, down = np.clip(d, 0, None), np.clip(-d, 0, None)
    au, ad = up[:n].mean(), down[:n].mean(); expected = [100 * au / (au + ad)]
    for t in range(n, len(d)):
        au, ad = (au * (n - 1) + up[t]) / n, (ad * (n - 1) + down[t]) / n
        expected.append(100 * au / (au + ad))
    np.testing.assert_allclose(rsi(closes, n)["GOOG"].dropna().to_numpy(), expected, rtol=1e-8)


def test_leading_nans_give_warmup_after_the_listing(closes):
    out = sma(closes, 50)["FB"]
    first = closes["FB"].first_valid_index()
    pos = closes.index.get_loc(first)
    assert out.iloc[: pos + 49].isna().all() and out.iloc[pos + 49:].notna().all()


def test_interior_nan_is_skipped_not_propagated(closes):
    holed = closes.copy()
    gap = holed.index[5000]
    holed.loc[gap, "AAPL"] = np.nan
    for fn in (lambda c: ema(c, 20), lambda c: rsi(c, 14), lambda c: macd(c)["macd"]):
        out = fn(holed)["AAPL"]
        assert np.isnan(out.loc[gap]) and out.iloc[5001:].notna().all()
        _assert_same(out, fn(holed["AAPL"].dropna()))       # equal to the indicator on the bars that exist
    pd.testing.assert_series_equal(ema(holed, 20)["GE"], ema(closes, 20)["GE"])   # other assets untouched


def test_series_in_series_out(closes):
    s = closes["AAPL"]
    out = rsi(s, 14)
    assert isinstance(out, pd.Series) and out.index.equals(s.index)
    pd.testing.assert_series_equal(out, rsi(closes, 14)["AAPL"], check_names=False)


# ---------------------------------------------------------------- TA-Lib oracle, OHLCV (backtrader files)

def test_atr_obv_stochastic_match_talib_on_each_file(ohlcv, shared_data):
    a = atr(ohlcv["high"], ohlcv["low"], ohlcv["close"], 14)
    o = obv(ohlcv["close"], ohlcv["volume"])
    st = stochastic(ohlcv["high"], ohlcv["low"], ohlcv["close"], 14, 3, 3)
    for symbol in BACKTRADER:
        raw = _raw_ohlcv(shared_data, symbol)
        h, l, c, v = (raw[k].to_numpy(dtype="float64") for k in ("high", "low", "close", "volume"))
        rows = ohlcv["close"][symbol].dropna().index
        for mine, theirs in [(a, talib.ATR(h, l, c, 14)), (o, talib.OBV(c, v)),
                             (st["k"], talib.STOCH(h, l, c, 14, 3, 0, 3, 0)[0]),
                             (st["d"], talib.STOCH(h, l, c, 14, 3, 0, 3, 0)[1])]:
            _assert_same(mine[symbol], pd.Series(theirs, index=rows))


def test_atr_with_a_missing_bar_uses_the_assets_own_bars(ohlcv):
    high, low, close = (ohlcv[k].copy() for k in ("high", "low", "close"))
    gap = close["ORCL"].dropna().index[3000]
    low.loc[gap, "ORCL"] = np.nan               # one missing input field drops the whole bar
    out = atr(high, low, close, 14)["ORCL"]
    keep = close["ORCL"].notna() & low["ORCL"].notna()
    ref = talib.ATR(*(x["ORCL"][keep].to_numpy() for x in (high, low, close)), 14)
    _assert_same(out, pd.Series(ref, index=close.index[keep]))


# ---------------------------------------------------------------- pandas-based statistics

def test_returns_and_volatility_match_numpy(closes):
    c = closes["XOM"].to_numpy()
    r = returns(closes)["XOM"].to_numpy()
    np.testing.assert_allclose(r[1:], c[1:] / c[:-1] - 1, rtol=1e-12)
    np.testing.assert_allclose(returns(closes, 5, log=True)["XOM"].to_numpy()[5:], np.log(c[5:] / c[:-5]), rtol=1e-10)
    vol = volatility(closes, 21, annualize=252)["XOM"]
    for t in (21, 1000, len(c) - 1):
        window = c[t - 21: t + 1]
        expected = np.std(window[1:] / window[:-1] - 1, ddof=1) * np.sqrt(252)
        assert vol.iloc[t] == pytest.approx(expected, rel=1e-9)
    assert vol.iloc[:21].isna().all()


def test_rolling_beta_matches_statsmodels_ols(closes, spy):
    rets = returns(closes)
    bench = returns(spy).reindex(closes.index)
    beta = rolling_beta(rets, bench, 126)
    corr = rolling_corr(rets, bench, 126)
    for symbol, t in [("AAPL", 2000), ("JPM", 5000), ("FB", 7000), ("BABA", 7100), ("SHLD", 6000)]:
        y = rets[symbol].iloc[t - 125: t + 1]
        x = bench.iloc[t - 125: t + 1]
        both = y.notna() & x.notna()
        if both.sum() < 126:
            assert np.isnan(beta[symbol].iloc[t])
            continue
        fit = sm.OLS(y[both].to_numpy(), sm.add_constant(x[both].to_numpy())).fit()
        assert beta[symbol].iloc[t] == pytest.approx(fit.params[1], rel=1e-8)
        assert corr[symbol].iloc[t] == pytest.approx(np.sign(fit.params[1]) * np.sqrt(fit.rsquared), rel=1e-8)


def test_rolling_beta_partial_windows_use_pairwise_complete_bars(closes, spy):
    rets, bench = returns(closes), returns(spy).reindex(closes.index)
    beta = rolling_beta(rets, bench, 252, min_periods=60)
    fb_first = rets["FB"].first_valid_index()
    t = closes.index.get_loc(fb_first) + 99             # 100 FB returns in a 252-bar window
    y, x = rets["FB"].iloc[t - 251: t + 1], bench.iloc[t - 251: t + 1]
    both = y.notna() & x.notna()
    assert both.sum() == 100
    fit = sm.OLS(y[both].to_numpy(), sm.add_constant(x[both].to_numpy())).fit()
    assert beta["FB"].iloc[t] == pytest.approx(fit.params[1], rel=1e-8)
    assert rolling_beta(rets, "GE", 63)["GE"].dropna().to_numpy() == pytest.approx(1.0)


def test_volume_features_match_direct_computation(ohlcv):
    v, c = ohlcv["volume"]["YHOO"].dropna(), ohlcv["close"]["YHOO"].dropna()
    rv = relative_volume(ohlcv["volume"], 20)["YHOO"].dropna()
    vv = v.to_numpy()
    expected = [vv[t] / vv[t - 20: t].mean() for t in range(20, len(vv))]
    np.testing.assert_allclose(rv.to_numpy(), expected, rtol=1e-10)
    dv = dollar_volume(ohlcv["close"], ohlcv["volume"], 10)["YHOO"].dropna().to_numpy()
    cv = c.to_numpy() * vv
    np.testing.assert_allclose(dv, np.convolve(cv, np.ones(10) / 10, mode="valid"), rtol=1e-9)


def test_market_returns_is_the_cross_sectional_mean(closes):
    m = market_returns(closes)
    r = closes.to_numpy()[1:] / closes.to_numpy()[:-1] - 1
    np.testing.assert_allclose(m.to_numpy()[1:], np.nanmean(r, axis=1), rtol=1e-12)


def test_every_registered_indicator_runs_on_real_ohlcv(ohlcv):
    for name, fn in INDICATORS.items():
        out = fn(ohlcv)
        parts = out.values() if isinstance(out, dict) else [out]
        for part in parts:
            assert part.shape == ohlcv["close"].shape, name
            assert part.notna().to_numpy().sum() > 0.9 * ohlcv["close"].notna().to_numpy().sum() - 300, name


def test_named_series_work_like_one_asset_and_equal_talib():
    "Plain Series (df.high, df.low, df.close) carry different names; they are one asset, not three misaligned columns."
    import talib
    from arch.data import sp500
    from quantlab.research import indicators
    df = sp500.load().rename(columns=str.lower)
    h, l, c, v = df["high"], df["low"], df["close"], df["volume"].astype(float)
    np.testing.assert_allclose(indicators.atr(h, l, c).to_numpy(), talib.ATR(h.values, l.values, c.values, 14), equal_nan=True)
    np.testing.assert_allclose(indicators.obv(c, v).to_numpy(), talib.OBV(c.values, v.values), equal_nan=True)
    k, d = talib.STOCH(h.values, l.values, c.values, 14, 3, 0, 3, 0)
    st = indicators.stochastic(h, l, c)
    np.testing.assert_allclose(st["k"].to_numpy(), k, equal_nan=True); np.testing.assert_allclose(st["d"].to_numpy(), d, equal_nan=True)
    assert indicators.atr(h, l, c).notna().sum() == len(df) - 14
