"""quantlab.research.metrics against empyrical-reloaded, scipy and backtesting.py on real prices.

Conventions that match empyrical are compared to 1e-10 on the 20 pypfopt stocks (with SPY as the
benchmark) and on the S&P 500 index shipped with arch. Where quantlab differs on purpose (NaN rows are
dropped per column, not counted as periods), the documented relation is checked instead: a column's metric
equals empyrical's on `column.dropna()`.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

empyrical = pytest.importorskip("empyrical")

from quantlab.research import metrics as m
from quantlab.core import UsageError

TOL = 1e-10


@pytest.fixture(scope="module")
def stock_returns(shared_data):
    prices = pd.read_csv(shared_data / "pypfopt" / "stock_prices.csv", parse_dates=["date"], index_col="date")
    return prices.pct_change(fill_method=None).iloc[1:]


@pytest.fixture(scope="module")
def spy_returns(shared_data):
    spy = pd.read_csv(shared_data / "pypfopt" / "spy_prices.csv", parse_dates=["date"], index_col="date")["SPY"]
    return spy.pct_change().iloc[1:]


@pytest.fixture(scope="module")
def paired(stock_returns, spy_returns):
    "Stocks and SPY on SPY's dates (stocks keep their pre-listing NaN)."
    common = stock_returns.index.intersection(spy_returns.index)
    return stock_returns.loc[common], spy_returns.loc[common]


@pytest.fixture(scope="module")
def spx():
    from arch.data import sp500
    return sp500.load()["Adj Close"].pct_change().dropna()


def _each_column(df, fn):
    "empyrical applied to every column with its NaN rows dropped (quantlab's documented convention)."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pd.Series({c: fn(df[c].dropna()) for c in df.columns})


UNARY = [
    ("total_return", lambda r: m.total_return(r), lambda r: empyrical.cum_returns_final(r)),
    ("annual_return", lambda r: m.annual_return(r), lambda r: empyrical.annual_return(r)),
    ("annual_volatility", lambda r: m.annual_volatility(r), lambda r: empyrical.annual_volatility(r)),
    ("sharpe", lambda r: m.sharpe_ratio(r), lambda r: empyrical.sharpe_ratio(r)),
    ("sharpe_rf", lambda r: m.sharpe_ratio(r, risk_free=0.0001), lambda r: empyrical.sharpe_ratio(r, risk_free=0.0001)),
    ("sortino", lambda r: m.sortino_ratio(r), lambda r: empyrical.sortino_ratio(r)),
    ("sortino_target", lambda r: m.sortino_ratio(r, 0.0005), lambda r: empyrical.sortino_ratio(r, 0.0005)),
    ("downside_risk", lambda r: m.downside_risk(r), lambda r: empyrical.downside_risk(r)),
    ("max_drawdown", lambda r: m.max_drawdown(r), lambda r: empyrical.max_drawdown(r)),
    ("calmar", lambda r: m.calmar_ratio(r), lambda r: empyrical.calmar_ratio(r)),
    ("omega", lambda r: m.omega_ratio(r), lambda r: empyrical.omega_ratio(r)),
    ("omega_required", lambda r: m.omega_ratio(r, required_return=0.05), lambda r: empyrical.omega_ratio(r, required_return=0.05)),
    ("tail_ratio", lambda r: m.tail_ratio(r), lambda r: empyrical.tail_ratio(r)),
    ("var", lambda r: m.value_at_risk(r), lambda r: empyrical.value_at_risk(r)),
    ("var_1pct", lambda r: m.value_at_risk(r, 0.01), lambda r: empyrical.value_at_risk(r, 0.01)),
    ("cvar", lambda r: m.conditional_value_at_risk(r), lambda r: empyrical.conditional_value_at_risk(r)),
    ("stability", lambda r: m.stability(r), lambda r: empyrical.stability_of_timeseries(r)),
    ("skew", lambda r: m.skew(r), lambda r: stats.skew(r)),
    ("kurtosis", lambda r: m.kurtosis(r), lambda r: stats.kurtosis(r)),
]


@pytest.mark.parametrize("name,ours,theirs", UNARY, ids=[u[0] for u in UNARY])
def test_unary_metric_matches_empyrical_on_20_stocks_per_column(stock_returns, name, ours, theirs):
    got = ours(stock_returns)
    want = _each_column(stock_returns, theirs)
    assert list(got.index) == list(stock_returns.columns)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(dtype=float), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("name,ours,theirs", UNARY, ids=[u[0] for u in UNARY])
def test_unary_metric_matches_empyrical_on_sp500_series(spx, name, ours, theirs):
    got = ours(spx)
    assert isinstance(got, float)
    assert got == pytest.approx(float(theirs(spx)), rel=TOL, abs=TOL)


def test_columns_without_nan_match_empyrical_dataframe_call_directly(stock_returns):
    full = stock_returns.dropna()  # rows where all 20 stocks trade (2014-09 onwards, BABA last)
    np.testing.assert_allclose(m.sharpe_ratio(full), empyrical.sharpe_ratio(full), rtol=TOL)
    np.testing.assert_allclose(m.max_drawdown(full), empyrical.max_drawdown(full), rtol=TOL)
    np.testing.assert_allclose(m.annual_return(full), empyrical.annual_return(full), rtol=TOL)


def test_annual_return_differs_from_empyrical_on_purpose_when_a_column_has_leading_nan(stock_returns):
    fb = stock_returns[["FB"]]  # listed 2012: most rows are NaN
    ours = m.annual_return(fb)["FB"]
    theirs = empyrical.annual_return(fb)["FB"]  # empyrical spreads FB's growth over all 28 years
    years_all, years_fb = len(fb) / 252, fb["FB"].count() / 252
    assert ours != pytest.approx(theirs, rel=1e-3)
    assert (1 + ours) ** years_fb == pytest.approx((1 + theirs) ** years_all, rel=TOL)


BINARY = [
    ("alpha", lambda r, b: m.alpha_beta(r, b)["alpha"], lambda r, b: empyrical.alpha(r, b)),
    ("beta", lambda r, b: m.alpha_beta(r, b)["beta"], lambda r, b: empyrical.beta(r, b)),
    ("alpha_rf", lambda r, b: m.alpha_beta(r, b, risk_free=0.0001)["alpha"], lambda r, b: empyrical.alpha(r, b, risk_free=0.0001)),
    ("up_capture", lambda r, b: m.up_capture(r, b), lambda r, b: empyrical.up_capture(r, b)),
    ("down_capture", lambda r, b: m.down_capture(r, b), lambda r, b: empyrical.down_capture(r, b)),
]


@pytest.mark.parametrize("name,ours,theirs", BINARY, ids=[b[0] for b in BINARY])
def test_benchmark_metric_matches_empyrical_against_spy(paired, name, ours, theirs):
    stocks, spy = paired
    got = ours(stocks, spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = pd.Series({c: theirs(stocks[c].dropna(), spy.loc[stocks[c].dropna().index]) for c in stocks.columns})
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(dtype=float), rtol=TOL, atol=TOL)


def test_alpha_beta_of_a_series_is_a_tuple_matching_statsmodels_ols(paired):
    import statsmodels.api as sm
    stocks, spy = paired
    aapl = stocks["AAPL"]
    alpha, beta = m.alpha_beta(aapl, spy)
    fit = sm.OLS(aapl.to_numpy(), sm.add_constant(spy.to_numpy())).fit()
    assert beta == pytest.approx(fit.params[1], rel=1e-9)
    # alpha compounds the mean residual; OLS's intercept is that residual's mean
    assert alpha == pytest.approx((1 + fit.params[0]) ** 252 - 1, rel=1e-9)


def test_gaussian_var_and_cvar_match_scipy_norm(stock_returns):
    for cutoff in (0.01, 0.05):
        got = m.value_at_risk(stock_returns, cutoff, method="gaussian")
        cv = m.conditional_value_at_risk(stock_returns, cutoff, method="gaussian")
        for c in ["AAPL", "GOOG", "SHLD"]:
            r = stock_returns[c].dropna()
            dist = stats.norm(r.mean(), r.std(ddof=1))
            assert got[c] == pytest.approx(dist.ppf(cutoff), rel=TOL)
            # expected shortfall of a normal = E[X | X < q], by numerical integration
            q = dist.ppf(cutoff)
            tail = dist.expect(lambda x: x, ub=q) / cutoff
            assert cv[c] == pytest.approx(tail, rel=1e-7)


def test_max_drawdown_duration_matches_a_plain_loop(stock_returns):
    got = m.max_drawdown_duration(stock_returns)
    for c in stock_returns.columns:
        r = stock_returns[c].dropna().to_numpy()
        wealth, peak, run, best = 1.0, 1.0, 0, 0
        for x in r:
            wealth *= 1 + x
            if wealth >= peak:
                peak, run = wealth, 0
            else:
                run += 1
                best = max(best, run)
        assert got[c] == best, c


def test_drawdown_series_matches_empyrical(spx):
    np.testing.assert_allclose(m.drawdown(spx).to_numpy(), empyrical.stats.drawdown_series(spx).to_numpy(), rtol=TOL, atol=TOL)


def test_probabilistic_sharpe_ratio_against_the_papers_formula_by_hand(spx):
    r = spx.iloc[-1000:]
    sr = r.mean() / r.std(ddof=1)
    g3, g4 = stats.skew(r), stats.kurtosis(r, fisher=False)
    for sr_star_annual in (0.0, 0.5):
        sr_star = sr_star_annual / np.sqrt(252)
        z = (sr - sr_star) * np.sqrt(len(r) - 1) / np.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr ** 2)
        assert m.probabilistic_sharpe_ratio(r, sr_star_annual) == pytest.approx(stats.norm.cdf(z), rel=1e-12)


def test_constant_and_empty_columns_give_nan_not_inf():
    df = pd.DataFrame({"flat": [0.001] * 10, "empty": [np.nan] * 10, "one": [np.nan] * 9 + [0.01]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning leaks out of the kernels
        table = m.summary(df)
    assert np.isnan(table.loc["flat", "sharpe"]) and table.loc["flat", "annual_volatility"] == 0
    assert table.loc["empty"].drop(["start", "end"]).isna().drop("observations").all()
    assert table.loc["empty", "observations"] == 0
    assert np.isnan(table.loc["one", "annual_volatility"])


def test_many_columns_are_one_vectorised_call_with_the_same_answer_as_one_by_one(spx):
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(spx), size=(len(spx), 300))
    sims = pd.DataFrame(spx.to_numpy()[idx], index=spx.index)
    together = m.summary(sims)
    for c in [0, 17, 299]:
        alone = m.summary(sims[c]).iloc[0]
        pd.testing.assert_series_equal(together.loc[c].drop(["start", "end"]).astype(float),
                                       alone.drop(["start", "end"]).astype(float), check_names=False, rtol=1e-12)


def test_trade_metrics_match_backtesting_py_on_goog_sma_cross():
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import GOOG, SMA

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(SMA, self.data.Close, 10)
            self.slow = self.I(SMA, self.data.Close, 20)

        def next(self):
            if crossover(self.fast, self.slow): self.position.close(); self.buy()
            elif crossover(self.slow, self.fast): self.position.close(); self.sell()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = Backtest(GOOG, SmaCross, cash=10_000, commission=0.002, finalize_trades=True).run()
    bt = st["_trades"]
    trades = pd.DataFrame({"symbol": "GOOG", "entry_ts": bt["EntryTime"], "exit_ts": bt["ExitTime"],
                           "quantity": bt["Size"], "pnl": bt["PnL"], "return": bt["ReturnPct"]})
    by_return = m.trade_metrics(trades, value="return")
    assert by_return["trades"] == st["# Trades"]
    assert by_return["hit_rate"] * 100 == pytest.approx(st["Win Rate [%]"], rel=1e-12)
    assert by_return["profit_factor"] == pytest.approx(st["Profit Factor"], rel=1e-12)
    assert by_return["expectancy"] * 100 == pytest.approx(st["Expectancy [%]"], rel=1e-12)
    assert abs(by_return["avg_holding"] - st["Avg. Trade Duration"]) <= pd.Timedelta(days=1)  # backtesting rounds
    by_pnl = m.trade_metrics(trades)
    assert by_pnl["total_pnl"] == pytest.approx(bt["PnL"].sum(), rel=1e-12)
    wins, losses = bt["PnL"][bt["PnL"] > 0], bt["PnL"][bt["PnL"] < 0]
    assert by_pnl["payoff_ratio"] == pytest.approx(wins.mean() / -losses.mean(), rel=1e-12)


def test_trade_metrics_without_the_value_column_names_it():
    with pytest.raises(UsageError, match="'pnl'"):
        m.trade_metrics(pd.DataFrame({"profit": [1.0]}))


def test_turnover_and_exposure_on_a_real_momentum_book(stock_returns):
    full = stock_returns.dropna()
    signal = full.rolling(60).mean()
    ranks = signal.rank(axis=1)
    weights = ((ranks > 15).astype(float) / 5).where(signal.notna(), 0.0)  # top 5, equal weight
    ex = m.exposure(weights)
    assert ex["avg_gross_exposure"] == pytest.approx(weights.abs().sum(axis=1).mean())
    per = m.turnover(weights, annualise=False)
    # independent: half the L1 distance between consecutive rows, the first from cash
    manual = 0.5 * weights.diff().abs().sum(axis=1)
    manual.iloc[0] = 0.5 * weights.iloc[0].abs().sum()
    np.testing.assert_allclose(per.to_numpy(), manual.to_numpy(), rtol=1e-12)


def test_cost_drag_equals_the_gap_between_gross_and_net_log_growth_for_small_costs(spx):
    equity_gross = 1e6 * (1 + spx).cumprod()
    cost_rate = pd.Series(0.0002, index=spx.index)  # 2 bp of equity a day
    net = (1 + spx) * (1 - cost_rate) - 1
    equity_net = 1e6 * (1 + net).cumprod()
    costs = (equity_net.shift(1).fillna(1e6) * (1 + spx) * cost_rate)
    drag = m.cost_drag(costs, equity_net, initial=1e6)
    # each period's cost is 2 bp of the pre-cost value, i.e. 2 bp * (1 + r) of the previous equity
    assert drag == pytest.approx((0.0002 * (1 + spx)).mean() * 252, rel=1e-9)
    assert drag == pytest.approx(m.annual_return(spx) - m.annual_return(net), rel=0.1)


def test_summary_with_benchmark_trades_and_weights_has_one_row(spx):
    trades = pd.DataFrame({"pnl": [1.0, -2.0, 3.0], "entry_ts": pd.to_datetime(["2020-01-01"] * 3),
                           "exit_ts": pd.to_datetime(["2020-01-03"] * 3)})
    weights = pd.DataFrame({"SPX": 1.0}, index=spx.index)
    table = m.summary(spx, benchmark=spx, trades=trades, weights=weights)
    assert len(table) == 1
    assert table.iloc[0]["beta"] == pytest.approx(1.0)
    assert table.iloc[0]["trades"] == 3 and table.iloc[0]["time_in_market"] == 1.0
    with pytest.raises(UsageError, match="Series"):
        m.summary(pd.DataFrame({"a": spx, "b": spx}), trades=trades)


def test_a_text_column_is_a_data_error_naming_row_and_column(shared_data):
    from quantlab.core import DataError
    prices = pd.read_csv(shared_data / "pypfopt" / "spy_prices.csv")  # the date stays a text column
    with pytest.raises(DataError, match="row 1, column 'date'"):
        m.summary(prices)


def test_a_daily_risk_free_series_from_real_treasury_yields_matches_empyrical(shared_data, spx, paired):
    curves = pd.read_csv(shared_data / "zipline" / "treasury_curves.csv", index_col=0)
    curves.index = pd.to_datetime(curves.index, utc=True).tz_localize(None).normalize()
    stocks, spy = paired
    rf_annual = curves["3month"].reindex(spy.index, method="ffill")
    rf = (1 + rf_annual) ** (1 / 252) - 1  # per-period rate, as quantlab and empyrical expect
    aapl = stocks["AAPL"]
    assert m.sharpe_ratio(aapl, risk_free=rf) == pytest.approx(empyrical.sharpe_ratio(aapl, risk_free=rf), rel=TOL)
    assert m.sharpe_ratio(aapl, risk_free=rf) < m.sharpe_ratio(aapl)  # the 1990s paid ~5% on cash
    # quantlab regresses excess on excess returns (CAPM); empyrical's beta ignores risk_free, which only
    # matters when the rate varies: check the documented relation against statsmodels OLS instead
    import statsmodels.api as sm
    alpha, beta = m.alpha_beta(aapl, spy, risk_free=rf)
    fit = sm.OLS((aapl - rf).to_numpy(), sm.add_constant((spy - rf).to_numpy())).fit()
    assert beta == pytest.approx(fit.params[1], rel=1e-9)
    assert alpha == pytest.approx((1 + fit.params[0]) ** 252 - 1, rel=1e-9)
    assert beta != pytest.approx(empyrical.beta(aapl, spy, risk_free=rf), rel=1e-6)
