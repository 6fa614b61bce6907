"""quantlab.backtest.vector against independent references on real data: a plain-Python bar loop written here (the
accounting spelled out once more, slowly), TA-Lib for the moving averages, and a plain-Python stop machine.
Engine-to-engine agreement is in tests/test_concordance.py."""
import math

import numpy as np
import pandas as pd
import pytest
import talib

from quantlab.core import UsageError
from quantlab.backtest.vector import (param_grid, simulate, sma_cross_sweep, sma_cross_weights,
                             sma_grid, stop_exits, target_changes)


@pytest.fixture(scope="module")
def spx():
    from arch.data import sp500
    df = sp500.load()
    df.index = df.index.tz_localize("UTC")
    return df[["Close"]].set_axis(["SPX"], axis=1), df[["Open"]].set_axis(["SPX"], axis=1)


@pytest.fixture(scope="module")
def stocks(shared_data):
    px = pd.read_csv(shared_data / "pypfopt" / "stock_prices.csv", index_col=0, parse_dates=True)
    px.index = pd.DatetimeIndex(px.index).tz_localize("UTC")
    return px.loc["2008":"2012", ["AAPL", "AMZN", "GE", "XOM", "JPM", "PFE"]].astype(float)


def _reference(weights, close, fill, cash, bps, lot):
    "Slow, obvious accounting: one row at a time, dicts keyed by symbol, no numba."
    syms, C, F = list(close.columns), close.to_numpy().tolist(), fill.to_numpy().tolist()
    pos, pending, equity, mark = {}, {}, [], {}
    for t in range(len(C)):
        for s, q in pending.items():
            f = F[t][syms.index(s)]
            if not (f > 0): continue
            cost = abs(q * f) * bps / 1e4
            cash -= q * f + cost
            pos[s] = pos.get(s, 0.0) + q
        pending = {}
        for j, s in enumerate(syms):
            if not math.isnan(C[t][j]): mark[s] = C[t][j]
        eq = cash + sum(q * mark[s] for s, q in pos.items() if q)
        equity.append(eq)
        for j, s in enumerate(syms):
            w = weights[t, j]
            if math.isnan(w) or s not in mark: continue
            target = w * eq / mark[s]
            if lot: target = math.trunc(target / lot) * lot
            d = target - pos.get(s, 0.0)
            if lot: d = math.trunc(d / lot) * lot
            if d: pending[s] = d
    return np.array(equity)


@pytest.mark.parametrize("lot", [1.0, 0.0])
def test_simulate_matches_a_plain_python_loop_on_six_stocks(stocks, lot):
    rng = np.random.default_rng(7)
    w = np.full(stocks.shape, np.nan)
    rows = rng.choice(len(stocks), 40, replace=False)
    w[rows] = rng.dirichlet(np.ones(stocks.shape[1]), 40) * rng.choice([0.5, 1.0, 1.5], (40, 1))
    w[rows[:5]] = -0.2  # some short books too
    res = simulate(w, stocks, None, cash=250_000, commission_bps=7, lot_size=lot)
    ref = _reference(w, stocks, stocks, 250_000, 7, lot)
    np.testing.assert_allclose(res.equity.iloc[:, 0].to_numpy(), ref, rtol=1e-10)


def test_simulate_next_open_fill_on_sp500_matches_plain_loop(spx):
    close, open_ = spx
    w = np.full(close.shape, np.nan)
    w[300::250, 0] = 0.9; w[420::250, 0] = 0.0
    res = simulate(w, close, open_, commission_bps=3)
    np.testing.assert_allclose(res.equity.iloc[:, 0].to_numpy(), _reference(w, close, open_, 1e6, 3, 1.0), rtol=1e-12)


def test_missing_fill_price_lapses_the_order(spx):
    close, open_ = (x.iloc[:10] for x in spx)
    holed = open_.copy(); holed.iloc[3, 0] = np.nan
    w = np.full((10, 1), np.nan); w[2, 0] = 1.0
    r = simulate(w, close, holed, record_positions=True)
    assert r.positions[:, 0, 0].tolist() == [0.0] * 10 and int(r.trades[0]) == 0


def test_sma_grid_is_talib(spx):
    close = spx[0].iloc[:1500]
    cube = sma_grid(close, [5, 30, 200])
    for k, w in enumerate([5, 30, 200]):
        np.testing.assert_array_equal(cube[:, 0, k], talib.SMA(close["SPX"].to_numpy(), timeperiod=w))


