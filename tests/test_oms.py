"""The order manager with a simulated broker on hand-made bars: ids, idempotency, brackets/OCO, DAY, IOC, cancel/replace."""
import numpy as np
import pandas as pd
import pytest

from quantlab.trading.brokers.sim import BarArrays, BasisPoints, SimBroker, VolumeShare
from quantlab.core import StateError, UsageError
from quantlab.trading.oms import OrderManager
from quantlab.trading.orders import Fill, Order, OrderStatus, OrderUpdate, bracket
from quantlab.trading.portfolio import Portfolio
from quantlab.trading.risk import RiskEngine, RiskLimits

S = OrderStatus


def make_bars(rows, freq="D"):
    a = np.array(rows, dtype=float)
    idx = pd.date_range("2024-01-02 21:00", periods=len(a), freq=freq, tz="UTC")
    return BarArrays(idx, ["A"], {k: a[:, [n]] for n, k in enumerate(("open", "high", "low", "close", "volume"))})


class Desk:
    "Broker + portfolio + OMS driven bar by bar the way the engine does it."
    def __init__(self, rows, freq="D", risk=None, **broker_kw):
        self.bars = make_bars(rows, freq)
        self.broker = SimBroker(self.bars, commission=0, **broker_kw)
        self.pf = Portfolio(1_000_000.0); self.pf.mark({"A": rows[0][3]})
        self.oms = OrderManager(self.broker, self.pf, risk)
        self.i = -1
        self.step()

    def step(self):
        self.i += 1
        self.oms.now = self.bars.index[self.i]
        self.broker.on_bar(self.i)
        for f in self.oms.sync(): self.pf.apply(f)
        self.pf.mark({"A": float(self.bars["close"][self.i, 0])})

    def status(self, cid): return self.oms.orders[cid].status


FLAT = (100, 101, 99, 100, 1e6)


def test_client_ids_are_assigned_unique_and_submission_is_idempotent():
    d = Desk([FLAT] * 3)
    a, b = d.oms.submit(Order("A", 1)), d.oms.submit(Order("A", 1))
    assert a.client_id != b.client_id
    again = d.oms.submit(Order("A", 1, client_id=a.client_id))
    assert again is a and len(d.broker.open_orders()) == 2
    with pytest.raises(UsageError, match="different order"): d.oms.submit(Order("A", 2, client_id=a.client_id))


def test_market_order_lifecycle_new_submitted_filled():
    d = Desk([FLAT] * 3)
    rec = d.oms.submit(Order("A", 10, client_id="m"))
    assert rec.status == S.SUBMITTED and [h[1] for h in rec.history] == [S.NEW, S.SUBMITTED]
    d.step()
    assert rec.status == S.FILLED and rec.avg_price == 100 and d.pf.quantity("A") == 10


def test_bracket_take_profit_fills_and_cancels_the_stop_loss():
    d = Desk([FLAT, FLAT, (100, 106, 99, 105, 1e6), FLAT])
    for o in bracket("A", 10, take_profit=105, stop_loss=95, client_id="b"): d.oms.submit(o)
    assert d.status("b-tp") == S.NEW and len(d.broker.open_orders()) == 1   # children wait for the entry
    d.step()                                                                 # entry fills at 100
    assert d.status("b") == S.FILLED and d.status("b-tp") == S.SUBMITTED and d.status("b-sl") == S.SUBMITTED
    d.step()                                                                 # high 106 touches the take-profit
    assert (d.status("b-tp"), d.status("b-sl")) == (S.FILLED, S.CANCELLED)
    assert d.pf.quantity("A") == 0 and d.pf.positions["A"].realised == 50.0
    assert d.oms.orders["b-sl"].reason == "cancelled"


def test_bracket_stop_loss_gapped_through_fills_at_the_open_and_cancels_take_profit():
    d = Desk([FLAT, FLAT, (90, 92, 88, 91, 1e6)])
    for o in bracket("A", 10, take_profit=110, stop_loss=95, client_id="b"): d.oms.submit(o)
    d.step(); d.step()
    assert (d.status("b-sl"), d.status("b-tp")) == (S.FILLED, S.CANCELLED)
    assert d.oms.orders["b-sl"].avg_price == 90.0                             # the open, not the stop


