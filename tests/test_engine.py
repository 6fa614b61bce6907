"""The event loop on real data: event-skipping equals the naive every-bar loop exactly, point-in-time views, reconciliation."""
import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantlab.trading.brokers.sim import (BarLatency, BasisPoints, FixedSlippage, FixedSpread, PerShare, SimBroker, SquareRootImpact,
                              VolatilitySpread, VolumeShare)
from quantlab.core import DataError, UsageError
from quantlab.trading.engine import Engine, panels_from_bars
from quantlab.backtest.driver import run_events
from quantlab.trading.portfolio import VolatilityTarget
from quantlab.trading.risk import RiskLimits
from quantlab.trading.strategy import Strategy, check_no_lookahead, rebalance_schedule


def load_sp500() -> pd.DataFrame:
    "arch.data.sp500.load() without importing arch (slow): the same CSV inside the installed package."
    path = Path(importlib.util.find_spec("arch").submodule_search_locations[0]) / "data" / "sp500" / "sp500.csv.gz"
    return pd.read_csv(path, index_col="Date", parse_dates=True, date_format="%m/%d/%Y")


def ohlcv_panels(frames: dict) -> dict:
    "Wide panels from {symbol: frame with Open, High, Low, Close, Volume}, stamped 21:00 UTC."
    out = {}
    for f in ("Open", "High", "Low", "Close", "Volume"):
        wide = pd.DataFrame({s: df[f] for s, df in frames.items()})
        wide.index = pd.DatetimeIndex(wide.index).tz_localize("UTC") + pd.Timedelta(hours=21)
        out[f.lower()] = wide.astype(float)
    return out


@pytest.fixture(scope="module")
def spx():
    return ohlcv_panels({"SPX": load_sp500()})


@pytest.fixture(scope="module")
def stocks(shared_data):
    frames = {s: pd.read_csv(shared_data / f"backtrader/{s.lower()}-{y}.txt", parse_dates=["Date"], index_col="Date")
              for s, y in (("YHOO", "1996-2015"), ("ORCL", "1995-2014"), ("NVDA", "1999-2014"))}
    return ohlcv_panels(frames)


@pytest.fixture(scope="module")
def closes20(shared_data):
    p = pd.read_csv(shared_data / "pypfopt/stock_prices.csv", parse_dates=["date"], index_col="date").loc["2008":]
    p.index = p.index.tz_localize("UTC") + pd.Timedelta(hours=21)
    return {"close": p}


class LongShortSma(Strategy):
    "Long 90% when SMA fast > slow, short 50% otherwise."
    defaults = {"fast": 10, "slow": 50}

    def features(self, data):
        c = data["close"]
        f, s = c.rolling(self.params["fast"]).mean(), c.rolling(self.params["slow"]).mean()
        return {"signal": np.sign(f - s).where(s.notna()), "vol": np.log(c).diff().rolling(20).std() * np.sqrt(252)}

    def events(self, data, features):
        s = features["signal"]
        return (s.ne(s.shift()) & s.notna())

    def on_bar(self, ctx):
        s = ctx.row("signal")
        return np.where(s > 0, 0.9, np.where(s < 0, -0.5, 0.0))


class VolTargeted(LongShortSma):
    sizer = VolatilityTarget(0.15, max_leverage=1.5)
    def volatility(self, ctx): return dict(zip(ctx.symbols, ctx.row("vol").tolist()))


class Brackets(Strategy):
    "Every 15 bars per symbol: a bracketed limit entry a little below the close; also a stop entry and cancels."
    def features(self, data):
        c = data["close"]
        return {"atr": (data["high"] - data["low"]).rolling(14).mean(), "up": (c > c.rolling(30).mean()).astype(float)}

    def events(self, data, features):
        n = len(data["close"])
        return pd.Series(np.arange(n) % 15 == 0, index=data["close"].index)

    def on_bar(self, ctx):
        if not ctx.is_event: return None   # consistent with events(): the every-bar mode calls on every bar
        for s in ctx.symbols:
            atr, px = ctx.value("atr", s), ctx.price(s)
            if not (atr > 0 and px > 0) or ctx.position(s) != 0 or ctx.open_orders(s): continue
            q = max(1.0, math.floor(50_000 / px))
            if ctx.value("up", s) > 0:
                ctx.bracket(s, q, take_profit=round(px + 2 * atr, 2), stop_loss=round(px - 1.5 * atr, 2),
                            entry_limit=round(px - 0.3 * atr, 2), tif="GTC")
            else:
                oid = ctx.order(s, -q, stop=round(px - 0.5 * atr, 2), tif="DAY", reason="breakdown")
        return None

    def on_fill(self, ctx, fill):
        if fill.quantity < 0 and ctx.position(fill.symbol) < 0:   # a short from the stop entry: exit with a GTC stop
            ctx.order(fill.symbol, -ctx.position(fill.symbol), stop=round(fill.price * 1.05, 2), tif="GTC", reason="short_stop")


