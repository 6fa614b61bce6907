"""The promotion path's heart: the bar-by-bar driver (what a live runner runs) and the backtest driver make the same
decisions, orders and fills, and value the run the same, on real data. And the features a strategy computes live, on
its trailing warm-up window, equal the batch ones bit for bit."""
import numpy as np
import pandas as pd
import pytest

from quantlab.backtest.driver import run_backtest, run_events
from quantlab.strategies import get_strategy
from quantlab.trading.brokers.sim import BasisPoints, SimBroker
from quantlab.trading.engine import Engine
from quantlab.trading.feed import HistoricalFeed, drive

PARAMS = {"sma_cross": {"fast": 20, "slow": 100}, "rsi_reversion": {"window": 14, "stop_loss": 0.05, "trailing": 0.1},
          "xs_momentum": {"lookback": 126, "skip": 21, "top": 5, "vol_window": 63}}


@pytest.fixture(scope="module")
def spx(spx_fields):
    return spx_fields


@pytest.fixture(scope="module")
def stocks20(pypfopt_closes):
    close = pypfopt_closes.loc["2012":]  # 6 years x 20 stocks (one listed late: leading NaNs)
    return {"close": close}


def _audit_tables(run):
    return {name: run.audit.table(name) for name in ("decisions", "orders", "order_events", "fills", "closes")}


def _ns(x):
    "The same times at one resolution (a feed stamps bars in int ns; stored panels may be microseconds)."
    return x.set_axis(x.index.as_unit("ns").rename(None))


def _assert_same_run(live, batch):
    assert live.index.equals(batch.index)
    live.equity, live.cash, live.positions = _ns(live.equity), _ns(live.cash), _ns(live.positions)
    batch.equity, batch.cash, batch.positions = _ns(batch.equity), _ns(batch.cash), _ns(batch.positions)
    pd.testing.assert_series_equal(live.equity, batch.equity, check_exact=True)
    pd.testing.assert_series_equal(live.cash, batch.cash, check_exact=True)
    pd.testing.assert_frame_equal(live.positions, batch.positions, check_exact=True)
    a, b = _audit_tables(live), _audit_tables(batch)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=f"audit table {name}")
    assert live.broker.positions() == batch.broker.positions() and live.broker.cash() == batch.broker.cash()


def _cases(spx, stocks20):
    return [("sma_cross", spx), ("rsi_reversion", spx), ("sma_cross", stocks20), ("xs_momentum", stocks20)]


@pytest.mark.parametrize("case", range(4), ids=["sma_cross-spx", "rsi_reversion-spx", "sma_cross-20", "xs_momentum-20"])
def test_bar_by_bar_driver_makes_the_backtests_decisions_orders_and_fills(spx, stocks20, case):
    name, data = _cases(spx, stocks20)[case]
    broker = lambda: SimBroker(commission=BasisPoints(5))
    batch = run_events(get_strategy(name, **PARAMS[name]), data, broker=broker())
    live = drive(Engine(get_strategy(name, **PARAMS[name]), list(data["close"].columns), broker=broker()), HistoricalFeed(data))
    assert len(batch.audit.table("fills")) > 10
    _assert_same_run(live, batch)
    assert live.events == len(live.equity) >= batch.events  # live steps every bar; the backtest only where something happens


def test_parity_holds_when_trading_starts_after_a_warm_up(spx):
    st = lambda: get_strategy("sma_cross", fast=20, slow=200)
    batch = run_events(st(), spx, start="2009-07-01")
    live = drive(Engine(st(), ["SPX"]), HistoricalFeed(spx), start="2009-07-01")
    _assert_same_run(live, batch)
    assert batch.equity.index[0] >= pd.Timestamp("2009-07-01", tz="UTC")


def test_run_backtest_start_keeps_the_earlier_bars_as_warm_up(spx):
    # SMA(20/200) from mid-2009: the averages exist at once because the bars before `start` are history
    res = run_backtest(get_strategy("sma_cross", fast=20, slow=200), spx, start="2009-07-01")
    assert res.equity.index[0] == spx["close"].index[spx["close"].index.searchsorted(pd.Timestamp("2009-07-01", tz="UTC"))]
    fills = res.fills
    assert len(fills) > 0 and fills["ts"].min() >= pd.Timestamp("2009-07-01", tz="UTC")
    first = res.run.data["close"].index.searchsorted(pd.Timestamp("2009-07-01", tz="UTC"))
    slow = res.run.features["target"]
    assert first >= 200 and len(slow) == len(spx["close"])  # the features were computed on the whole history, warm-up included
    cut = run_backtest(get_strategy("sma_cross", fast=20, slow=200), {k: v.loc["2009-07-01":] for k, v in spx.items()})
    assert fills["ts"].min() < pd.Timestamp("2009-08-01", tz="UTC")  # long at the start: the position is taken at once
    assert cut.fills["ts"].min() > fills["ts"].min()  # the old way, history cut off: no average for 200 bars


@pytest.mark.parametrize("name", ["sma_cross", "rsi_reversion", "xs_momentum"])
def test_incremental_features_and_events_equal_the_batch_ones_bit_for_bit(spx, stocks20, name):
    data = stocks20 if name == "xs_momentum" else spx
    data = {k: v.iloc[:1500] for k, v in data.items()}
    st = get_strategy(name, **PARAMS[name])
    batch = Engine(st, list(data["close"].columns))
    batch.load(data)
    live = Engine(get_strategy(name, **PARAMS[name]), list(data["close"].columns))
    feed = HistoricalFeed(data)
    live.open_feed(feed.fields, capacity=8)  # small: the arrays are reallocated along the way
    for bar in feed: live.append(bar)
    n = len(data["close"])
    np.testing.assert_array_equal(live.events[:n], batch.events)
    assert batch.events.sum() > 5
    for feature, values in batch.features.items():
        a, b = live.feature_arrays[feature][:n], values.reindex(columns=live.symbols).to_numpy(dtype=float)
        assert a.tobytes() == b.tobytes() or np.array_equal(a, b, equal_nan=True), f"{name}: feature {feature} differs"
