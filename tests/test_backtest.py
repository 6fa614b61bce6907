"""run_backtest against backtrader on real OHLCV, round trips, costs by kind, run card, audit trail on Parquet."""
import collections
import collections.abc
import json
import math

import numpy as np
import pandas as pd
import pytest

from quantlab.backtest.driver import BacktestResult, data_fingerprint, round_trips, run_backtest
from quantlab.trading.brokers.sim import BasisPoints, FixedSpread, PerShare, SimBroker
from quantlab.trading.orders import bracket
from quantlab.trading.strategy import Strategy

collections.Iterable = collections.abc.Iterable   # backtrader 1.9.78 on Python 3.10+ (see TOOLCHAIN.md)
bt = pytest.importorskip("backtrader")


@pytest.fixture(scope="module")
def yhoo(shared_data):
    df = pd.read_csv(shared_data / "backtrader/yhoo-1996-2015.txt", parse_dates=["Date"], index_col="Date")
    return df[["Open", "High", "Low", "Close", "Volume"]].astype(float)


def panels(df, symbol="YHOO"):
    idx = pd.DatetimeIndex(df.index).tz_localize("UTC") + pd.Timedelta(hours=21)
    return {c.lower(): pd.DataFrame({symbol: df[c].to_numpy()}, index=idx) for c in df.columns}


class CrossOrders(Strategy):
    "Buy `size` shares when SMA(10) crosses above SMA(50), sell them when it crosses below (explicit orders)."
    defaults = {"size": 100}
    def features(self, data):
        c = data["close"]; f, s = c.rolling(10).mean(), c.rolling(50).mean()
        up, down = (f > s) & (f.shift() <= s.shift()), (f < s) & (f.shift() >= s.shift())
        return {"cross": up.astype(float) - down.astype(float)}
    def events(self, data, features): return features["cross"] != 0
    def on_bar(self, ctx):
        x, held = ctx.value("cross"), ctx.position()
        if x > 0 and held == 0: ctx.buy(ctx.symbols[0], self.params["size"], reason="cross_up")
        elif x < 0 and held > 0: ctx.sell(ctx.symbols[0], held, reason="cross_down")


def backtrader_equity(df, commission=0.0):
    class BtCross(bt.Strategy):
        def __init__(self):
            self.x = bt.ind.CrossOver(bt.ind.SMA(self.data.close, period=10), bt.ind.SMA(self.data.close, period=50))
            self.values = []
        def next(self):
            if not self.position and self.x[0] > 0: self.buy(size=100)
            elif self.position and self.x[0] < 0: self.close()
            self.values.append((self.data.datetime.date(0), self.broker.getvalue()))
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(100_000.0)
    if commission: cerebro.broker.setcommission(commission=commission)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(BtCross)
    strat = cerebro.run()[0]
    return pd.Series(dict(strat.values))


@pytest.mark.parametrize("bps", [0.0, 10.0])
def test_equity_matches_backtrader_bar_for_bar_on_yhoo(yhoo, bps):
    ref = backtrader_equity(yhoo, commission=bps * 1e-4)
    res = run_backtest(CrossOrders(), panels(yhoo), cash=100_000.0,
                       broker=SimBroker(commission=BasisPoints(bps) if bps else 0))
    ours = res.equity.copy(); ours.index = ours.index.date
    ours = ours.loc[ref.index]
    assert len(ref) > 4000 and len(res.fills) > 100
    np.testing.assert_allclose(ours.to_numpy(), ref.to_numpy(), rtol=1e-9)


def test_round_trips_add_up_to_realised_pnl_and_costs(yhoo):
    res = run_backtest(CrossOrders(), panels(yhoo), cash=100_000.0, broker=SimBroker(commission=PerShare.ib_fixed(), spread=FixedSpread(5)))
    t = res.trades
    assert len(t) == (res.fills.quantity < 0).sum() and (t.direction == "long").all()
    assert math.isclose(t.pnl.sum(), res.run.portfolio.realised, rel_tol=1e-9)
    closed_comm = res.fills.commission.sum() - (res.fills.commission.iloc[-1] if res.positions.iloc[-1, 0] else 0.0)
    assert math.isclose(t.commission.sum(), closed_comm, rel_tol=1e-9)
    assert math.isclose(res.costs["commission"], res.fills.commission.sum(), rel_tol=1e-12)
    assert math.isclose(res.costs["spread"], res.fills.spread.sum(), rel_tol=1e-12) and res.costs["spread"] > 0
    assert (t.exit_bar > t.entry_bar).all()


def test_round_trips_fifo_with_a_flip_by_hand():
    fills = pd.DataFrame({"symbol": "A", "ts": pd.date_range("2024-01-02", periods=3, tz="UTC"), "bar": [0, 1, 2],
                          "quantity": [10.0, -15.0, 5.0], "price": [10.0, 12.0, 11.0], "commission": [1.0, 1.5, 0.5]})
    t = round_trips(fills)
    assert t[["direction", "quantity", "pnl"]].values.tolist() == [["long", 10.0, 20.0], ["short", 5.0, 5.0]]
    assert math.isclose(t.commission.sum(), 3.0)