def test_bracket_children_cancelled_when_entry_expires_unfilled():
    d = Desk([FLAT] * 4)
    for o in bracket("A", 10, take_profit=110, stop_loss=90, entry_limit=95.0, client_id="b"): d.oms.submit(o)
    d.step()                                                                 # DAY entry never touched: expires
    assert [d.status(c) for c in ("b", "b-tp", "b-sl")] == [S.EXPIRED, S.CANCELLED, S.CANCELLED]


def test_partial_fill_of_an_oco_exit_reduces_its_sibling():
    d = Desk([FLAT, FLAT, (100, 106, 99, 105, 200), (100, 106, 99, 105, 1e6)], partial=VolumeShare(0.02))
    d.broker.partial = None
    for o in bracket("A", 10, take_profit=105, stop_loss=95, client_id="b"): d.oms.submit(o)
    d.step()                                                                 # entry fills in full (no cap yet)
    d.broker.partial = VolumeShare(0.02)
    d.step()                                                                 # 2% of 200 = 4 of the 10
    assert d.status("b-tp") == S.PARTIALLY_FILLED and d.oms.orders["b-tp"].filled == -4
    assert d.oms.orders["b-sl"].order.quantity == -6 and d.broker.open_orders()[-1].quantity == -6
    d.step()
    assert (d.status("b-tp"), d.status("b-sl")) == (S.FILLED, S.CANCELLED) and d.pf.quantity("A") == 0


def test_day_order_expires_at_the_end_of_its_session_on_intraday_bars():
    rows = [FLAT] * 6
    d = Desk(rows, freq="8h")       # 21:00, 05:00 (+1 day), 13:00, 21:00, ...
    d.oms.submit(Order("A", 10, "limit", limit_price=90.0, client_id="day"))
    d.oms.submit(Order("A", 10, "limit", limit_price=90.0, tif="GTC", client_id="gtc"))
    d.step()                        # bar 1 (day 2, 05:00): works
    assert d.status("day") == S.SUBMITTED
    d.step(); d.step()              # bar 2 (13:00), bar 3 (21:00): last bar of day 2 -> expired
    assert d.status("day") == S.EXPIRED and d.status("gtc") == S.SUBMITTED


def test_ioc_fills_what_it_can_on_its_first_bar_and_cancels_the_rest():
    d = Desk([FLAT, (100, 101, 99, 100, 1000), FLAT], partial=VolumeShare(0.1))
    d.oms.submit(Order("A", 250, tif="IOC", client_id="ioc"))
    d.step()
    rec = d.oms.orders["ioc"]
    assert rec.filled == 100 and rec.status == S.CANCELLED and [h[1] for h in rec.history][-2:] == [S.PARTIALLY_FILLED, S.CANCELLED]


def test_cancel_and_replace_of_a_working_limit():
    d = Desk([FLAT, FLAT, (98, 99, 97, 98, 1e6)])
    rec = d.oms.submit(Order("A", 10, "limit", limit_price=96.0, tif="GTC", client_id="l"))
    d.step()
    assert rec.status == S.SUBMITTED
    assert d.oms.replace("l", limit_price=98.5, quantity=20).approved
    d.step()
    assert rec.status == S.FILLED and rec.filled == 20 and rec.avg_price == 98.0   # gapped: the open is better
    c = d.oms.submit(Order("A", 5, "limit", limit_price=50.0, tif="GTC", client_id="c"))
    d.oms.cancel("c"); d.oms.sync()
    assert c.status == S.CANCELLED and not d.broker.open_orders()
    d.oms.cancel("l")                                                             # already filled: no effect
    assert rec.status == S.FILLED


def test_terminal_orders_reject_further_transitions_and_unknown_fills_raise():
    d = Desk([FLAT] * 2)
    rec = d.oms.submit(Order("A", 1, client_id="t")); d.step()
    with pytest.raises(StateError): d.oms._set(rec, S.CANCELLED)
    d.broker.deliver(Fill("nope", "A", 1, 100.0, ts=0, fill_id="zz"))
    with pytest.raises(StateError, match="unknown order"): d.oms.sync()