def both(strategy_cls, data, **kw):
    fast = run_events(strategy_cls(), data, **kw)
    kw = {k: (v() if callable(v) else v) for k, v in kw.items()}
    slow = run_events(strategy_cls(), data, mode="every_bar", **kw)
    return fast, slow


def costly_broker():
    return SimBroker(commission=PerShare.ib_fixed(), spread=VolatilitySpread(0.3), slippage=SquareRootImpact(0.5))


def test_event_mode_equals_every_bar_mode_on_sp500_long_short_with_costs_and_borrow(spx):
    fast = run_events(LongShortSma(), spx, broker=costly_broker(), borrow_rate=0.03)
    slow = run_events(LongShortSma(), spx, broker=costly_broker(), borrow_rate=0.03, mode="every_bar")
    assert fast.events < len(fast.equity) / 5 and slow.events == len(slow.equity)
    np.testing.assert_array_equal(fast.equity.to_numpy(), slow.equity.to_numpy())
    np.testing.assert_array_equal(fast.positions.to_numpy(), slow.positions.to_numpy())
    assert fast.portfolio.costs == slow.portfolio.costs and fast.portfolio.costs["borrow"] > 0
    assert (fast.positions["SPX"] < 0).any() and (fast.positions["SPX"] > 0).any()


def test_event_mode_equals_every_bar_mode_with_volatility_sizing(spx):
    fast = run_events(VolTargeted(), spx, broker=SimBroker(commission=PerShare.ib_tiered()))
    slow = run_events(VolTargeted(), spx, broker=SimBroker(commission=PerShare.ib_tiered()), mode="every_bar")
    np.testing.assert_array_equal(fast.equity.to_numpy(), slow.equity.to_numpy())


def test_event_mode_equals_every_bar_mode_with_brackets_stops_partials_and_latency(stocks):
    def broker(): return SimBroker(commission=PerShare.ib_fixed(), spread=FixedSpread(5), slippage=FixedSlippage(2),
                                   partial=VolumeShare(0.001), latency=BarLatency(1))
    fast = run_events(Brackets(), stocks, broker=broker(), borrow_rate=0.02)
    slow = run_events(Brackets(), stocks, broker=broker(), borrow_rate=0.02, mode="every_bar")
    np.testing.assert_array_equal(fast.equity.to_numpy(), slow.equity.to_numpy())
    orders = fast.oms.frame()
    assert (orders.reason == "take_profit").any() and (orders.reason == "stop_loss").any()
    assert (orders.status == "expired").any() and (orders.status == "cancelled").any()
    fills = fast.audit["fills"]
    assert fills.groupby("client_id").size().max() > 1                      # partial fills across bars
    assert fast.events < 0.8 * len(fast.equity) * 1                          # resting orders do not force every bar
    closes = fast.audit["closes"]
    assert set(closes.reason) >= {"take_profit", "stop_loss"}


def test_event_mode_equals_every_bar_mode_on_twenty_stocks_monthly(closes20):
    class Monthly(Strategy):
        rebalance = "always"
        def features(self, data):
            c = data["close"]
            return {"mom": c.pct_change(126).where(c.notna())}
        def events(self, data, features): return rebalance_schedule(data["close"].index, "M")
        def on_bar(self, ctx):
            if not ctx.is_event: return None
            m = pd.Series(ctx.row("mom"), index=ctx.symbols).dropna()
            if len(m) < 6: return None
            return {**{s: 0.3 for s in m.nlargest(3).index}, **{s: -0.1 for s in m.nsmallest(3).index}}
    fast = run_events(Monthly(), closes20, broker=SimBroker(spread=FixedSpread(3)), borrow_rate=0.01)
    slow = run_events(Monthly(), closes20, broker=SimBroker(spread=FixedSpread(3)), borrow_rate=0.01, mode="every_bar")
    np.testing.assert_array_equal(fast.equity.to_numpy(), slow.equity.to_numpy())
    assert fast.portfolio.costs["borrow"] > 0 and fast.events < 250


