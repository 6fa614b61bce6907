"""SimBroker on hand-made bars: gaps, limits, stops, stop-limits, partial fills, latency, fill timing, and each cost model by hand."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from quantlab.trading.brokers.sim import (BarArrays, BarClose, BarLatency, BarVWAP, BasisPoints, Broker, FixedSlippage, FixedSpread,
                              NextOpen, PerOrder, PerShare, QuoteSpread, SecondsLatency, SimBroker, SquareRootImpact,
                              VolatilitySpread, VolumeShare)
from quantlab.trading.orders import Order, OrderStatus


def bars(rows, freq="D", extra=None):
    a = np.array(rows, dtype=float)
    idx = pd.date_range("2024-01-02 21:00", periods=len(a), freq=freq, tz="UTC")
    f = {k: a[:, [n]] for n, k in enumerate(("open", "high", "low", "close", "volume"))}
    f.update(extra or {})
    return BarArrays(idx, ["A"], f)


def fills_after(rows, *orders, at=0, upto=None, **kw):
    "Submit `orders` after bar `at`, run bars up to `upto`, return the fills."
    br = SimBroker(bars(rows), commission=kw.pop("commission", 0), **kw)
    br.on_bar(at)
    for o in orders: br.submit(o)
    for i in range(at + 1, (upto if upto is not None else len(rows) - 1) + 1): br.on_bar(i)
    return br.fills_since(0), br


B0 = (100, 101, 99, 100, 1e6)


def test_simbroker_satisfies_the_broker_protocol():
    assert isinstance(SimBroker(), Broker)


@pytest.mark.parametrize("order,bar,price", [
    (Order("A", 1), (103, 104, 102, 103, 1e6), 103.0),                                       # market: next open
    (Order("A", 1, "limit", limit_price=101.0), (99, 100, 98, 99, 1e6), 99.0),               # buy limit gapped: open (better)
    (Order("A", 1, "limit", limit_price=99.5), (100, 101, 99, 100, 1e6), 99.5),              # buy limit touched: the limit
    (Order("A", -1, "limit", limit_price=99.0), (102, 103, 101, 102, 1e6), 102.0),           # sell limit gapped: open (better)
    (Order("A", -1, "limit", limit_price=102.0), (100, 103, 99, 101, 1e6), 102.0),           # sell limit touched
    (Order("A", 1, "stop", stop_price=102.0), (105, 106, 104, 105, 1e6), 105.0),             # buy stop gapped: open (worse)
    (Order("A", 1, "stop", stop_price=102.0), (100, 103, 99, 101, 1e6), 102.0),              # buy stop touched
    (Order("A", -1, "stop", stop_price=98.0), (95, 96, 94, 95, 1e6), 95.0),                  # sell stop gapped: open, not the stop
    (Order("A", -1, "stop", stop_price=98.0), (100, 101, 97, 99, 1e6), 98.0),                # sell stop touched
    (Order("A", 1, "stop_limit", stop_price=102.0, limit_price=103.0), (100, 104, 99, 103, 1e6), 102.0),  # triggered within limit
    (Order("A", 1, "stop_limit", stop_price=102.0, limit_price=103.0), (102.5, 104, 102, 103, 1e6), 102.5),  # gapped, open within limit
])
def test_fill_prices_on_gaps_limits_and_stops(order, bar, price):
    [f], _ = fills_after([B0, bar], order)
    assert f.price == price and f.quantity == order.quantity


@pytest.mark.parametrize("order,bar", [
    (Order("A", 1, "limit", limit_price=98.0), (100, 101, 99, 100, 1e6)),
    (Order("A", -1, "limit", limit_price=102.0), (100, 101, 99, 100, 1e6)),
    (Order("A", 1, "stop", stop_price=102.0), (100, 101, 99, 100, 1e6)),
    (Order("A", -1, "stop", stop_price=98.0), (100, 101, 99, 100, 1e6)),
])
def test_untouched_prices_do_not_fill(order, bar):
    assert fills_after([B0, bar], order)[0] == []


def test_stop_limit_gapped_beyond_its_limit_rests_then_fills_as_a_limit():
    o = Order("A", 1, "stop_limit", stop_price=102.0, limit_price=103.0, tif="GTC")
    fills, br = fills_after([B0, (105, 106, 104, 105, 1e6), (104, 104, 102.5, 103, 1e6)], o, upto=1)
    assert fills == []                                  # triggered at 105 > limit 103: no fill on the trigger bar
    br.on_bar(2)
    assert [f.price for f in br.fills_since(0)] == [103.0]


def test_partial_fills_across_bars_capped_by_volume_share():
    rows = [B0, (100, 101, 99, 100, 1000), (101, 102, 100, 101, 500), (102, 103, 101, 102, 10_000)]
    fills, br = fills_after(rows, Order("A", 200, tif="GTC", client_id="p"), partial=VolumeShare(0.1))
    assert [(f.quantity, f.price, f.bar) for f in fills] == [(100, 100, 1), (50, 101, 2), (50, 102, 3)]
    assert not br.open_orders()


def test_partial_fill_rounds_down_to_the_lot():
    fills, _ = fills_after([B0, (100, 101, 99, 100, 1999)], Order("A", 1000), partial=VolumeShare(0.1), lots={"A": 100})
    assert fills[0].quantity == 100


@pytest.mark.parametrize("latency,first_bar", [(BarLatency(0), 1), (BarLatency(2), 3), (SecondsLatency(0), 1),
                                               (SecondsLatency(86_400 + 1), 3)])
def test_latency_delays_the_first_working_bar(latency, first_bar):
    rows = [B0, (101, 102, 100, 101, 1e6), (102, 103, 101, 102, 1e6), (103, 104, 102, 103, 1e6)]
    [f], _ = fills_after(rows, Order("A", 1), latency=latency)
    assert f.bar == first_bar and f.price == rows[first_bar][0]


@pytest.mark.parametrize("model,expected", [(NextOpen(), 101.0), (BarClose(), 104.0), (BarVWAP(), (105 + 100 + 104) / 3)])
def test_fill_timing_models(model, expected):
    [f], _ = fills_after([B0, (101, 105, 100, 104, 1e6)], Order("A", 1), fill=model)
    assert math.isclose(f.price, expected)


def test_vwap_panel_is_used_when_present():
    b = bars([B0, (101, 105, 100, 104, 1e6)], extra={"vwap": np.array([[100.0], [102.5]])})
    br = SimBroker(b, commission=0, fill=BarVWAP()); br.on_bar(0); br.submit(Order("A", 1)); br.on_bar(1)
    assert br.fills_since(0)[0].price == 102.5


def test_ib_fixed_commission_by_hand_with_minimum_maximum_and_partials():
    ib = PerShare.ib_fixed()
    assert ib.calculate(100, 30.0) == 1.0                        # 0.50 -> minimum 1.00
    assert math.isclose(ib.calculate(1_000, 30.0), 5.0)          # 0.005 x 1000
    assert math.isclose(ib.calculate(50_000, 0.5), 250.0)        # 0.005 x 50,000 = 250 = 1% of 25,000 (the cap)
    assert math.isclose(ib.calculate(50_000, 0.4), 200.0)        # capped at 1% of 20,000
    rows = [B0, (100, 101, 99, 100, 1000), (100, 101, 99, 100, 1000), (100, 101, 99, 100, 1e6)]
    fills, _ = fills_after(rows, Order("A", 300, tif="GTC"), partial=VolumeShare(0.1), commission=ib)
    assert [f.quantity for f in fills] == [100, 100, 100]
    assert math.isclose(sum(f.commission for f in fills), 1.5)   # one order: 300 x 0.005, minimum charged once
    assert fills[0].commission == 1.0 and fills[1].commission == 0.0 and math.isclose(fills[2].commission, 0.5)


def test_ib_tiered_basis_points_and_per_order_by_hand():
    assert math.isclose(PerShare.ib_tiered().calculate(100, 30.0), 0.35)
    assert math.isclose(PerShare.ib_tiered().calculate(1_000, 30.0), 3.5)
    assert math.isclose(BasisPoints(2.5).calculate(-400, 25.0), 400 * 25 * 2.5e-4)
    assert math.isclose(BasisPoints(1).calculate(2, 4000.0, multiplier=50), 2 * 4000 * 50 * 1e-4)
    fills, _ = fills_after([B0, (100, 101, 99, 100, 1000), (100, 101, 99, 100, 1e6)], Order("A", 150, tif="GTC"),
                           partial=VolumeShare(0.1), commission=PerOrder(2.0))
    assert [f.commission for f in fills] == [2.0, 0.0]


def test_fixed_spread_and_slippage_by_hand_on_a_market_buy_and_sell():
    [b], _ = fills_after([B0, (200, 201, 199, 200, 1e6)], Order("A", 10), spread=FixedSpread(10), slippage=FixedSlippage(5))
    half, slip = 200 * 10 / 2 / 1e4, 200 * 5 / 1e4
    assert math.isclose(b.price, 200 + half + slip) and math.isclose(b.spread, half * 10) and math.isclose(b.slippage, slip * 10)
    assert b.reference_price == 200
    [s], _ = fills_after([B0, (200, 201, 199, 200, 1e6)], Order("A", -10), spread=FixedSpread(10))
    assert math.isclose(s.price, 200 - half)


def test_limit_fills_never_beyond_the_limit_and_maker_fills_pay_no_spread():
    [g], _ = fills_after([B0, (99.99, 100, 98, 99, 1e6)], Order("A", 1, "limit", limit_price=100.0), spread=FixedSpread(100))
    assert g.price == 100.0 and g.reference_price == 99.99     # gapped taker: open + spread capped at the limit
    [m], _ = fills_after([B0, (101, 101, 99, 100, 1e6)], Order("A", 1, "limit", limit_price=100.0), spread=FixedSpread(100))
    assert m.price == 100.0 and m.spread == 0.0


def test_quote_spread_uses_the_quote_before_the_bar_and_falls_back():
    extra = {"bid": np.array([[99.0], [np.nan], [0.0]]), "ask": np.array([[101.0], [np.nan], [0.0]])}
    rows = [B0, (100, 101, 99, 100, 1e6), (100, 101, 99, 100, 1e6)]
    b = bars(rows, extra=extra)
    br = SimBroker(b, commission=0, spread=QuoteSpread(FixedSpread(20))); br.on_bar(0)
    br.submit(Order("A", 1, client_id="q1")); br.on_bar(1); br.submit(Order("A", 1, client_id="q2")); br.on_bar(2)
    f1, f2 = br.fills_since(0)
    assert f1.price == 101.0                                   # half of the 2.00 quoted spread at bar 0
    assert math.isclose(f2.price, 100 + 100 * 20 / 2e4)        # bar 1 has no quote: 20 bps fallback


def test_volatility_spread_and_sqrt_impact_by_hand_on_real_prices(shared_data):
    df = pd.read_csv(shared_data / "backtrader/nvda-1999-2014.txt", parse_dates=["Date"], index_col="Date").iloc[:80]
    a = df[["Open", "High", "Low", "Close", "Volume"]].to_numpy()
    b = BarArrays(pd.DatetimeIndex(df.index).tz_localize("UTC"), ["NVDA"], {k: a[:, [n]] for n, k in enumerate(("open", "high", "low", "close", "volume"))})
    i = 60
    r = np.diff(np.log(df["Close"].to_numpy()))
    sigma = np.std(r[i - 21:i - 1], ddof=1)                    # 20 returns ending at bar i-1
    adv = df["Volume"].to_numpy()[i - 20:i].mean()
    br = SimBroker(b, commission=0, spread=VolatilitySpread(k=0.5, window=20), slippage=SquareRootImpact(1.0, window=20))
    br.on_bar(i - 1); br.submit(Order("NVDA", 5_000)); br.on_bar(i)
    [f] = br.fills_since(0)
    op = a[i, 0]
    half, impact = 0.5 * sigma * op, 1.0 * sigma * math.sqrt(5_000 / adv) * op
    assert math.isclose(f.price, op + half + impact, rel_tol=1e-9)
    assert math.isclose(f.spread, half * 5_000, rel_tol=1e-9) and math.isclose(f.slippage, impact * 5_000, rel_tol=1e-9)


def test_broker_ledger_tracks_cash_and_positions():
    fills, br = fills_after([B0, (100, 101, 99, 100, 1e6), (110, 111, 109, 110, 1e6)], Order("A", 10), upto=1, commission=PerShare.ib_fixed())
    br.submit(Order("A", -4)); br.on_bar(2)
    assert br.positions() == {"A": 6.0} and math.isclose(br.cash(), 1_000_000 - 1000 - 1 + 440 - 1)


@given(st.lists(st.tuples(st.floats(90, 110), st.floats(0, 5), st.floats(0, 5)), min_size=5, max_size=60),
       st.sampled_from(["limit", "stop"]), st.booleans(), st.floats(92, 108), st.sampled_from(["DAY", "GTC"]))
@settings(max_examples=150, deadline=None)
def test_next_event_is_the_first_bar_where_anything_happens(rows, kind, buy, level, tif):
    data = [(o, o + up, o - dn, o, 1e6) for o, up, dn in rows]
    b = bars(data, freq="8h")
    order = Order("A", 1 if buy else -1, kind, limit_price=level if kind == "limit" else None,
                  stop_price=level if kind == "stop" else None, tif=tif)
    fast = SimBroker(b, commission=0); fast.on_bar(0); fast.submit(order)
    predicted = fast.next_event(0)
    brute = SimBroker(b, commission=0); brute.on_bar(0); brute.submit(order)
    first = len(data)
    for i in range(1, len(data)):
        brute.on_bar(i)
        if brute.fills_since(0) or brute.updates_since(0): first = i; break
    assert predicted == first


def test_sync_version_moves_with_every_fill_and_update_the_broker_records():
    # the OMS skips `sync` while `sync_version` stands still, so every record must move it, whatever made it
    rows = [B0, (100, 101, 99, 100, 10.0), (100, 101, 99, 100, 10.0), (100, 101, 99, 100, 1e6), (100, 101, 99, 100, 1e6)]
    br = SimBroker(bars(rows), commission=0, partial=VolumeShare(0.5))
    seen = [br.sync_version]
    def check():
        assert br.sync_version == len(br._fills) + len(br._updates)
        seen.append(br.sync_version)
    br.on_bar(0)
    br.submit(Order("ZZZ", 1, client_id="r")); check()                               # rejected: unknown symbol
    br.submit(Order("A", 1, "limit", limit_price=50.0, tif="GTC", client_id="c")); br.cancel("c"); check()
    br.submit(Order("A", 20, tif="GTC", client_id="p")); br.submit(Order("A", 1, "limit", limit_price=50.0, tif="IOC", client_id="i"))
    br.submit(Order("A", 1, "limit", limit_price=50.0, client_id="d"))               # DAY: expires at the day's last bar
    br.on_bar(1); check()                                                             # partial fill, IOC cancel, DAY expiry
    br.replace("p", Order("A", 5, client_id="p")); check()                           # replaced down to its filled quantity
    br.deliver(br._fills[-1]); check()                                                # a replayed execution
    statuses = {u.status for u in br._updates}
    assert {OrderStatus.REJECTED, OrderStatus.CANCELLED, OrderStatus.EXPIRED} <= statuses and len(br._fills) >= 2
    assert all(b > a for a, b in zip(seen, seen[1:]))
