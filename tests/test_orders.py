"""Order types and the order state table: every valid and every invalid transition."""
import itertools

import pytest
from hypothesis import given, strategies as st

from quantlab.core import StateError, UsageError
from quantlab.trading.orders import (TERMINAL, TRANSITIONS, Fill, Order, OrderKind, OrderStatus, TimeInForce, bracket,
                             check_transition)

S = OrderStatus
# the table written out independently of quantlab.trading.orders.TRANSITIONS
VALID = {
    (S.NEW, S.SUBMITTED), (S.NEW, S.DENIED), (S.NEW, S.REJECTED), (S.NEW, S.CANCELLED),
    (S.SUBMITTED, S.PARTIALLY_FILLED), (S.SUBMITTED, S.FILLED), (S.SUBMITTED, S.CANCELLED),
    (S.SUBMITTED, S.REJECTED), (S.SUBMITTED, S.EXPIRED),
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED), (S.PARTIALLY_FILLED, S.FILLED), (S.PARTIALLY_FILLED, S.CANCELLED),
    (S.PARTIALLY_FILLED, S.EXPIRED),
    # the live states (IB_NOTES "Order semantics"): each is working exposure until the broker says otherwise
    (S.NEW, S.PENDING_SUBMIT),
    (S.PENDING_SUBMIT, S.SUBMITTED), (S.PENDING_SUBMIT, S.PARTIALLY_FILLED), (S.PENDING_SUBMIT, S.FILLED),
    (S.PENDING_SUBMIT, S.REJECTED), (S.PENDING_SUBMIT, S.CANCELLED), (S.PENDING_SUBMIT, S.INACTIVE), (S.PENDING_SUBMIT, S.UNKNOWN),
    (S.SUBMITTED, S.PENDING_CANCEL), (S.SUBMITTED, S.INACTIVE), (S.SUBMITTED, S.UNKNOWN),
    (S.PARTIALLY_FILLED, S.PENDING_CANCEL), (S.PARTIALLY_FILLED, S.INACTIVE), (S.PARTIALLY_FILLED, S.UNKNOWN),
    (S.PENDING_CANCEL, S.PARTIALLY_FILLED), (S.PENDING_CANCEL, S.FILLED), (S.PENDING_CANCEL, S.CANCELLED),
    (S.PENDING_CANCEL, S.EXPIRED), (S.PENDING_CANCEL, S.SUBMITTED), (S.PENDING_CANCEL, S.UNKNOWN),
    (S.INACTIVE, S.SUBMITTED), (S.INACTIVE, S.PARTIALLY_FILLED), (S.INACTIVE, S.FILLED), (S.INACTIVE, S.CANCELLED),
    (S.INACTIVE, S.REJECTED), (S.INACTIVE, S.UNKNOWN),
    (S.UNKNOWN, S.SUBMITTED), (S.UNKNOWN, S.PARTIALLY_FILLED), (S.UNKNOWN, S.FILLED), (S.UNKNOWN, S.CANCELLED),
    (S.UNKNOWN, S.REJECTED), (S.UNKNOWN, S.EXPIRED), (S.UNKNOWN, S.PENDING_CANCEL), (S.UNKNOWN, S.INACTIVE),
}
ALL_PAIRS = list(itertools.product(list(S), list(S)))


@pytest.mark.parametrize("old,new", sorted(VALID))
def test_valid_transition_is_allowed(old, new):
    assert check_transition(old, new) == new


@pytest.mark.parametrize("old,new", [p for p in ALL_PAIRS if p not in VALID])
def test_invalid_transition_raises(old, new):
    with pytest.raises(StateError, match=f"{old.value} -> {new.value}"):
        check_transition(old, new, "oid")


def test_terminal_states_are_the_five_final_ones():
    assert TERMINAL == {S.FILLED, S.CANCELLED, S.REJECTED, S.DENIED, S.EXPIRED}
    assert all(not TRANSITIONS[s] for s in TERMINAL)


@given(st.lists(st.sampled_from(list(S)), max_size=12))
def test_any_walk_through_the_machine_only_takes_table_edges(path):
    state = S.NEW
    for nxt in path:
        if (state, nxt) in VALID: state = check_transition(state, nxt)
        else:
            with pytest.raises(StateError): check_transition(state, nxt)


def test_order_kind_needs_its_prices():
    with pytest.raises(UsageError, match="limit_price"): Order("A", 1, "limit")
    with pytest.raises(UsageError, match="stop_price"): Order("A", 1, "stop_limit", limit_price=1.0)
    o = Order("A", -3, "stop_limit", limit_price=9.0, stop_price=9.5, tif="IOC")
    assert (o.kind, o.tif, o.side) == (OrderKind.STOP_LIMIT, TimeInForce.IOC, -1)


def test_order_is_immutable_and_replace_keeps_the_id():
    o = Order("A", 1, "limit", limit_price=10.0, client_id="c1")
    with pytest.raises(Exception): o.quantity = 2
    r = o.replace(limit_price=11.0)
    assert (r.client_id, r.limit_price, o.limit_price) == ("c1", 11.0, 10.0)


def test_bracket_children_are_opposite_oco_and_linked():
    entry, tp, sl = bracket("A", -50, take_profit=90.0, stop_loss=105.0, entry_limit=100.0, client_id="b")
    assert entry.kind == OrderKind.LIMIT and entry.quantity == -50
    assert tp.quantity == sl.quantity == 50 and tp.oco == sl.oco == "b" and tp.parent_id == sl.parent_id == "b"
    assert tp.kind == OrderKind.LIMIT and tp.limit_price == 90.0 and sl.kind == OrderKind.STOP and sl.stop_price == 105.0
    with pytest.raises(UsageError, match="wrong sides"): bracket("A", 10, take_profit=90.0, stop_loss=95.0)


def test_fill_notional_is_unsigned():
    assert Fill("c", "A", -4, 2.5, ts=0).notional == 10.0