def test_duplicate_execution_ids_are_booked_once():
    d = Desk([FLAT] * 2)
    d.oms.submit(Order("A", 5, client_id="x")); d.step()
    d.broker.deliver(d.broker._fills[-1])                   # the same execution replayed (IB reconnect)
    assert d.oms.sync() == [] and d.oms.orders["x"].filled == 5


def test_unknown_symbol_is_rejected_by_the_broker():
    d = Desk([FLAT] * 2)
    d.pf.mark({"ZZZ": 10.0})
    rec = d.oms.submit(Order("ZZZ", 5)); d.oms.sync()
    assert rec.status == S.REJECTED and "unknown symbol" in rec.reason


def test_denied_by_risk_is_recorded_and_not_sent():
    d = Desk([FLAT] * 2, risk=RiskEngine(RiskLimits(max_order_quantity=5)))
    rec = d.oms.submit(Order("A", 6))
    assert rec.status == S.DENIED and "max_order_quantity" in rec.reason and not d.broker.open_orders()


def test_accepted_record_equals_the_dataclass_built_one():
    import dataclasses
    from quantlab.trading.oms import ManagedOrder, OrderLog
    for order in (Order("A", 5, client_id="a1", reason="target"), Order("B", -2, "limit", limit_price=9.5, client_id="b1")):
        log = OrderLog()
        log.add("other", 100, OrderStatus.NEW, "x")                    # another order's row first: history must pick its own
        fast = ManagedOrder.accepted(order, 123, 7, log)
        slow = ManagedOrder(order, created=123, tag=7)
        slow.log.add(order.client_id, 123, OrderStatus.NEW, order.reason)
        assert fast == slow                                            # every compared field, client_id included
        assert all(getattr(fast, f.name) == getattr(slow, f.name) for f in dataclasses.fields(ManagedOrder) if f.name != "log")
        assert fast.log is log and fast.history == slow.history == [(123, OrderStatus.NEW, order.reason)]
        assert fast.is_open is False and fast.remaining == order.quantity
        log.add(order.client_id, 124, OrderStatus.SUBMITTED, "")      # the index follows the log as it grows
        assert [h[1] for h in fast.history] == [OrderStatus.NEW, OrderStatus.SUBMITTED] and len(log) == 3

def test_a_cancel_is_pending_until_confirmed_and_a_fill_can_still_win_the_race():
    d = Desk([FLAT, (99, 100, 98, 99, 1e6), FLAT])
    rec = d.oms.submit(Order("A", 10, "limit", limit_price=99.5, tif="GTC", client_id="race"))
    d.broker.on_bar(1)  # the venue fills it on the next bar before it hears the cancel ...
    d.oms.cancel("race")  # ... which we send, not knowing
    assert rec.status == S.PENDING_CANCEL and d.oms.working() == {"A": 10.0}  # still counted as exposure
    d.oms.sync()
    assert rec.status == S.FILLED and rec.filled == 10  # the fill is booked; the broker's "already done" changes nothing


def test_a_fill_after_a_confirmed_cancel_is_booked_as_a_late_fill():
    d = Desk([FLAT] * 3)
    rec = d.oms.submit(Order("A", 10, "limit", limit_price=50.0, tif="GTC", client_id="late"))
    d.oms.cancel("late"); d.oms.sync()
    assert rec.status == S.CANCELLED
    d.broker.deliver(Fill("late", "A", 4.0, 50.0, ts=0, fill_id="x-late"))
    fills = d.oms.sync()
    assert [f.fill_id for f in fills] == ["x-late"] and rec.filled == 4 and rec.status == S.CANCELLED
    assert "late fill x-late after cancelled" in rec.history[-1][2]


def test_a_fill_for_an_order_we_did_not_place_is_adopted_live_and_raises_in_a_backtest():
    d = Desk([FLAT] * 2)
    d.oms.external = "adopt"
    d.broker.deliver(Fill("by-hand", "A", 3.0, 100.0, ts=0, fill_id="x-hand"))
    assert [f.fill_id for f in d.oms.sync()] == ["x-hand"]
    rec = d.oms.orders["by-hand"]
    assert rec.tag == "external" and rec.status == S.FILLED and rec.filled == 3