def test_naive_mode_catches_a_strategy_whose_events_miss_decisions(spx):
    class Inconsistent(LongShortSma):
        def events(self, data, features): return super().events(data, features) & (np.arange(len(data["close"])) % 2 == 0)[:, None]
    fast = run_events(Inconsistent(), spx, broker=SimBroker(commission=0))
    slow = run_events(Inconsistent(), spx, broker=SimBroker(commission=0), mode="every_bar")
    assert not np.array_equal(fast.equity.to_numpy(), slow.equity.to_numpy())


def test_equity_is_cash_plus_positions_at_the_close_and_matches_the_broker_ledger(stocks):
    run = run_events(Brackets(), stocks, broker=SimBroker(commission=PerShare.ib_fixed()))
    close = stocks["close"].ffill().fillna(0.0)
    np.testing.assert_allclose(run.equity, run.cash + (run.positions * close).sum(axis=1), rtol=1e-12)
    assert run.broker.positions() == {s: q for s, q in run.positions.iloc[-1].items() if q}
    assert math.isclose(run.broker.cash(), run.portfolio.cash, rel_tol=1e-12)


def test_context_never_shows_data_after_now(spx):
    seen = []
    class Peek(Strategy):
        def events(self, data, features): return np.arange(len(data["close"])) % 97 == 0
        def on_bar(self, ctx):
            h = ctx.history("close")
            seen.append((ctx.now, h.index[-1], len(h), ctx.i))
            with pytest.raises(ValueError): ctx.row("close")[0] = 0.0
    run_events(Peek(), spx)
    assert seen and all(now == last and n == i + 1 for now, last, n, i in seen)


def test_strategies_features_are_point_in_time(spx, stocks):
    check_no_lookahead(LongShortSma(), spx)
    check_no_lookahead(Brackets(), stocks)


def test_a_decision_fills_no_earlier_than_the_next_bar(spx):
    run = run_events(LongShortSma(), spx)
    q = run.audit.query("select d.bar as decided, min(f.bar) as first_fill from decisions d join orders o using (decision_id) "
                        "join fills f using (client_id) group by d.bar")
    assert len(q) > 50 and (q.first_fill == q.decided + 1).all()


def test_long_store_frame_and_wide_panels_give_the_same_run(stocks):
    long = pd.concat([pd.DataFrame({"symbol": s, "ts": stocks["close"].index, **{k: stocks[k][s].to_numpy() for k in stocks}})
                      for s in stocks["close"].columns]).dropna(subset=["close"])
    a = run_events(Brackets(), stocks); b = run_events(Brackets(), long)
    np.testing.assert_array_equal(a.equity.to_numpy(), b.equity.to_numpy())


def test_daily_loss_limit_halts_trading(spx):
    run = run_events(LongShortSma(), spx, risk=RiskLimits(max_daily_loss=0.03))
    assert run.oms.frame().risk_reason.str.contains("HALTED").any()


