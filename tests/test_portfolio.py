"""Portfolio accounting: hypothesis property tests of Portfolio.apply against an independent ledger, real-data runs."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from quantlab.core import Instrument, StateError
from quantlab.trading.orders import Fill
from quantlab.trading.portfolio import FixedFraction, FixedQuantity, Portfolio, Position, VolatilityTarget, orders_for_targets

fills_st = st.lists(st.tuples(st.sampled_from(["A", "B", "ES"]),
                              st.integers(-500, 500).filter(bool),
                              st.floats(1.0, 500.0),
                              st.floats(0.0, 5.0)), min_size=1, max_size=40)


class BasisLedger:
    "Average-cost accounting written as a cost basis (total), independently of Position.apply."
    def __init__(self): self.q, self.basis, self.realised = 0.0, 0.0, 0.0
    def book(self, q, p, m):
        if self.q == 0 or (self.q > 0) == (q > 0):
            self.basis += q * p; self.q += q; return
        closing = -q if abs(q) <= abs(self.q) else self.q
        frac = abs(closing) / abs(self.q)
        removed = self.basis * frac
        self.realised += (closing * p - removed) * m
        self.basis -= removed; self.q += -closing
        rest = q + closing
        if rest: self.basis, self.q = rest * p, rest


@given(fills_st)
@settings(max_examples=150, deadline=None)
def test_apply_matches_an_independent_cost_basis_ledger_and_keeps_the_invariant(fills):
    pf = Portfolio(1_000_000.0, instruments=[Instrument("ES", "future", tick_size=0.25, multiplier=50)])
    ref = {s: BasisLedger() for s in ("A", "B", "ES")}
    cash = 1_000_000.0
    for n, (s, q, p, c) in enumerate(fills):
        m = 50.0 if s == "ES" else 1.0
        pf.apply(Fill(f"o{n}", s, float(q), p, ts=n, commission=c))   # raises if the invariant breaks
        ref[s].book(float(q), p, m)
        cash -= q * p * m + c
        pf.mark({s: p * 1.01})
        pf.check()
    assert math.isclose(pf.cash, cash, rel_tol=1e-9, abs_tol=1e-6)
    for s, led in ref.items():
        assert math.isclose(pf.quantity(s), led.q, abs_tol=1e-9)
        pos = pf.positions.get(s)
        if pos is not None:
            assert math.isclose(pos.realised, led.realised, rel_tol=1e-9, abs_tol=1e-6)
            if led.q: assert math.isclose(pos.avg_cost, led.basis / led.q, rel_tol=1e-9)
    total_pnl = sum((pf.quantity(s) * pf.prices.get(s, 0.0) * (50.0 if s == "ES" else 1.0)) for s in ref) + pf.cash - 1_000_000.0
    assert math.isclose(pf.realised + pf.unrealised - pf.costs["commission"], total_pnl, rel_tol=1e-9, abs_tol=1e-5)


def test_bad_fill_is_refused_and_leaves_the_account_untouched():
    pf = Portfolio(1000.0)
    for bad in (math.nan, math.inf, 0.0, -1.0):
        with pytest.raises(StateError, match="price"): pf.apply(Fill("o", "A", 1, bad, ts=0))
    with pytest.raises(StateError, match="quantity"): pf.apply(Fill("o", "A", math.nan, 1.0, ts=0))
    assert pf.cash == 1000.0 and not pf.positions


def test_invariant_catches_corrupted_books():
    pf = Portfolio(1000.0); pf.apply(Fill("o", "A", 2, 10.0, ts=0)); pf.mark({"A": 11.0})
    pf.cash += 0.01
    with pytest.raises(StateError, match="invariant"): pf.check()


def test_random_trading_on_real_prices_keeps_cash_plus_positions_equal_to_equity(shared_data):
    prices = pd.read_csv(shared_data / "pypfopt/stock_prices.csv", parse_dates=["date"], index_col="date").loc["2015":].iloc[:300]
    rng = np.random.default_rng(7)
    pf = Portfolio(1_000_000.0, borrow_rate=0.03)
    n = 0
    for ts, row in prices.iterrows():
        marks = row.dropna().to_dict(); pf.mark(marks)
        for s in rng.choice(list(marks), 3, replace=False):
            q = float(rng.integers(-200, 200)) or 1.0
            n += 1; pf.apply(Fill(f"o{n}", s, q, marks[s] * (1 + rng.normal(0, 0.001)), ts=ts, commission=1.0))
        pf.charge("borrow", pf.borrow_fee(1))
    held = {s: p.quantity for s, p in pf.positions.items() if p.quantity}
    value = sum(q * pf.prices[s] for s, q in held.items())
    assert math.isclose(pf.equity, pf.cash + value, rel_tol=1e-12)
    assert pf.costs["borrow"] > 0 and pf.costs["commission"] == n
    pf.check()


def test_borrow_fee_is_rate_over_360_per_calendar_day():
    pf = Portfolio(0.0, borrow_rate={"A": 0.05, "B": 0.0})
    pf.apply(Fill("o", "A", -200, 25.0, ts=0)); pf.apply(Fill("p", "B", -10, 10.0, ts=0)); pf.mark({"A": 30.0, "B": 10.0})
    assert math.isclose(pf.borrow_fee(3), 200 * 30.0 * 0.05 / 360 * 3)


def test_targets_round_to_lots_and_respect_minimum_trade():
    pf = Portfolio(1_000_000.0, instruments=[Instrument("ES", "future", multiplier=50), Instrument("SPY", lot_size=100)])
    pf.mark({"ES": 4000.0, "SPY": 400.0})
    orders = {o.symbol: o.quantity for o in orders_for_targets(pf, {"ES": 0.9, "SPY": 0.333})}
    assert orders == {"ES": 4.0, "SPY": 800.0}   # 4.5 contracts -> 4; 832.5 shares -> 8 lots of 100
    assert orders_for_targets(pf, {"SPY": 0.05}, min_trade_notional=50_000.0) == []   # 100 shares = 40,000
    assert orders_for_targets(pf, {"SPY": 0.05}, min_trade_notional=30_000.0)[0].quantity == 100


def load_sp500() -> pd.DataFrame:
    "arch.data.sp500.load() without importing arch (slow): the same CSV inside the installed package."
    import importlib.util
    from pathlib import Path
    path = Path(importlib.util.find_spec("arch").submodule_search_locations[0]) / "data" / "sp500" / "sp500.csv.gz"
    return pd.read_csv(path, index_col="Date", parse_dates=True, date_format="%m/%d/%Y")


def test_volatility_target_sizing_uses_real_sp500_vol():
    close = load_sp500()["Close"]
    vol = float(np.log(close).diff().iloc[-252:].std() * np.sqrt(252))
    pf = Portfolio(1_000_000.0); pf.mark({"SPX": float(close.iloc[-1])})
    [o] = orders_for_targets(pf, {"SPX": 1.0}, sizer=VolatilityTarget(0.10, max_leverage=2.0), volatility={"SPX": vol})
    expected = math.trunc(min(0.10 / vol, 2.0) * 1_000_000.0 / close.iloc[-1])
    assert o.quantity == expected and 0 < vol < 1


def test_fixed_quantity_and_fraction_sizers():
    pf = Portfolio(50_000.0); pf.mark({"A": 20.0})
    assert orders_for_targets(pf, {"A": -1.0}, sizer=FixedQuantity(300))[0].quantity == -300
    assert orders_for_targets(pf, {"A": 1.0}, sizer=FixedFraction(0.5))[0].quantity == 1250


def test_apply_catches_a_bookkeeping_bug_in_the_position_update(monkeypatch):
    pf = Portfolio(10_000.0); pf.apply(Fill("a", "A", 10, 100.0, ts=0))
    def buggy(self, quantity, price):   # forgets to realise P&L on a reduction
        self.quantity += quantity
        return 0.0
    monkeypatch.setattr(Position, "apply", buggy)
    with pytest.raises(StateError, match="invariant"): pf.apply(Fill("b", "A", -5, 120.0, ts=1))