def test_run_card_and_result_parts(yhoo):
    res = run_backtest(CrossOrders(size=50), panels(yhoo), cash=50_000.0)
    card = res.run_card
    assert card["strategy"] == "CrossOrders" and card["params"] == {"size": 50} and card["cash"] == 50_000.0
    assert card["bars"] == len(yhoo) and 0 < card["event_bars"] < len(yhoo) / 5
    assert len(card["data_fingerprint"]) == 16 and card["package_versions"]["numpy"]
    # hashed on a worker thread during the run: the same value as hashing the run's data afterwards
    assert card["data_fingerprint"] == data_fingerprint(res.run.data) == data_fingerprint(panels(yhoo))
    from quantlab.core import git_sha
    import quantlab, pathlib
    assert "ib_fixed" in card["broker"] and card["git_sha"] == git_sha(pathlib.Path(quantlab.__file__).resolve().parent)
    assert isinstance(res, BacktestResult) and res.returns.index.equals(res.equity.index)
    assert set(res.orders.status) == {"filled"} and res.summary()["trades"] == len(res.trades)


def test_audit_trail_on_parquet_explains_every_trade(yhoo, tmp_path):
    class BracketOnCross(CrossOrders):
        def on_bar(self, ctx):
            if ctx.value("cross") > 0 and ctx.position() == 0 and not ctx.open_orders():
                px = ctx.price()
                ctx.bracket(ctx.symbols[0], 100, take_profit=round(px * 1.08, 2), stop_loss=round(px * 0.95, 2))
    res = run_backtest(BracketOnCross(), panels(yhoo), cash=100_000.0)
    path = res.save(tmp_path / "run")
    assert (path / "audit" / "fills.parquet").exists() and json.loads((path / "run_card.json").read_text())["strategy"] == "BracketOnCross"
    q = res.audit.query("""select c.reason, count(*) as n from closes c group by c.reason order by c.reason""")
    assert set(q.reason) == {"take_profit", "stop_loss"}
    # every fill traces back to an order, a risk decision and a decision with the strategy's inputs
    full = res.audit.query("""select f.fill_id, f.price, f.assumptions, o.approved, o.risk_reason, d.inputs, d.positions_before
                              from fills f join orders o using (client_id) left join decisions d using (decision_id)
                              where o.parent_id is null""")
    assert len(full) == (res.fills.client_id.isin(res.orders.client_id[res.orders.parent_id.isna()])).sum()
    assert full.approved.all() and full.inputs.notna().all()
    assert all(json.loads(s)["cross"]["YHOO"] == 1.0 for s in full.inputs)
    ev = res.audit.query("select status, count(*) as n from order_events group by status")
    assert {"submitted", "filled", "cancelled"} <= set(ev.status)


def fifo_reference(fills, multipliers=None):
    "Plain-Python FIFO matching, statement by statement: the reference for the compiled `round_trips`."
    rows, lots = [], {}
    for f in fills[["symbol", "ts", "bar", "quantity", "price", "commission"]].itertuples(index=False):
        m = (multipliers or {}).get(f.symbol, 1.0)
        book = lots.setdefault(f.symbol, collections.deque())
        q, per_unit = f.quantity, f.commission / abs(f.quantity)
        while q and book and (book[0][0] > 0) != (q > 0):
            lq, lp, lts, lbar, lcomm = book[0]
            take, sign = min(abs(q), abs(lq)), (1.0 if lq > 0 else -1.0)
            pnl, comm = take * (f.price - lp) * sign * m, take * (lcomm + per_unit)
            rows.append((f.symbol, "long" if sign > 0 else "short", take, lts, f.ts, lp, f.price, lbar, f.bar,
                         f.bar - lbar, pnl, comm, pnl - comm, (pnl - comm) / (take * lp * m)))
            if take == abs(lq): book.popleft()
            else: book[0] = (lq - sign * take, lp, lts, lbar, lcomm)
            q += sign * take
        if q: book.append((q, f.price, f.ts, f.bar, per_unit))
    return pd.DataFrame(rows, columns=list(round_trips(fills.iloc[:0]).columns))


def test_compiled_round_trips_equal_the_python_reference_on_a_long_short_three_stock_run(bt_stock_fields):
    from quantlab.strategies import event_backtest
    # long/short SMA flips on three real stocks, IB-style per-share commissions: many flips and interleaved symbols
    res = event_backtest("sma_cross", bt_stock_fields, {"fast": 10, "slow": 30, "long": 1.0, "short": -1.0}, commission_bps=3.0)
    fills = res.fills
    assert fills.symbol.nunique() == 3 and (fills.quantity < 0).sum() > 100
    ref = fifo_reference(fills)
    assert len(ref) > 200 and set(ref.direction) == {"long", "short"}
    pd.testing.assert_frame_equal(res.trades, ref)
    # and with a contract multiplier on one symbol
    pd.testing.assert_frame_equal(round_trips(fills, {"NVDA": 50.0}), fifo_reference(fills, {"NVDA": 50.0}))


def test_summary_gives_the_same_numbers_as_metrics_summary(spx_fields):
    "One set of numbers everywhere: BacktestResult.summary, metrics.summary and the CLI all start at the first return."
    from quantlab.research import metrics
    from quantlab.strategies import get_strategy
    res = run_backtest(get_strategy("sma_cross", fast=20, slow=100), spx_fields)
    s, m = res.summary(), metrics.summary(res.returns.iloc[1:]).iloc[0]
    assert (s["cagr"], s["volatility"], s["sharpe"], s["max_drawdown"]) == (m["annual_return"], m["annual_volatility"], m["sharpe"], m["max_drawdown"])
