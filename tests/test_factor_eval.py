"""quantlab.research.factor_eval against scipy, statsmodels and pandas references, on real prices and planted signals."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import statsmodels.api as sm

from quantlab.core import UsageError
from quantlab.research.factor_eval import (fama_french, fama_french_regression, store_fama_french, factor_quantiles, hac_regression, ic_decay,
                                  ic_summary, information_coefficient, monthly_returns, newey_west, newey_west_many,
                                  nw_maxlags, plot_ic, plot_ic_decay, plot_quantile_returns, quantile_returns,
                                  quantile_turnover, rank_autocorrelation, synthetic_factor)
from quantlab.research.indicators import returns
from quantlab.research.labels import forward_returns


@pytest.fixture(scope="module")
def stocks(pypfopt_closes):
    return pypfopt_closes.loc["2008":].copy()


@pytest.fixture(scope="module")
def momentum(stocks):
    "21-day reversal factor and 5-day forward returns on 20 real stocks (some list inside the window)."
    return -returns(stocks, 21), forward_returns(stocks, 5)


def test_rank_ic_equals_scipy_spearmanr_on_every_date(momentum):
    factor, fwd = momentum
    ic = information_coefficient(factor, fwd, min_assets=5)
    checked = 0
    for t in factor.index[::17]:
        ok = factor.loc[t].notna() & fwd.loc[t].notna()
        if ok.sum() < 5:
            assert np.isnan(ic[t]); continue
        ref = scipy.stats.spearmanr(factor.loc[t, ok], fwd.loc[t, ok]).statistic
        assert ic[t] == pytest.approx(ref, abs=1e-12)
        checked += 1
    assert checked > 100


def test_rank_ic_handles_ties_like_scipy(momentum):
    factor, fwd = momentum
    coarse = (factor * 20).round()   # a factor with many ties per date
    ic = information_coefficient(coarse, fwd)
    for t in coarse.index[100::301]:
        ok = coarse.loc[t].notna() & fwd.loc[t].notna()
        assert coarse.loc[t, ok].duplicated().any()
        assert ic[t] == pytest.approx(scipy.stats.spearmanr(coarse.loc[t, ok], fwd.loc[t, ok]).statistic, abs=1e-12)


def test_pearson_ic_equals_scipy_pearsonr(momentum):
    factor, fwd = momentum
    ic = information_coefficient(factor, fwd, method="pearson")
    t = factor.index[1500]
    ok = factor.loc[t].notna() & fwd.loc[t].notna()
    assert ic[t] == pytest.approx(scipy.stats.pearsonr(factor.loc[t, ok], fwd.loc[t, ok]).statistic, abs=1e-12)


def _statsmodels_nw(y, lags):
    fit = sm.OLS(np.asarray(y, dtype=float), np.ones((len(y), 1))).fit(cov_type="HAC", cov_kwds={"maxlags": lags})
    return fit.params[0], fit.bse[0], fit.tvalues[0], fit.pvalues[0]


def test_newey_west_matches_statsmodels_and_the_bartlett_formula(momentum):
    factor, fwd = momentum
    ic = information_coefficient(factor, fwd).dropna()
    for lags in (0, 5, 21):
        ours = newey_west(ic, maxlags=lags)
        mean, se, t, p = _statsmodels_nw(ic, lags)
        assert (ours["mean"], ours["se"], ours["t"], ours["p"]) == pytest.approx((mean, se, t, p), rel=1e-10)
        # the Bartlett-kernel long-run variance written out by hand
        e = ic.to_numpy() - ic.mean()
        n = len(e)
        s = e @ e / n + sum(2 * (1 - l / (lags + 1)) * (e[l:] @ e[:-l]) / n for l in range(1, lags + 1))
        assert ours["se"] == pytest.approx(np.sqrt(s / n), rel=1e-10)
    many = newey_west_many(pd.DataFrame({"ic": ic.to_numpy(), "half": ic.to_numpy() / 2}), 7)
    mean, se, t, p = _statsmodels_nw(ic, 7)
    assert many.loc["ic", "t"] == pytest.approx(t, rel=1e-10) and many.loc["half", "t"] == pytest.approx(t, rel=1e-10)
    assert many.loc["ic", "p"] == pytest.approx(p, rel=1e-8)


def test_default_lags_cover_the_overlap():
    assert nw_maxlags(5000) == 9 and nw_maxlags(100) == 4 and nw_maxlags(5000, horizon=21) == 21
    s = ic_summary(pd.Series(np.random.default_rng(3).standard_normal(400)), horizon=10)
    assert s["maxlags"] == 10 and s["n_dates"] == 400


def test_quantiles_match_pandas_qcut_per_date(momentum):
    factor, _ = momentum
    qs = factor_quantiles(factor, 5)
    for t in factor.index[30::50]:
        row = factor.loc[t].dropna()
        ref = pd.qcut(row.rank(method="first"), 5, labels=False) + 1
        np.testing.assert_array_equal(qs.loc[t, row.index].to_numpy(), ref.to_numpy(dtype=float))
        assert qs.loc[t, factor.columns.difference(row.index)].isna().all()


def test_quantile_returns_match_a_groupby(momentum):
    factor, fwd = momentum
    qr = quantile_returns(factor, fwd, 4)
    f, r = factor.align(fwd, join="inner")
    both = f.notna() & r.notna()
    long = pd.DataFrame({"q": factor_quantiles(f.where(both), 4).stack(), "r": r.where(both).stack()}).dropna()
    ref = long.groupby([long.index.get_level_values(0), "q"])["r"].mean().unstack()
    ref.columns = ref.columns.astype(int)
    got = qr.loc[ref.index, [1, 2, 3, 4]]
    np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(qr["long_short"].dropna(), (qr[4] - qr[1]).dropna())


def test_turnover_matches_set_differences(momentum):
    factor, _ = momentum
    qs = factor_quantiles(factor, 5)
    turn = quantile_turnover(qs, 5, lag=1)
    for i in range(40, len(qs), 113):
        now = set(qs.columns[qs.iloc[i] == 5]); before = set(qs.columns[qs.iloc[i - 1] == 5])
        assert turn.iloc[i] == pytest.approx(len(now - before) / len(now))
    assert np.isnan(turn.iloc[0])


def test_rank_autocorrelation_equals_spearman_of_lagged_factor(momentum):
    factor, _ = momentum
    ac = rank_autocorrelation(factor, lag=5)
    t, t0 = factor.index[1000], factor.index[995]
    ok = factor.loc[t].notna() & factor.loc[t0].notna()
    assert ac[t] == pytest.approx(scipy.stats.spearmanr(factor.loc[t, ok], factor.loc[t0, ok]).statistic, abs=1e-12)
    assert ac.mean() > 0.5   # a 21-day return changes slowly


def test_planted_signal_is_found_and_its_decay_is_measured():
    for seed in range(3):
        factor, fwd = synthetic_factor(n_dates=400, n_assets=80, strength=0.05, seed=seed)
        s = ic_summary(information_coefficient(factor, fwd))
        assert s["t_nw"] > 3 and s["p_nw"] < 0.01
        assert quantile_returns(factor, fwd)["long_short"].mean() > 0
    rng = np.random.default_rng(11)
    factor = pd.DataFrame(rng.standard_normal((400, 60)), index=pd.date_range("2020-01-01 21:00", periods=400, freq="B", tz="UTC"))
    close = 100 * np.exp((0.01 * (0.1 * factor.shift(1).fillna(0) + rng.standard_normal((400, 60)))).cumsum())
    decay = ic_decay(factor, close, horizons=(1, 5, 20))
    assert decay.loc[1, "t_nw"] > 3 and decay.loc[1, "mean_ic"] > decay.loc[5, "mean_ic"] > 0
    assert list(decay["maxlags"]) == [nw_maxlags(decay.loc[1, "n_dates"]), max(5, nw_maxlags(decay.loc[5, "n_dates"])), 20]


def test_noise_factors_reject_at_the_nominal_rate():
    "200 seeded pure-noise factors: the count of 5% rejections lies in the central 99% of Binomial(200, 0.05)."
    ics = {}
    for seed in range(200):
        factor, fwd = synthetic_factor(n_dates=250, n_assets=40, strength=0.0, seed=1000 + seed)
        ics[seed] = information_coefficient(factor, fwd).to_numpy()
    frame = pd.DataFrame(ics)
    rejected = int((newey_west_many(frame, nw_maxlags(250))["p"] < 0.05).sum())
    lo, hi = scipy.stats.binom.ppf([0.005, 0.995], 200, 0.05)
    assert lo <= rejected <= hi, (rejected, lo, hi)


def test_fama_french_index_units_and_availability():
    ff = fama_french()
    assert len(ff) == 1109 and ff.index.is_monotonic_increasing and str(ff.index.tz) == "UTC"
    assert ff.index[0] == pd.Timestamp("1926-07-01", tz="UTC") and ff.index[-1] == pd.Timestamp("2018-11-01", tz="UTC")
    assert ff["mkt_rf"].iloc[0] == pytest.approx(0.0296) and ff["hml"].iloc[1] == pytest.approx(0.0419)
    # a month is known only after it ends
    assert (ff["available_at"] > ff.index + pd.offsets.MonthEnd(0)).all()
    lagged = fama_french(publication_lag="30D")
    assert (lagged["available_at"] - ff["available_at"] == pd.Timedelta("30D")).all()


def test_store_asof_join_gives_only_months_already_over(data_dir, stocks):
    from quantlab.data.store import BarStore
    store = BarStore(data_dir)
    store_fama_french(store, publication_lag="5D")
    days = stocks.loc["2009-12-20":"2010-03-10"].index
    bars = pd.DataFrame({"symbol": "AAPL", "ts": days})
    joined = store.asof_join(bars, "ff3")
    ff = fama_french(publication_lag="5D")
    # reference: for each day, the latest month whose available_at is at or before the day
    avail = ff["available_at"]
    expected = [avail.index[avail <= t].max() for t in days]
    assert list(joined["ff3_ts"]) == expected
    assert (joined["ff3_ts"] + pd.offsets.MonthBegin(1) <= joined["ts"]).all()   # never the running month
    np.testing.assert_allclose(joined["hml"], ff.loc[expected, "hml"].to_numpy())
    # 2010-02-03 is within the 5-day lag: December 2009 is still the latest known month
    assert joined.set_index("ts")["ff3_ts"].loc["2010-02-03"].iloc[0] == pd.Timestamp("2009-12-01", tz="UTC")


def test_monthly_returns_compound_daily_returns(stocks):
    daily = stocks["AAPL"].pct_change().dropna()
    m = monthly_returns(daily)
    jan = daily.loc["2010-01"]
    assert m.loc[pd.Timestamp("2010-01-01", tz="UTC")] == pytest.approx(np.prod(1 + jan) - 1, rel=1e-12)
    px = stocks["AAPL"]
    assert m.loc[pd.Timestamp("2010-02-01", tz="UTC")] == pytest.approx(px.loc["2010-02"].iloc[-1] / px.loc["2010-01"].iloc[-1] - 1, rel=1e-10)


def test_fama_french_regression_matches_statsmodels_on_real_returns(stocks):
    daily = stocks["JPM"].pct_change().dropna()
    res = fama_french_regression(daily, maxlags=3)
    ff = fama_french()
    m = monthly_returns(daily)
    common = m.index.intersection(ff.index)
    y = m[common] - ff.loc[common, "rf"]
    X = sm.add_constant(ff.loc[common, ["mkt_rf", "smb", "hml"]])
    ref = sm.OLS(y, X).fit(cov_type="HAC", cov_kwds={"maxlags": 3})
    np.testing.assert_allclose(res.table["coef"], ref.params, rtol=1e-10)
    np.testing.assert_allclose(res.table["t"], ref.tvalues, rtol=1e-10)
    assert res.nobs == len(common) and 1.0 < res.table.loc["mkt_rf", "coef"] < 2.0   # a bank: beta above 1


def test_regression_recovers_planted_loadings():
    ff = fama_french().loc["1990":]
    rng = np.random.default_rng(5)
    y = ff["rf"] + 0.002 + 0.8 * ff["mkt_rf"] + 0.4 * ff["smb"] - 0.2 * ff["hml"] + 0.005 * rng.standard_normal(len(ff))
    res = fama_french_regression(y, ff)
    truth = np.array([0.002, 0.8, 0.4, -0.2])
    assert (np.abs(res.table["coef"].to_numpy() - truth) < 3 * res.table["se"].to_numpy()).all()
    assert res.alpha == pytest.approx(0.002, abs=0.001)
    with pytest.raises(UsageError, match="too few"):
        hac_regression(y.iloc[:3], ff[["mkt_rf", "smb", "hml"]])


def test_charts_draw_the_data(momentum, stocks):
    factor, fwd = momentum
    ic = information_coefficient(factor, fwd).iloc[-250:]
    fig = plot_ic(ic)
    assert len(fig.axes[0].patches) == len(ic)
    qr = quantile_returns(factor, fwd)
    assert len(plot_quantile_returns(qr).axes[0].patches) == 6
    decay = ic_decay(factor, stocks, horizons=(1, 5, 10))
    line = plot_ic_decay(decay).axes[0].lines[0]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), decay["mean_ic"].to_numpy())
    import matplotlib.pyplot as plt
    plt.close("all")


def test_bad_input_is_reported():
    with pytest.raises(UsageError, match="method"):
        information_coefficient(pd.DataFrame(), pd.DataFrame(), method="kendall")
    with pytest.raises(UsageError, match="share no"):
        information_coefficient(pd.DataFrame({"A": [1.0]}), pd.DataFrame({"B": [1.0]}))
    with pytest.raises(UsageError, match="complete"):
        newey_west_many(pd.DataFrame({"a": [1.0, np.nan, 2.0]}), 1)
