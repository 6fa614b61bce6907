"""The example strategies: registry, parameters, no look-ahead, and their signals against references computed
here from TA-Lib and plain pandas on real data."""
import numpy as np
import pandas as pd
import pytest
from pathlib import Path
import talib

from quantlab.core import UsageError
from quantlab.strategies import (STRATEGIES, RsiReversion, SmaCross, XsMomentum, default_params, event_backtest, get_strategy, sweep,
                                 vector_backtest)
from quantlab.trading.strategy import check_no_lookahead
from quantlab.backtest.vector import param_grid


@pytest.fixture(scope="module")
def spx(spx_fields):
    return spx_fields


@pytest.fixture(scope="module")
def prices(shared_data):
    px = pd.read_csv(shared_data / "pypfopt" / "stock_prices.csv", index_col=0, parse_dates=True)
    px.index = pd.DatetimeIndex(px.index).tz_localize("UTC")
    return px.loc["2003":"2010"].astype(float)


def test_registry_names_defaults_and_errors():
    assert set(STRATEGIES) == {"sma_cross", "rsi_reversion", "xs_momentum", "portfolio"}
    for name in STRATEGIES:
        d = default_params(name)
        assert d == get_strategy(name).params and d is not get_strategy(name).params
    with pytest.raises(UsageError, match="unknown strategy"):
        get_strategy("buy_the_dip")
    with pytest.raises(UsageError, match="unknown parameters"):
        get_strategy("sma_cross", fastest=3)
    with pytest.raises(UsageError, match="unknown parameters"):
        sweep("sma_cross", {"close": pd.DataFrame()}, pd.DataFrame({"speed": [1]}))


@pytest.mark.parametrize("name", ["sma_cross", "rsi_reversion"])
def test_features_do_not_look_ahead_on_sp500(spx, name):
    check_no_lookahead(get_strategy(name), {k: v.iloc[:1500] for k, v in spx.items()}, cuts=4)


def test_xs_momentum_features_do_not_look_ahead(prices):
    check_no_lookahead(XsMomentum(top=3), {"close": prices}, cuts=3)


def test_sma_cross_target_is_talib_crossover(spx):
    c = spx["close"]["SPX"].to_numpy()
    tgt = SmaCross(fast=15, slow=80, long=0.5).features(spx)["target"]["SPX"].to_numpy()
    f, s = talib.SMA(c, 15), talib.SMA(c, 80)
    np.testing.assert_array_equal(tgt, np.where(np.isnan(s), 0.0, np.where(f > s, 0.5, 0.0)))


def test_rsi_reversion_entries_are_talib_rsi(spx):
    feats = RsiReversion(window=5, lower=25, upper=75).features(spx)
    r = talib.RSI(spx["close"]["SPX"].to_numpy(), 5)
    np.testing.assert_array_equal(feats["entry"]["SPX"].to_numpy(), (r < 25).astype(float))
    np.testing.assert_array_equal(feats["exit"]["SPX"].to_numpy(), (r > 75).astype(float))


def test_xs_momentum_picks_the_top_by_12_1_return_each_month_start(prices):
    st = XsMomentum(top=3, lookback=252, skip=21, vol_window=63, target_vol=0.15)
    t = st.features({"close": prices})["target"]
    months = prices.index.tz_convert(None).to_period("M")
    firsts = prices.index[np.r_[False, months[1:] != months[:-1]]]  # first bar of each month but the first
    assert t.dropna(how="all").index.equals(firsts)
    for ts in firsts[-24:]:
        i = prices.index.get_loc(ts)
        mom = prices.iloc[i - 21] / prices.iloc[i - 252] - 1
        vol = prices.iloc[i - 63:i + 1].pct_change().iloc[1:].std() * np.sqrt(252)
        ok = mom.notna() & vol.notna()
        top = mom[ok].sort_values(ascending=False).index[:3]
        expect = pd.Series(0.0, index=prices.columns)
        expect[top] = np.minimum(0.15 / vol[top], 1.0) / 3
        np.testing.assert_allclose(t.loc[ts].to_numpy(), expect.to_numpy(), rtol=1e-9)


def test_rsi_sweep_equals_single_runs(spx):
    grid = param_grid(window=[2, 5], stop_loss=[0.02, None], lower=[15.0])
    sw = sweep("rsi_reversion", spx, grid, commission_bps=5)
    for k, row in enumerate(grid.to_dict("records")):
        row = {kk: (None if isinstance(v, float) and np.isnan(v) else v) for kk, v in row.items()}
        one = vector_backtest("rsi_reversion", spx, row, commission_bps=5)
        np.testing.assert_allclose(sw.equity.iloc[:, k].to_numpy(), one.equity.iloc[:, 0].to_numpy(), rtol=1e-12)
    assert sw.final_value.nunique() == 4
    chunked = sweep("rsi_reversion", spx, grid, chunk_size=3, commission_bps=5)  # two passes, stitched
    np.testing.assert_array_equal(chunked.equity.to_numpy(), sw.equity.to_numpy())
    assert chunked.params.index.tolist() == grid.index.tolist() and chunked.trades.tolist() == sw.trades.tolist()


def test_xs_momentum_sweep_runs_each_set(prices):
    grid = param_grid(top=[2, 4], target_vol=[0.1])
    sw = sweep("xs_momentum", {"close": prices}, grid, commission_bps=10)
    one = vector_backtest("xs_momentum", {"close": prices}, {"top": 4, "target_vol": 0.1}, commission_bps=10)
    np.testing.assert_allclose(sw.equity.iloc[:, 1].to_numpy(), one.equity.iloc[:, 0].to_numpy(), rtol=1e-12)