def test_bad_inputs_are_refused(spx):
    with pytest.raises(UsageError, match="mode"): run_events(LongShortSma(), spx, mode="fast")
    naive = {k: v.tz_localize(None) if False else v.set_axis(v.index.tz_localize(None)) for k, v in spx.items()}
    with pytest.raises(UsageError, match="UTC"): run_events(LongShortSma(), naive)
    class Misaligned(Strategy):
        def features(self, data): return {"x": data["close"].iloc[1:]}
    with pytest.raises(UsageError, match="not indexed like the bars"): run_events(Misaligned(), spx)
    dup = pd.DataFrame({"symbol": ["A", "A"], "ts": pd.to_datetime(["2024-01-02", "2024-01-02"], utc=True),
                        "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0})
    with pytest.raises(DataError, match="row 2"): panels_from_bars(dup)


def test_rebalance_schedule_is_point_in_time_on_real_sessions():
    from arch.data import sp500
    from quantlab.core import session_closes
    from quantlab.research.guard import check_no_lookahead
    raw = sp500.load()
    close = pd.Series(raw["Close"].to_numpy(), index=session_closes(raw.index), name="SP500").to_frame()
    for when in ("last", "first"):
        report = check_no_lookahead(lambda c: rebalance_schedule(c.index, "M", when).astype(float).to_frame(), close, n_dates=8)
        assert report.ok
    marked = close.index[rebalance_schedule(close.index, "M").to_numpy()]
    assert len(marked) == 240                                     # 20 years of month ends, none invented at the end
    # every marked bar is the last bar of its month in the data (the data has no missing month-end sessions)
    last_in_data = close.groupby(close.index.tz_convert("America/New_York").tz_localize(None).to_period("M")).tail(1).index
    assert set(marked) == set(last_in_data)


def test_the_collector_is_paused_only_during_a_run_and_restored_after_an_error(spx):
    import gc
    seen = []
    class Probe(Strategy):
        def on_bar(self, ctx):
            seen.append(gc.isenabled())
            if ctx.i == 3: raise RuntimeError("strategy bug at bar 3")
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="bar 3"): run_events(Probe(), spx)
    assert seen == [False] * 4 and gc.isenabled()


def test_a_runs_records_leave_the_young_generations(spx):
    # the orders, records and fills a run keeps are promoted to the oldest generation at its end (core.gc_paused),
    # so the collector does not scan them in the youngest and middle generations first
    import gc
    run = run_events(LongShortSma(), spx)
    kept = list(run.oms.orders.values())[:50] + [r.order for r in list(run.oms.orders.values())[:50]] + run.audit._fills[:50]
    assert len(kept) == 150
    young = {id(o) for g in (0, 1) for o in gc.get_objects(generation=g)}
    assert not any(id(o) in young for o in kept) and gc.get_freeze_count() == 0 and gc.isenabled()


def test_positions_rebuilt_from_the_fill_log_equal_the_portfolio_after_every_fill(stocks):
    # the equity curve comes from a per-fill position log forward-filled once; check it against the fills themselves
    run = run_events(LongShortSma(), stocks, broker=SimBroker(partial=VolumeShare(0.001)))
    fills = run.audit["fills"]
    assert len(fills) > 100 and fills.groupby("bar").size().max() > 1   # several fills in one bar happen
    expected = fills.groupby(["bar", "symbol"]).position_after.last().unstack().reindex(range(len(run.index))).ffill().fillna(0.0)
    got = run.positions.reset_index(drop=True)[expected.columns]
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())


def test_orders_are_sized_against_a_vectorised_equity_equal_to_the_portfolios(closes20, monkeypatch):
    # whatever the universe's size, the engine sizes orders against cash + quantities . marks (one dot product)
    # instead of Portfolio.equity's loop over positions; the two must agree at every decision
    import quantlab.trading.engine as engine_module
    from quantlab.trading.portfolio import orders_for_targets
    from quantlab.strategies import get_strategy
    close = closes20["close"].dropna(axis=1)
    assert close.shape[1] > 16 and not close.isna().any().any()
    seen = []
    def recording(portfolio, targets, **kw):
        seen.append((kw.get("equity"), portfolio.equity))
        return orders_for_targets(portfolio, targets, **kw)
    monkeypatch.setattr(engine_module, "orders_for_targets", recording)
    run = run_events(get_strategy("sma_cross", fast=10, slow=50), {"close": close}, broker=SimBroker(commission=BasisPoints(5)))
    assert len(seen) > 500 and len(run.audit["fills"]) > 1000
    passed, held = np.array(seen, dtype=float).T
    assert not np.isnan(passed).any()                                  # every decision got the vectorised equity
    np.testing.assert_allclose(passed, held, rtol=1e-12, atol=0)
    # and with NaN closes in the panel (a late listing), the marks carry the last known close, as the portfolio's do
    seen.clear()
    assert closes20["close"].isna().any().any()
    run_events(get_strategy("sma_cross", fast=10, slow=50), closes20, broker=SimBroker(commission=BasisPoints(5)))
    passed, held = np.array(seen, dtype=float).T
    assert len(seen) > 500
    np.testing.assert_allclose(passed, held, rtol=1e-12, atol=0)


class TopThree(Strategy):
    "Monthly: 0.3 in each of the three best 126-day performers; as a dict naming them (the rest implied 0), or as the full array."
    def __init__(self, as_array=False, nan_for_dropped=False, **kw):
        super().__init__(**kw); self.as_array, self.nan_for_dropped = as_array, nan_for_dropped
    def features(self, data):
        c = data["close"]; return {"mom": c.pct_change(126, fill_method=None)}
    def events(self, data, features): return rebalance_schedule(data["close"].index, "M")
    def on_bar(self, ctx):
        m = pd.Series(ctx.row("mom"), index=ctx.symbols).dropna()
        if len(m) < 6: return None
        named = {s: 0.3 for s in m.nlargest(3).index}
        if self.nan_for_dropped:  # a symbol named with NaN means no position, like one left out
            named |= {s: math.nan for s in m.nsmallest(2).index}
        if not self.as_array: return dict(reversed(named.items()))  # any order: the orders still go out in column order
        return np.array([named.get(s, 0.0) for s in ctx.symbols])