def test_sma_cross_weights_broadcast_matches_per_pair(spx):
    close = spx[0]
    grid = param_grid(fast=[5, 10, 20], slow=[50, 100], where=lambda g: g.fast < g.slow)
    cube = sma_cross_weights(close, grid.fast, grid.slow)
    assert cube.shape == (len(close), 1, 6)
    for k, (f, s) in enumerate(grid.itertuples(index=False)):
        a, b = talib.SMA(close["SPX"].to_numpy(), f), talib.SMA(close["SPX"].to_numpy(), s)
        state = np.where(np.isnan(a) | np.isnan(b), 0.0, (a > b).astype(float))
        prev = np.r_[0.0, state[:-1]]  # flat before the first bar
        expect = np.where(state == prev, np.nan, state)
        np.testing.assert_array_equal(cube[:, 0, k], expect)


def test_sweep_columns_equal_single_runs(spx):
    close, open_ = spx
    grid = param_grid(fast=[10, 30], slow=[60, 120])
    sw = sma_cross_sweep(close, open_, grid, commission_bps=5)
    for k, (f, s) in enumerate(grid.itertuples(index=False)):
        one = simulate(sma_cross_weights(close, f, s)[:, :, 0], close, open_, commission_bps=5)
        np.testing.assert_array_equal(sw.equity.iloc[:, k].to_numpy(), one.equity.iloc[:, 0].to_numpy())
    s = sw.summary()
    assert list(s[["fast", "slow"]].itertuples(index=False, name=None)) == list(grid.itertuples(index=False, name=None))
    assert s["fills"].gt(10).all() and s["final_value"].nunique() == 4


def _stops_reference(entry, exit_, fill, close, sl, tp, tr):
    "The stop rules, one bar at a time in plain Python."
    T, out, state, ref, peak = len(close), np.full(len(close), np.nan), 0, 0.0, 0.0
    for t in range(T):
        if state == 1:
            if fill[t] > 0: state, ref, peak = 2, fill[t], fill[t]
            else: state = 0
        if state == 2:
            peak = max(peak, close[t])
            hit = close[t] <= ref * (1 - sl) or close[t] >= ref * (1 + tp) or close[t] <= peak * (1 - tr) or exit_[t]
            if hit and t < T - 1: out[t], state = 0.0, 0
        elif state == 0 and t < T - 1 and entry[t]:
            out[t], state = 1.0, 1
    return out


def test_stop_exits_match_plain_python_on_sp500(spx):
    close, open_ = spx
    r = talib.RSI(close["SPX"].to_numpy(), 3)
    entry, exit_ = np.nan_to_num(r) < 15, np.nan_to_num(r) > 75
    sls, tps, trs = [0.02, 0.05, np.inf], [np.inf, 0.03, 0.06], [np.inf, np.inf, 0.04]
    w, counts = stop_exits(entry[:, None], close, open_, exit_[:, None], sls, tps, trs)
    for k in range(3):
        ref = _stops_reference(entry, exit_, open_["SPX"].to_numpy(), close["SPX"].to_numpy(), sls[k], tps[k], trs[k])
        np.testing.assert_array_equal(w[:, 0, k], ref)
    assert counts.loc[0, "stop_loss"] > 0 and counts.loc[1, "take_profit"] > 0 and counts.loc[2, "trailing"] > 0
    assert counts.loc[2, "stop_loss"] == 0 and counts.loc[0, "take_profit"] == 0


def test_target_changes_is_per_asset_on_change():
    np.testing.assert_array_equal(target_changes(np.array([0.0, 0.0, 1.0, 1.0, 0.0])), [np.nan, np.nan, 1.0, np.nan, 0.0])
    b = target_changes(np.array([[1.0, 0.0], [np.nan, np.nan], [1.0, 0.3], [0.5, np.nan], [0.5, 0.3]]))
    np.testing.assert_array_equal(b, [[1.0, np.nan], [np.nan, np.nan], [np.nan, 0.3], [0.5, np.nan], [np.nan, np.nan]])


def test_bad_inputs_are_refused(spx):
    close, open_ = spx
    with pytest.raises(UsageError, match="shape"):
        simulate(np.zeros((5, 1)), close, open_)
    with pytest.raises(UsageError, match="commission_bps"):
        simulate(np.zeros(close.shape), close, open_, commission_bps=-1)
    with pytest.raises(UsageError, match="same length"):
        sma_cross_weights(close, [5, 10], [50])
    with pytest.raises(UsageError, match="params"):
        simulate(np.zeros(close.shape + (2,)), close, open_, params=pd.DataFrame({"a": [1]}))


def test_summary_sharpe_and_best_agree_with_empyrical(spx):
    import empyrical
    close, open_ = spx
    sw = sma_cross_sweep(close, open_, param_grid(fast=[5, 20], slow=[50, 200]), commission_bps=5)
    s = sw.summary()
    rets = sw.equity.pct_change().iloc[1:]
    ref = [empyrical.sharpe_ratio(rets[c]) for c in rets.columns]
    np.testing.assert_allclose(s["sharpe"].to_numpy(), ref, rtol=1e-9)
    best = sw.best("sharpe")
    assert (best["fast"], best["slow"]) == tuple(s.loc[int(np.argmax(ref)), ["fast", "slow"]])
