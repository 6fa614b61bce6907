"""Pre-trade risk: each limit, bad fields named, trading states, and denied orders never reaching a broker."""
import math

import numpy as np
import pandas as pd
import pytest

from quantlab.trading.brokers.sim import BarArrays, SimBroker
from quantlab.core import UsageError
from quantlab.trading.engine import Engine
from quantlab.backtest.driver import run_events
from quantlab.trading.oms import OrderManager
from quantlab.trading.orders import Fill, Order, OrderStatus
from quantlab.trading.portfolio import Portfolio
from quantlab.trading.risk import Decision, RiskEngine, RiskLimits, TradingState
from quantlab.trading.strategy import Strategy


class SpyBroker(SimBroker):
    "A SimBroker that records every order it is sent."
    def __init__(self, *a, **k):
        super().__init__(*a, **k); self.received = []
    def submit(self, order):
        self.received.append(order); super().submit(order)
    def replace(self, client_id, order):
        self.received.append(order); super().replace(client_id, order)


@pytest.fixture
def account():
    pf = Portfolio(100_000.0); pf.apply(Fill("f0", "A", 100, 50.0, ts=0)); pf.mark({"A": 50.0, "B": 10.0})
    return pf


@pytest.mark.parametrize("field,order", [
    ("quantity", Order("A", math.nan)), ("quantity", Order("A", math.inf)), ("quantity", Order("A", 0.0)),
    ("limit_price", Order("A", 1, "limit", limit_price=math.nan)), ("limit_price", Order("A", 1, "limit", limit_price=0.0)),
    ("limit_price", Order("A", 1, "limit", limit_price=-5.0)), ("stop_price", Order("A", 1, "stop", stop_price=math.inf)),
    ("stop_price", Order("A", -1, "stop_limit", limit_price=49.0, stop_price=-49.0)),
])
def test_bad_values_are_denied_with_the_field_named(account, field, order):
    d = RiskEngine().check(order, account)
    assert not d.approved and d.check == "fields" and f"'{field}'" in d.reason


@pytest.mark.parametrize("price", [math.nan, 0.0, -1.0, math.inf, None])
def test_bad_last_price_is_denied(account, price):
    account.prices.pop("B")
    d = RiskEngine().check(Order("B", 1), account, price=price)
    assert not d.approved and "'last price'" in d.reason


@pytest.mark.parametrize("limits,order,check", [
    (RiskLimits(max_order_notional=1_000), Order("B", 101), "order_notional"),
    (RiskLimits(max_order_quantity=100), Order("B", -101), "order_quantity"),
    (RiskLimits(max_position_quantity=150), Order("A", 51), "position_quantity"),
    (RiskLimits(max_position_notional=7_500), Order("A", 51), "position_notional"),
    (RiskLimits(max_gross_exposure=0.1), Order("B", -600), "gross_exposure"),
    (RiskLimits(max_net_exposure=0.06), Order("B", 200), "net_exposure"),
    (RiskLimits(price_band=0.1), Order("A", 1, "limit", limit_price=56.0), "price_band"),
    (RiskLimits(price_band=0.1), Order("A", -1, "stop", stop_price=44.0), "price_band"),
    (RiskLimits(allow_short=False), Order("A", -101), "short"),
])
def test_each_limit_denies_just_over_and_approves_just_under(account, limits, order, check):
    risk = RiskEngine(limits)
    d = risk.check(order, account)
    assert not d.approved and d.check == check, d
    smaller = order.replace(quantity=order.quantity / 10 if check != "price_band" else order.quantity,
                            limit_price=50.5 if order.limit_price else None, stop_price=49.5 if order.stop_price else None)
    assert risk.check(smaller, account).approved


def test_limits_are_frozen_and_validated():
    lim = RiskLimits(max_order_notional=10.0)
    with pytest.raises(Exception): lim.max_order_notional = 1e12
    with pytest.raises(UsageError): RiskLimits(max_order_quantity=0)