@pytest.mark.parametrize("nan_for_dropped", [False, True])
def test_a_dict_of_a_few_weights_trades_exactly_like_the_full_array(closes20, nan_for_dropped):
    # the engine reads a dict name by name (no array over the universe); symbols it leaves out go to 0
    runs = [run_events(TopThree(as_array=a, nan_for_dropped=nan_for_dropped), closes20, broker=SimBroker(spread=FixedSpread(3)))
            for a in (False, True)]
    named, dense = runs
    assert len(named.audit["fills"]) > 100 and (named.audit["closes"].kind == "closed").sum() > 20  # names dropped are sold out
    np.testing.assert_array_equal(named.equity.to_numpy(), dense.equity.to_numpy())
    for table in ("decisions", "orders", "fills", "closes"):
        pd.testing.assert_frame_equal(named.audit[table], dense.audit[table])


def test_a_dict_with_an_impossible_weight_is_refused_naming_the_symbol(closes20):
    class Wild(TopThree):
        def on_bar(self, ctx):
            out = super().on_bar(ctx)
            if out is not None and ctx.i >= 1000: out[next(iter(out))] = math.inf  # the first symbol the dict names
            return out
    engine = Engine(Wild(), list(closes20["close"].columns), SimBroker(), risk=RiskLimits(max_weight=1.0))
    engine.load(closes20)
    for i in range(engine.bars.n): engine.step(i, decide=bool(engine.events[i]))
    assert len(engine.refusals) > 5 and min(bar for bar, _ in engine.refusals) >= 1000
    assert all(re.search(r"the weight of [A-Z]+ is inf \(max_weight 1\b", r) for _, r in engine.refusals)
    assert engine.audit["decisions"].bar.max() < 1000  # refused: no decision, no order after bar 1000
    class Stranger(TopThree):
        def on_bar(self, ctx): return {"ZZZ": 0.1}
    with pytest.raises(UsageError, match="outside the universe: 'ZZZ'"):
        run_events(Stranger(), closes20, broker=SimBroker())


def test_a_short_array_of_weights_read_by_name_trades_exactly_like_the_vectorised_check(closes20, monkeypatch):
    # up to FEW_SYMBOLS columns, an array from on_bar goes through the by-name path (faster there); the result must not change
    import quantlab.trading.engine as engine_module
    few = {"close": closes20["close"].iloc[:, :12]}
    assert engine_module.FEW_SYMBOLS >= 12
    runs = []
    for limit in (engine_module.FEW_SYMBOLS, 0):
        monkeypatch.setattr(engine_module, "FEW_SYMBOLS", limit)
        runs.append(run_events(TopThree(as_array=True, nan_for_dropped=True), few, broker=SimBroker(spread=FixedSpread(3))))
    by_name, vectorised = runs
    assert len(by_name.audit["fills"]) > 100
    np.testing.assert_array_equal(by_name.equity.to_numpy(), vectorised.equity.to_numpy())
    for table in ("decisions", "orders", "fills", "closes"):
        pd.testing.assert_frame_equal(by_name.audit[table], vectorised.audit[table])


class Quiet(Strategy):
    "Never trades: the marks are all that a step changes."
    def on_bar(self, ctx): return None


@pytest.mark.parametrize("live", [False, True], ids=["whole_history", "bar_by_bar"])
def test_the_portfolio_is_marked_at_each_symbols_last_known_close_on_bars_with_and_without_gaps(stocks, live):
    "Three stocks listed in different years: bars where a symbol has no close keep its previous mark (or none yet); the others are one update."
    from quantlab.trading.feed import HistoricalFeed
    close = stocks["close"]
    gaps = close.isna().any(axis=1).to_numpy()
    assert gaps.any() and (~gaps).any()  # both kinds of bar are in the data
    engine = Engine(Quiet(), list(close.columns))
    if live:
        feed = HistoricalFeed(stocks)
        engine.open_feed(feed.fields, capacity=16)  # grows while it runs
    else: engine.load(stocks)
    known = close.ffill()
    checked = 0
    for i in range(len(close)):
        if live: engine.append(feed.bar(i))
        engine.step(i)
        if i % 97 and i != len(close) - 1: continue  # every 97th bar and the last
        row = known.iloc[i]
        assert engine.portfolio.prices == {s: p for s, p in row.items() if p == p}, i
        checked += 1
    assert list(engine.bars.has_gap[:len(close)]) == gaps.astype(int).tolist() and checked > 40