def test_sma_cross_entering_on_crossings_agrees_in_the_vector_and_event_engines(spx):
    "entry='cross' (#16): the vector engine's weights are the event engine's targets, so both trade the same fills."
    from quantlab.strategies import event_backtest
    params = {"fast": 10, "slow": 100, "entry": "cross"}
    vec, ev = vector_backtest("sma_cross", spx, params, commission_bps=5), event_backtest("sma_cross", spx, params, commission_bps=5)
    assert vec.trades == len(ev.fills) > 20
    np.testing.assert_allclose(vec.equity.iloc[:, 0].to_numpy(), ev.equity.to_numpy(), rtol=1e-9)
    c = spx["close"]["SPX"].to_numpy()
    above = talib.SMA(c, 10) > talib.SMA(c, 100)
    first_cross = int(np.flatnonzero(above[101:] != above[100:-1])[0]) + 101
    assert ev.fills["bar"].iloc[0] > first_cross  # nothing traded before the averages first crossed


# --- the walk-forward constructed portfolio (#16) ---

@pytest.fixture(scope="module")
def panel(prices):
    return {"close": prices.loc["2006":"2010"]}  # 2008 inside; GOOG from 2004, the late listings (FB, BABA, GM...) absent or NaN


@pytest.mark.parametrize("method", ["equal_weight", "inverse_volatility", "min_variance", "max_sharpe", "mean_variance", "risk_parity", "hrp"])
def test_each_method_backtests_walk_forward_with_costs(panel, method):
    params = {"method": method, "lookback": 126, "max_weight": 0.25 if method in ("min_variance", "max_sharpe", "mean_variance") else 1.0}
    ev = event_backtest("portfolio", panel, params, commission_bps=5, spread_bps=2)
    strat = get_strategy("portfolio", **params)
    books = strat.schedule(panel["close"])
    first = next(iter(books))
    assert panel["close"].index.get_loc(first) >= 126                    # nothing before a full window
    assert ev.fills["ts"].min() > first                                  # traded after the decision, at the next bar
    assert len(books) >= 50 and ev.costs.sum() > 0 and np.isfinite(ev.equity).all()
    for b in books.values():
        assert abs(b.weights.sum() - 1) < 1e-6 or (method == "max_sharpe" and b.weights.abs().sum() == 0)
        assert (b.weights[b.weights.index.difference(b.cov.index)] == 0).all()  # no weight without a full window
    held = (ev.positions.iloc[-1] * panel["close"].iloc[-1]).fillna(0) / ev.equity.iloc[-1]
    last = list(books.values())[-1].weights
    np.testing.assert_allclose(held.reindex(last.index).to_numpy(), last.to_numpy(), atol=0.08)  # prices drift within the month


def test_portfolio_event_and_vector_engines_agree(panel):
    params = {"method": "hrp", "lookback": 126}
    ev = event_backtest("portfolio", panel, params, commission_bps=10)
    vr = vector_backtest("portfolio", panel, params, commission_bps=10)
    np.testing.assert_allclose(vr.equity.iloc[:, 0].to_numpy(), ev.equity.to_numpy(), rtol=1e-9)
    assert len(ev.fills) == int(vr.trades[0])


def test_portfolio_tear_sheet_renders_through_the_cli(tmp_path, shared_data):
    "The 20-stock closes ingested with the wide_close preset, and a minimum-variance walk-forward's tear sheet."
    import json, subprocess, sys
    store, out = tmp_path / "store", tmp_path / "reports"
    run = lambda *a: subprocess.run([sys.executable, "-m", "quantlab.cli", "--data-dir", str(store), *a], capture_output=True, text=True, timeout=600)
    p = run("data", "ingest", str(shared_data / "pypfopt" / "stock_prices.csv"), "--format", "wide_close")
    assert p.returncode == 0 and "106,931 bars of 20 symbols" in p.stdout, p.stderr[-2000:]
    symbols = ["AAPL", "AMZN", "GE", "AMD", "WMT", "BAC", "T", "XOM", "PFE", "JPM", "SBUX", "BBY"]
    p = run("report", "backtest", "-p", "strategy", "portfolio", "-p", "params", json.dumps({"method": "min_variance", "max_weight": 0.2}),
            "-p", "symbols", json.dumps(symbols), "-p", "start", "2012-01-01", "--output-dir", str(out), "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    html = Path(p.stdout.strip().splitlines()[-1])
    metrics = json.loads((html.parent / "metrics.json").read_text())
    assert metrics["strategy"] == "portfolio" and metrics["params"]["method"] == "min_variance" and metrics["orders"] > 50
    assert metrics["total_costs"] > 0 and sorted(metrics["symbols"]) == sorted(symbols)
    assert "Backtest tear sheet" in html.read_text()
    # every other method's tear sheet, from the same store (two report processes at a time)
    from quantlab.reports.render import run_reports
    others = ["max_sharpe", "mean_variance", "risk_parity", "hrp", "equal_weight", "inverse_volatility"]
    sets = [{"strategy": "portfolio", "params": {"method": m, "max_weight": 0.3 if m in ("max_sharpe", "mean_variance") else 1.0},
             "symbols": symbols, "data_dir": str(store), "start": "2012-01-01"} for m in others]
    done = run_reports("backtest", sets, output_dir=out, executor="local:2")
    assert [r.ok for r in done] == [True] * len(others), [str(r.error) for r in done if not r.ok]
    for m, r in zip(others, done):
        got = json.loads((Path(r.value.path) / "metrics.json").read_text())
        assert got["params"]["method"] == m and got["orders"] > 50 and np.isfinite(got["sharpe"])