def test_states_active_reducing_halted(account):
    risk = RiskEngine()
    assert risk.check(Order("A", 10), account).approved
    risk.reduce_only("broker mismatch")
    assert risk.check(Order("A", -100), account).approved
    assert not risk.check(Order("A", -101), account).approved     # would flip
    assert not risk.check(Order("B", 1), account).approved        # opens
    risk.halt("kill switch")
    d = risk.check(Order("A", -1), account)
    assert (d.approved, d.check, d.reason) == (False, "state", "trading HALTED: kill switch")
    risk.resume(); assert risk.state == TradingState.ACTIVE


def test_daily_loss_halts_until_resumed(account):
    risk = RiskEngine(RiskLimits(max_daily_loss=0.05))
    assert risk.update_equity("2024-01-02", 100_000) == TradingState.ACTIVE
    assert risk.update_equity("2024-01-02", 96_000) == TradingState.ACTIVE
    assert risk.update_equity("2024-01-03", 92_000) == TradingState.ACTIVE    # 4.2% below the previous day's 96,000
    assert risk.update_equity("2024-01-04", 87_000) == TradingState.HALTED    # 5.4% below 92,000
    assert risk.update_equity("2024-01-05", 90_000) == TradingState.HALTED   # a new day does not clear it
    assert not risk.check(Order("A", -1), account).approved


def test_denied_orders_never_reach_the_broker_in_a_real_backtest(shared_data):
    df = pd.read_csv(shared_data / "backtrader/orcl-1995-2014.txt", parse_dates=["Date"], index_col="Date")
    df.index = df.index.tz_localize("UTC") + pd.Timedelta(hours=21)
    panels = {k.lower(): df[[k]].set_axis(["ORCL"], axis=1) for k in ("Open", "High", "Low", "Close", "Volume")}

    class Noisy(Strategy):
        "Alternates huge, NaN, off-band and fine orders."
        def events(self, data, features): return np.arange(len(data["close"])) % 20 == 0
        def on_bar(self, ctx):
            n, px = ctx.i // 20, ctx.price()
            kind = n % 4
            if kind == 0: ctx.buy("ORCL", 10_000)                          # too big
            elif kind == 1: ctx.buy("ORCL", math.nan)                       # NaN
            elif kind == 2: ctx.buy("ORCL", 10, limit=px * 1.5)             # off the price band
            else: ctx.order("ORCL", -ctx.position() or 10)                  # fine

    spy = SpyBroker(commission=0)
    run = run_events(Noisy(), panels, broker=spy, risk=RiskLimits(max_order_notional=50_000, price_band=0.05))
    frame = run.oms.frame()
    denied = set(frame.loc[frame.status == "denied", "client_id"])
    sent = {o.client_id for o in spy.received}
    assert len(denied) > 100 and sent and not denied & sent
    assert set(frame.loc[frame.status != "denied", "client_id"]) == sent
    reasons = frame.loc[frame.status == "denied", "risk_reason"]
    assert reasons.str.contains("max_order_notional").any() and reasons.str.contains("'quantity' is nan").any()
    assert reasons.str.contains("price_band").any()
    assert run.audit.query("select count(*) as n from orders where approved = false")["n"][0] == len(denied)


def test_denied_replace_leaves_the_working_order_untouched(account):
    spy = SpyBroker(BarArrays(pd.date_range("2024-01-02", periods=3, tz="UTC"), ["A"],
                              {k: np.full((3, 1), 50.0) for k in ("open", "high", "low", "close")}), commission=0)
    oms = OrderManager(spy, account, RiskEngine(RiskLimits(price_band=0.05)))
    rec = oms.submit(Order("A", 10, "limit", limit_price=49.0, tif="GTC"))
    d = oms.replace(rec.client_id, limit_price=60.0)
    assert not d.approved and rec.order.limit_price == 49.0 and len(spy.received) == 1
    assert oms.replace(rec.client_id, limit_price=49.5).approved and spy.open_orders()[0].limit_price == 49.5