def test_unknown_and_inactive_orders_count_as_working_exposure():
    d = Desk([FLAT] * 2)
    a = d.oms.submit(Order("A", 5, "limit", limit_price=50.0, tif="GTC", client_id="u"))
    d.oms._set(a, S.UNKNOWN, "query failed")
    b = d.oms.submit(Order("A", 7, "limit", limit_price=50.0, tif="GTC", client_id="i"))
    d.oms._set(b, S.INACTIVE, "held")
    assert d.oms.working() == {"A": 12.0} and {r.client_id for r in d.oms.open_orders()} == {"u", "i"}
    d.oms._set(b, S.SUBMITTED, "reactivated"); d.oms._set(a, S.CANCELLED, "confirmed")
    assert d.oms.working() == {"A": 7.0}


def test_an_execution_correction_replaces_the_earlier_fill():
    "IB_NOTES 5: execId .01 -> .02 replaces the earlier execution; the ledger's quantity is the broker's filled."
    d = Desk([FLAT] * 3)
    rec = d.oms.submit(Order("A", 15, "limit", limit_price=50.0, tif="GTC", client_id="c"))
    d.broker.deliver(Fill("c", "A", 15.0, 100.0, ts=0, commission=1.5, fill_id="0000e0d5.6576ed8f.01.01"))
    booked = d.oms.sync()
    for f in booked: d.pf.apply(f)
    assert rec.status == S.FILLED and d.pf.quantity("A") == 15
    d.broker.deliver(Fill("c", "A", 10.0, 100.0, ts=1, commission=1.0, fill_id="0000e0d5.6576ed8f.01.02"))  # the venue says: 10, not 15
    booked = d.oms.sync()
    assert [f.fill_id for f in booked] == ["0000e0d5.6576ed8f.01.01~reversed", "0000e0d5.6576ed8f.01.02"]
    for f in booked: d.pf.apply(f)
    assert rec.filled == 10 and rec.status == S.PARTIALLY_FILLED and d.pf.quantity("A") == 10
    assert d.pf.costs["commission"] == pytest.approx(1.0) and d.oms.working() == {"A": 5.0}
    d.broker.deliver(Fill("c", "A", 10.0, 100.0, ts=1, commission=1.0, fill_id="0000e0d5.6576ed8f.01.02"))  # a replay of it
    assert d.oms.sync() == []


def test_a_cash_order_is_sized_at_the_fill_once_or_sent_as_units_to_a_broker_that_cannot():
    """#16: the SimBroker sizes a cash order at the next open (commission inside the cash, lots rounded down), and the OMS
    takes that as the order's quantity; a broker without `sizes_cash_at_fill` gets the estimate as a plain order."""
    rows = [(100, 101, 99, 100, 1e6), (80, 81, 79, 80, 1e6), (80, 81, 79, 80, 1e6)]  # the price falls 20% overnight
    d = Desk(rows)
    d.broker.commission = BasisPoints(10)
    rec = d.oms.submit(Order("A", 99, client_id="c", cash=10_000.0))  # 99 units was the estimate at the close of 100
    d.step()
    assert rec.status == S.FILLED and rec.filled == rec.order.quantity == 124  # floor(10,000 / (80 x 1.001)): more than estimated
    assert d.broker.cash() == pytest.approx(1_000_000 - 124 * 80 * 1.001)
    again = d.oms.submit(Order("A", 99, client_id="c", cash=10_000.0))  # a retry of the same intent is the same order
    assert again is rec
    poor = Desk(rows)
    poor.broker._cash = 5_000.0  # the account has less than the order's cash: never below zero
    r2 = poor.oms.submit(Order("A", 99, client_id="p", cash=10_000.0)); poor.step()
    assert r2.filled == 62 and poor.broker.cash() >= 0  # floor(5,000 / 80)
    tiny = Desk(rows)
    r3 = tiny.oms.submit(Order("A", 1, client_id="t", cash=50.0)); tiny.step()
    assert r3.status == S.CANCELLED and "buys no lot" in r3.reason

    class Units(SimBroker): sizes_cash_at_fill = False
    u = Desk(rows)
    u.broker = Units(u.bars, commission=0); u.oms.broker = u.broker
    r4 = u.oms.submit(Order("A", 99, client_id="u", cash=10_000.0)); u.step()
    assert r4.order.cash is None and r4.filled == 99 and "cannot size at the fill" in r4.order.reason
