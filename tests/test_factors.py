"""quantlab.research.factors on real data against independent numpy / scipy / statsmodels computations."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import statsmodels.api as sm

from quantlab.core import UsageError, session_closes
from quantlab.research.factors import (FACTORS, MIN_ASSETS, amihud, combine, cs_rank, cs_zscore, demean, low_volatility,
                              market_beta, momentum, neutralize, reversal, trend, winsorize)

# Static sector labels of the pypfopt tickers (GICS sectors as of 2018), for group tests.
SECTORS = {"GOOG": "comm", "FB": "comm", "T": "comm", "AAPL": "tech", "AMD": "tech", "MA": "tech",
           "AMZN": "discr", "BABA": "discr", "GM": "discr", "UAA": "discr", "SHLD": "discr", "BBY": "discr",
           "SBUX": "discr", "WMT": "staples", "GE": "indus", "BAC": "fin", "JPM": "fin", "XOM": "energy",
           "RRC": "energy", "PFE": "health"}


@pytest.fixture(scope="module")
def closes(pypfopt_closes):
    return pypfopt_closes.copy()


@pytest.fixture(scope="module")
def spy_returns(pypfopt_spy, closes):
    spy = pypfopt_spy
    return (spy / spy.shift(1) - 1).reindex(closes.index)


@pytest.fixture(scope="module")
def ohlcv(shared_data):
    "YHOO/ORCL/NVDA close and volume panels from the backtrader files."
    files = {"YHOO": "yhoo-1996-2015.txt", "ORCL": "orcl-1995-2014.txt", "NVDA": "nvda-1999-2014.txt"}
    frames = {s: pd.read_csv(shared_data / "backtrader" / f, parse_dates=["Date"]).set_index("Date") for s, f in files.items()}
    out = {}
    for field in ("Close", "Volume"):
        panel = pd.DataFrame({s: f[field] for s, f in frames.items()}).sort_index().astype("float64")
        panel.index = session_closes(panel.index)
        out[field.lower()] = panel
    return out


def _rows(panel, n=12, seed=0):
    "A few rows with enough assets to be interesting."
    rng = np.random.default_rng(seed)
    ok = np.flatnonzero(panel.notna().sum(axis=1).to_numpy() >= MIN_ASSETS)
    return sorted(rng.choice(ok, size=min(n, len(ok)), replace=False))


# ---------------------------------------------------------------- factor library

def test_momentum_skips_the_last_month(closes):
    mom = momentum(closes)
    c = closes.to_numpy()
    expected = np.full(c.shape, np.nan)
    expected[252:] = c[252 - 21: len(c) - 21] / c[: len(c) - 252] - 1
    np.testing.assert_allclose(mom.to_numpy(), expected, rtol=1e-12, equal_nan=True)
    with pytest.raises(UsageError):
        momentum(closes, lookback=21, skip=21)


def test_reversal_is_minus_the_last_month(closes):
    c = closes.to_numpy()
    np.testing.assert_allclose(reversal(closes).to_numpy()[21:], -(c[21:] / c[:-21] - 1), rtol=1e-12, equal_nan=True)


def test_low_volatility_matches_numpy_std(closes):
    lv = low_volatility(closes, 126)
    c = closes["WMT"].to_numpy()
    for t in (126, 3000, len(c) - 1):
        w = c[t - 126: t + 1]
        assert lv["WMT"].iloc[t] == pytest.approx(-np.std(w[1:] / w[:-1] - 1, ddof=1) * np.sqrt(252), rel=1e-9)
    assert lv["WMT"].iloc[:126].isna().all()


def test_market_beta_matches_statsmodels(closes, spy_returns):
    beta = market_beta(closes, spy_returns, 252)
    ew = market_beta(closes, None, 252)
    rets = closes / closes.shift(1) - 1
    ew_market = rets.mean(axis=1)
    for symbol, t in [("XOM", 2000), ("AMZN", 5000), ("FB", 7000), ("SHLD", 7125)]:
        y = rets[symbol].iloc[t - 251: t + 1].to_numpy()
        for ours, x in [(beta, spy_returns), (ew, ew_market)]:
            xv = x.iloc[t - 251: t + 1].to_numpy()
            fit = sm.OLS(y, sm.add_constant(xv)).fit()
            assert ours[symbol].iloc[t] == pytest.approx(fit.params[1], rel=1e-8)


def test_amihud_matches_a_direct_loop(ohlcv):
    close, volume = ohlcv["close"], ohlcv["volume"]
    ill = amihud(close, volume, 252)
    for symbol in close.columns:
        c, v = close[symbol].dropna().to_numpy(), volume[symbol].dropna().to_numpy()
        start = close.index.get_loc(close[symbol].first_valid_index())
        for k in (252, 1000, len(c) - 1):
            daily = [abs(c[i] / c[i - 1] - 1) / (c[i] * v[i]) * 1e6 for i in range(k - 251, k + 1)]
            assert ill[symbol].iloc[start + k] == pytest.approx(np.mean(daily), rel=1e-9)
    # zero volume: the day is left out (not infinite), a window with too few valid days is NaN
    v0 = volume.copy()
    v0.iloc[-40:, 0] = 0.0                              # 212 valid days >= 80% of 252
    out = amihud(close, v0, 252)
    assert np.isfinite(out.iloc[-1, 0]) and np.isnan(amihud(close, v0, 252, min_periods=250).iloc[-1, 0])


def test_trend_is_price_over_its_moving_average(closes):
    np.testing.assert_allclose(trend(closes, 200).to_numpy(), (closes / closes.rolling(200).mean()).to_numpy(),
                               rtol=1e-9, equal_nan=True)


# ---------------------------------------------------------------- cross-sectional tools

def test_cs_rank_matches_scipy_rankdata(closes):
    mom = momentum(closes)
    ranks = cs_rank(mom)
    for t in _rows(mom):
        row = mom.iloc[t]
        ok = row.notna()
        expected = scipy.stats.rankdata(row[ok].to_numpy(), method="average") / ok.sum()
        np.testing.assert_allclose(ranks.iloc[t][ok].to_numpy(), expected)
        assert ranks.iloc[t][~ok].isna().all()


def test_cs_zscore_matches_scipy(closes):
    rev = reversal(closes)
    z = cs_zscore(rev)
    for t in _rows(rev):
        row = rev.iloc[t].dropna()
        np.testing.assert_allclose(z.iloc[t][row.index].to_numpy(), scipy.stats.zscore(row.to_numpy(), ddof=1), rtol=1e-10)


def test_too_few_assets_give_nan_rows(closes):
    few = closes[["AAPL", "GE", "PFE", "XOM"]]          # 4 < MIN_ASSETS
    for fn in (cs_rank, cs_zscore, winsorize, demean, neutralize):
        assert fn(few).isna().all().all(), fn.__name__
    assert cs_zscore(few, min_assets=4).iloc[-1].notna().all()


def test_winsorize_matches_per_row_clipping(closes):
    rev = reversal(closes)
    wq = winsorize(rev, 0.1, 0.9)
    ws = winsorize(rev, method="sigma", n_sigma=1.5)
    for t in _rows(rev):
        row = rev.iloc[t]
        lo, hi = np.nanquantile(row.to_numpy(), [0.1, 0.9])
        np.testing.assert_allclose(wq.iloc[t].to_numpy(), np.clip(row.to_numpy(), lo, hi), equal_nan=True)
        m, s = row.mean(), row.std(ddof=1)
        np.testing.assert_allclose(ws.iloc[t].to_numpy(), np.clip(row.to_numpy(), m - 1.5 * s, m + 1.5 * s), equal_nan=True)


def test_sector_demeaning_matches_groupby(closes):
    sectors = pd.Series(SECTORS)
    mom = momentum(closes)
    ours = demean(mom, sectors)
    long = mom.stack().rename("v").reset_index()
    long["sector"] = long["symbol"].map(SECTORS) if "symbol" in long else long.iloc[:, 1].map(SECTORS)
    key = long.columns[1]
    grp = long.groupby(["ts", "sector"])["v"]
    long["ref"] = long["v"] - grp.transform("mean")
    long.loc[grp.transform("count") < 2, "ref"] = np.nan            # single-member groups
    ref = long.pivot(index="ts", columns=key, values="ref").reindex(index=mom.index, columns=mom.columns)
    ref = ref.where(np.broadcast_to(mom.notna().sum(axis=1).to_numpy()[:, None] >= MIN_ASSETS, ref.shape))
    np.testing.assert_allclose(ours.to_numpy(), ref.to_numpy(), atol=1e-12, equal_nan=True)


def test_time_varying_groups_panel(closes):
    mom = momentum(closes).iloc[-300:]
    labels = pd.DataFrame(np.where(np.arange(300)[:, None] < 150, "early", "late").repeat(20, axis=1), index=mom.index, columns=mom.columns)
    labels.iloc[150:, :10] = "other"                       # half the assets switch group half-way
    out = demean(mom, labels)
    np.testing.assert_allclose(out.iloc[0].to_numpy(), (mom.iloc[0] - mom.iloc[0].mean()).to_numpy(), equal_nan=True)
    last = mom.iloc[-1]
    np.testing.assert_allclose(out.iloc[-1, :10].to_numpy(), (last.iloc[:10] - last.iloc[:10].mean()).to_numpy(), equal_nan=True)


def test_neutralize_matches_statsmodels_ols_per_date(closes, spy_returns):
    mom, beta = momentum(closes), market_beta(closes, spy_returns, 252)
    vol = low_volatility(closes, 126)
    res = neutralize(mom, {"beta": beta, "vol": vol})
    res_g = neutralize(mom, {"beta": beta}, groups=pd.Series(SECTORS))
    for t in _rows(mom.where(beta.notna() & vol.notna()), n=8):
        df = pd.DataFrame({"y": mom.iloc[t], "beta": beta.iloc[t], "vol": vol.iloc[t]}).dropna()
        if len(df) < MIN_ASSETS: continue
        fit = sm.OLS(df["y"], sm.add_constant(df[["beta", "vol"]])).fit()
        np.testing.assert_allclose(res.iloc[t][df.index].to_numpy(), fit.resid.to_numpy(), atol=1e-10)
        # with sector dummies (no intercept), dropping sectors with one member as neutralize does
        df["sector"] = df.index.map(SECTORS)
        df = df[df.groupby("sector")["y"].transform("count") >= 2]
        dummies = pd.get_dummies(df["sector"], dtype=float)
        fit = sm.OLS(df["y"], pd.concat([df[["beta"]], dummies], axis=1)).fit()
        np.testing.assert_allclose(res_g.iloc[t][df.index].to_numpy(), fit.resid.to_numpy(), atol=1e-10)


def test_neutralized_factor_is_orthogonal_to_exposures(closes, spy_returns):
    mom, beta = momentum(closes), market_beta(closes, spy_returns, 252)
    res = neutralize(mom, {"beta": beta})
    r, b = res.to_numpy(), beta.to_numpy()
    ok = np.isfinite(r)
    assert ok.any(axis=1).sum() > 4000
    np.testing.assert_allclose(np.where(ok, r, 0).sum(axis=1), 0, atol=1e-10)
    np.testing.assert_allclose(np.where(ok, r * b, 0).sum(axis=1), 0, atol=1e-10)


def test_combine_is_a_weighted_mean_of_zscores(closes):
    parts = {"mom": momentum(closes), "rev": reversal(closes), "trend": trend(closes)}
    w = {"mom": 2.0, "rev": 1.0, "trend": 1.0}
    out = combine(parts, w)
    z = {k: cs_zscore(v) for k, v in parts.items()}
    ref = (2 * z["mom"] + z["rev"] + z["trend"]) / 4
    np.testing.assert_allclose(out.to_numpy(), ref.to_numpy(), rtol=1e-12, equal_nan=True)
    ranked = combine(parts, standardize="rank")
    np.testing.assert_allclose(ranked.to_numpy(), ((cs_rank(parts["mom"]) + cs_rank(parts["rev"]) + cs_rank(parts["trend"])) / 3).to_numpy(),
                               rtol=1e-12, equal_nan=True)
    with pytest.raises(UsageError):
        combine(parts, {"mom": 1.0})


def test_every_registered_factor_produces_values(closes, ohlcv):
    fields = {"close": closes, "volume": closes * 0 + 1e6}
    for name, fn in FACTORS.items():
        out = fn(fields)
        assert out.shape == closes.shape and out.iloc[-1].notna().sum() >= MIN_ASSETS, name