def test_the_drawdown_breaker_flattens_and_halts_on_real_data(spx_fields):
    "SPX 2007-2009 long with a 10% drawdown limit: the breaker trips once, closes the position and nothing trades after."
    from quantlab.backtest.driver import run_backtest
    from quantlab.strategies import get_strategy
    from quantlab.trading.risk import RiskEngine, RiskLimits
    data = {k: v.loc["2007":"2009"] for k, v in spx_fields.items()}
    risk = RiskEngine(RiskLimits(max_drawdown=0.10))
    res = run_backtest(get_strategy("sma_cross", fast=5, slow=20), data, risk=risk)
    orders = res.orders
    flat = orders[orders["reason"] == "flatten"]
    assert len(flat) == 1 and risk.state.value == "HALTED" and "drawdown" in risk.state_reason
    after = orders[orders["created"] > flat["created"].iloc[0]]
    assert (after["status"] == "denied").all() and len(after) > 0  # every later decision denied
    assert res.positions.iloc[-1].abs().sum() == 0
    peak = res.equity.loc[:flat["created"].iloc[0]].cummax().iloc[-1]
    assert res.equity.loc[flat["created"].iloc[0]] < peak * 0.9  # it tripped below the limit, not before


def test_the_reject_rate_breaker_halts():
    from quantlab.trading.risk import RiskEngine, RiskLimits
    risk = RiskEngine(RiskLimits(max_reject_rate=0.5, reject_window=10))
    for k in range(10): risk.note_sent(f"c{k}")
    for k in range(4): risk.note_rejected(f"c{k}")
    assert risk.state.value == "ACTIVE"
    risk.note_rejected("c4")
    assert risk.state.value == "HALTED" and "reject rate 5/10" in risk.state_reason


def test_a_stale_data_pause_denies_new_orders_but_not_cancels_and_lifts_without_an_operator():
    from quantlab.trading.brokers.sim import BarArrays, SimBroker
    from quantlab.trading.oms import OrderManager
    from quantlab.trading.orders import Order
    from quantlab.trading.portfolio import Portfolio
    from quantlab.trading.risk import RiskEngine
    import numpy as np, pandas as pd
    idx = pd.date_range("2024-01-02 21:00", periods=3, freq="D", tz="UTC")
    bars = BarArrays(idx, ["A"], {k: np.full((3, 1), 100.0) for k in ("open", "high", "low", "close", "volume")})
    pf = Portfolio(1e6); pf.mark({"A": 100.0})
    risk = RiskEngine()
    oms = OrderManager(SimBroker(bars, commission=0), pf, risk)
    resting = oms.submit(Order("A", 1, "limit", limit_price=50.0, tif="GTC", client_id="r"))
    risk.pause("stale data: no bar for 600 s")
    assert oms.submit(Order("A", 1, client_id="new")).decision.reason == "new orders paused: stale data: no bar for 600 s"
    oms.cancel("r"); oms.sync()
    assert resting.status.value == "cancelled"  # cancels still go out
    risk.unpause()
    assert oms.submit(Order("A", 1, client_id="after")).status.value == "submitted" and risk.state.value == "ACTIVE"


def test_tick_rounding_puts_prices_on_the_tick_on_the_passive_side_before_the_checks():
    from quantlab.core import Instrument
    from quantlab.trading.brokers.sim import BarArrays, SimBroker
    from quantlab.trading.oms import OrderManager
    from quantlab.trading.orders import Order
    from quantlab.trading.portfolio import Portfolio
    from quantlab.trading.risk import RiskEngine, RiskLimits
    import numpy as np, pandas as pd
    idx = pd.date_range("2024-01-02 21:00", periods=2, freq="D", tz="UTC")
    bars = BarArrays(idx, ["A"], {k: np.full((2, 1), 100.0) for k in ("open", "high", "low", "close", "volume")})
    pf = Portfolio(1e6, [Instrument("A", tick_size=0.05)]); pf.mark({"A": 100.0})
    oms = OrderManager(SimBroker(bars, commission=0), pf, RiskEngine(RiskLimits(round_ticks=True, enforce_ticks=True)))
    buy = oms.submit(Order("A", 1, "limit", limit_price=99.97, client_id="b"))
    sell = oms.submit(Order("A", -1, "stop", stop_price=99.97, client_id="s"))
    assert (buy.order.limit_price, sell.order.stop_price) == (99.95, 99.95) and buy.status.value == sell.status.value == "submitted"
    assert oms.submit(Order("A", 1, "limit", limit_price=99.97, client_id="b")) is buy  # a retry rounds alike: still idempotent
