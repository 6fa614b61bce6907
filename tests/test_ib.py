"""Interactive Brokers: `IBBroker` and the live runner through the unmodified ib_async client, against the fake TWS
(quantlab.live.fake_tws) running as its own process on 127.0.0.1 and speaking IB's wire protocol.

Each fault scenario of ../shared/IB_NOTES.md is a named test (test_ib_scenario_NN_...). Every test fails when the
client logs "Error handling fields" (a message the fake mis-encoded would otherwise look like one that never came).
Tests marked `broker` run against a real IB Gateway / TWS paper account instead (see the README); CI skips them.
"""
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ib_async", reason="the ib extra is not installed: pip install 'quantlab[ib]'")

from quantlab.backtest.driver import run_backtest
from quantlab.live.fake_tws import FakeControl, start_fake
from quantlab.live.journal import Journal
from quantlab.live.runner import Runner, config_from_dict, parity
from quantlab.strategies import get_strategy
from quantlab.trading.brokers.ib import IBBroker, Pacer, historical_bars, ingest_history, spec_for
from quantlab.trading.brokers.sim import PerShare, SimBroker
from quantlab.trading.oms import OrderManager
from quantlab.trading.orders import Order, OrderStatus
from quantlab.trading.portfolio import Portfolio
from quantlab.trading.risk import RiskEngine, RiskLimits
from quantlab.trading.strategy import Strategy

PARAMS = {"fast": 5, "slow": 20}


class Crash(BaseException):
    "Stands in for the process dying at that line."


class _ClientLog(logging.Handler):
    def __init__(self):
        super().__init__(); self.bad = []
    def emit(self, record):
        msg = record.getMessage()
        if "Error handling fields" in msg or msg.startswith("Error for "): self.bad.append(msg[:400])


@pytest.fixture(autouse=True)
def client_decodes_everything():
    "Fail the test if the client could not decode a message the fake sent."
    h = _ClientLog(); log = logging.getLogger("ib_async")
    log.addHandler(h)
    yield
    log.removeHandler(h)
    assert not h.bad, f"the client could not decode: {h.bad[:3]}"


@pytest.fixture
def fake(tmp_path):
    with start_fake(tmp_path / "fake") as f: yield f


@pytest.fixture
def broker(fake, tmp_path):
    b = IBBroker(tmp_path / "state", {s: spec_for(s) for s in ("AAPL", "MSFT")}, port=fake.port, client_id=7, timeout=5, backoff=(0.05,))
    yield b
    b.close()


@pytest.fixture(scope="module")
def spx(spx_fields):
    return {k: v.iloc[:400] for k, v in spx_fields.items()}


@pytest.fixture(scope="module")
def spx150(spx_fields):
    "Enough bars for the crash scenarios (their crashes come by bar 60), at a third of the time."
    return {k: v.iloc[:150] for k, v in spx_fields.items()}


def _oms(broker, limits=None):
    pf = Portfolio(1_000_000.0)
    pf.prices.update({"AAPL": 190.0, "MSFT": 400.0})
    return OrderManager(broker, pf, RiskEngine(limits or RiskLimits()))


def _book(oms):
    "Pull the broker's reports into the OMS and the portfolio (what the engine's step does)."
    oms.broker.on_bar(0)
    for f in oms.sync(): oms.portfolio.apply(f)


def _reconnect(oms):
    "Step until the broker is connected again (it retries on its back-off: 0.05 s here)."
    for _ in range(100):
        _book(oms)
        if oms.broker.link == "up" and oms.broker.ib.isConnected(): return
        time.sleep(0.05)
    raise AssertionError(f"no reconnect: link {oms.broker.link}")


def _ib_config(tmp, fake, data, name="spx", start_bar=30, client_id=11, **extra):
    broker = {"kind": "ib", "port": fake.port, "client_id": client_id, "rehearsal_control": fake.control_port, "timeout": 5.0,
              **extra.pop("broker", {})}
    return config_from_dict({"name": name, "state_dir": str(tmp), "strategy": {"name": "sma_cross", "params": PARAMS}, "broker": broker,
                             "feed": {"start": str(data["close"].index[start_bar])}, **extra})


def _run(cfg, data, strategy=None, **kw):
    return Runner(cfg, strategy or get_strategy("sma_cross", **PARAMS), data).run(**kw)


def _journal_position(state_dir, symbol="SPX"):
    j = Journal(Path(state_dir) / "journal.sqlite", readonly=True)
    try: return sum(f.quantity for _, _, f in j.fills() if f.symbol == symbol)
    finally: j.close()


def _refs(fake):
    "orderRef of every order the fake ever received from the runner."
    return [o["order_ref"] for o in fake.control.state()["orders"] if o["order_ref"]]


# -- the wire: the unmodified client against every protocol version the fake speaks ---------------------------------
@pytest.mark.parametrize("version", [157, 163, 166, 176, 177, 178])
def test_the_unmodified_client_trades_on_every_server_version(tmp_path, version):
    import ib_async
    with start_fake(tmp_path / "fake", server_version=version) as fake:
        ib = ib_async.IB(); ib.connect("127.0.0.1", fake.port, clientId=3, timeout=5)
        try:
            assert ib.client.serverVersion() == version and ib.managedAccounts() == ["DU0000001"]
            [c] = ib.qualifyContracts(ib_async.Stock("AAPL", "SMART", "USD"))
            assert c.conId > 0 and c.primaryExchange == "NASDAQ"
            o = ib_async.LimitOrder("BUY", 10, 190.0); o.orderRef = "ref-1"
            t = ib.placeOrder(c, o); ib.sleep(0.1)
            fake.control.bar(symbol="AAPL", time=1_700_000_000, open=191.0, high=192.0, low=189.0, close=190.5)
            ib.reqCurrentTime()
            assert t.orderStatus.status == "Filled" and [(f.execution.shares, f.execution.price, f.commissionReport.commission) for f in t.fills] == [(10.0, 190.0, 1.0)]
            assert [(p.contract.symbol, p.position) for p in ib.reqPositions()] == [("AAPL", 10.0)]
            assert len(ib.reqExecutions()) == 1 and [x.order.orderRef for x in ib.reqCompletedOrders(False)] == ["ref-1"]
        finally: ib.disconnect(); ib.sleep(0)  # the socket closes on the next turn of the loop


def test_the_fake_keeps_its_account_across_its_own_restart(fake, broker):
    broker.submit(Order("AAPL", 100, client_id="k:1:AAPL:1")); broker.on_bar(0)
    fake.control.price(symbol="AAPL", price=190.0)
    broker.submit(Order("AAPL", 5, "limit", limit_price=100.0, tif="GTC", client_id="k:2:AAPL:1")); broker.on_bar(1)
    before = fake.control.state()
    fake.control.restart()
    after = fake.control.state()
    assert after["positions"] == before["positions"] == {"AAPL": 100.0} and after["cash"] == before["cash"]
    assert [o["status"] for o in after["orders"]] == ["Filled", "Submitted"] and after["executions"] == before["executions"]


# -- scenarios 1-3: crashes around the journal, over IB ---------------------------------------------------------------
def _crash_on(monkeypatch, cls, method, call):
    original, calls = getattr(cls, method), {"n": 0}
    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == call: raise Crash(f"{method} call {call}")
        return original(self, *a, **k)
    monkeypatch.setattr(cls, method, dying)
    return original


def _settle_fake_state(fake):
    "The fake's positions, with the runner gone (its connection is closed)."
    return fake.control.state()["positions"]


def test_ib_scenario_01_killed_after_the_intent_is_stored_before_it_is_sent(spx150, tmp_path, fake, monkeypatch):
    cfg = _ib_config(tmp_path / "state", fake, spx150)
    original = _crash_on(monkeypatch, IBBroker, "submit", 3)
    with pytest.raises(Crash): _run(cfg, spx150)
    monkeypatch.setattr(IBBroker, "submit", original)
    j = Journal(cfg.state_dir / "journal.sqlite")
    lost = j.con.execute("select client_id from orders where sent = 0").fetchone()[0]
    j.close()
    assert lost not in _refs(fake)
    _run(cfg, spx150)
    j = Journal(cfg.state_dir / "journal.sqlite")
    assert j.order(lost)["status"] == "never_sent"
    refs = _refs(fake)
    assert lost not in refs and len(refs) == len(set(refs))  # never sent under its id; no id sent twice
    assert lost.rsplit(":", 1)[0] + ":2" in refs  # the decision re-derived after the restart went out under the next id
    assert fake.control.state()["positions"].get("SPX", 0.0) == _journal_position(cfg.state_dir)


def test_ib_scenario_02_killed_after_send_before_the_ack_is_stored(spx150, tmp_path, fake, monkeypatch):
    cfg = _ib_config(tmp_path / "state", fake, spx150)
    seen, submit, sent = [], IBBroker.submit, Journal.sent
    monkeypatch.setattr(IBBroker, "submit", lambda self, o: (seen.append(self), submit(self, o))[1])
    def dying(self, cid, bar):
        if len(seen) == 4:
            seen[-1].barrier()  # the order has left the client (ib_async may hold it a moment to respect IB's 50 messages/s)
            raise Crash("after send, before the ack is stored")
        return sent(self, cid, bar)
    monkeypatch.setattr(Journal, "sent", dying)
    with pytest.raises(Crash): _run(cfg, spx150)
    monkeypatch.undo()
    j = Journal(cfg.state_dir / "journal.sqlite")
    unacked = j.con.execute("select client_id from orders where sent = 0").fetchone()[0]
    j.close()
    assert _refs(fake).count(unacked) == 1  # IB has it
    _run(cfg, spx150)
    assert Journal(cfg.state_dir / "journal.sqlite").order(unacked)["sent"] == 1  # found by its orderRef at reconciliation
    refs = _refs(fake)
    assert refs.count(unacked) == 1 and len(refs) == len(set(refs))  # exactly one broker order for it
    assert fake.control.state()["positions"].get("SPX", 0.0) == _journal_position(cfg.state_dir)


def test_ib_scenario_03_killed_after_a_broker_fill_before_it_is_stored(spx150, tmp_path, fake, monkeypatch):
    cfg = _ib_config(tmp_path / "state", fake, spx150)
    original = _crash_on(monkeypatch, Journal, "fill", 5)
    with pytest.raises(Crash): _run(cfg, spx150)
    monkeypatch.setattr(Journal, "fill", original)
    executions = fake.control.state()["executions"]
    j = Journal(cfg.state_dir / "journal.sqlite", readonly=True)
    journaled = {f.fill_id for _, _, f in j.fills()}; j.close()
    missed = [e["exec_id"] for e in executions if e["exec_id"] not in journaled]
    assert len(missed) == 1  # IB has a fill the journal lacks
    _run(cfg, spx150)
    j = Journal(cfg.state_dir / "journal.sqlite", readonly=True)
    ids = [f.fill_id for _, _, f in j.fills()]; j.close()
    assert ids.count(missed[0]) == 1  # applied once
    assert fake.control.state()["positions"].get("SPX", 0.0) == _journal_position(cfg.state_dir)


# -- scenarios 4-11: what IB's messages do --------------------------------------------------------------------------
def test_ib_scenario_04_a_duplicate_execution_is_counted_once(fake, broker):
    oms = _oms(broker)
    oms.submit(Order("AAPL", 100, client_id="d1")); broker.on_bar(0)
    fake.control.price(symbol="AAPL", price=190.0); _book(oms)
    [e] = fake.control.state()["executions"]
    fake.control.duplicate(exec_id=e["exec_id"]); _book(oms)  # live, again
    fake.control.drop()
    _reconnect(oms)  # ib_async re-reads today's executions
    assert oms.orders["d1"].filled == 100 and oms.portfolio.quantity("AAPL") == 100
    assert [f.quantity for f in broker.fills_since(0) if f.quantity] == [100.0]


def test_ib_scenario_05_an_execution_correction_replaces_the_earlier_fill(fake, broker):
    oms = _oms(broker)
    oms.submit(Order("AAPL", 100, client_id="c1")); broker.on_bar(0)
    fake.control.price(symbol="AAPL", price=190.0); _book(oms)
    [e] = fake.control.state()["executions"]
    assert e["exec_id"].endswith(".01")
    fake.control.correct(exec_id=e["exec_id"], shares=60, price=189.5); _book(oms)
    state = fake.control.state()
    [o] = state["orders"]
    assert oms.orders["c1"].filled == o["filled"] == 60  # the ledger's quantity equals the broker's filled
    assert oms.portfolio.quantity("AAPL") == state["positions"]["AAPL"] == 60
    assert oms.orders["c1"].status == OrderStatus.PARTIALLY_FILLED
    assert oms.portfolio.cash == pytest.approx(state["cash"], abs=1e-6)  # the reversed fill's commission went with it
    assert broker.ledger.execution(e["exec_id"][:-3])["exec_id"].endswith(".02")


@pytest.mark.parametrize("mode", ["delay", "sentinel"])
def test_ib_scenario_06_a_missing_late_or_sentinel_commission_is_pending_never_zero(fake, broker, mode):
    fake.control.knob(commission=mode)
    oms = _oms(broker)
    oms.submit(Order("AAPL", 300, client_id="m1")); broker.on_bar(0)
    fake.control.price(symbol="AAPL", price=190.0); _book(oms)
    [fill] = broker.fills_since(0)
    assert fill.commission == pytest.approx(1.5) and broker.pending_commissions() == [fill.fill_id]  # the estimate, marked pending
    if mode == "sentinel": assert (broker.ledger.events().kind == "commission_sentinel").sum() == 1
    assert oms.portfolio.costs["commission"] == pytest.approx(1.5)  # not 0
    fake.control.release_commissions(); _book(oms)
    assert broker.pending_commissions() == []
    assert oms.portfolio.cash == pytest.approx(fake.control.state()["cash"], abs=1e-9)


def test_ib_scenario_06_a_commission_report_before_its_execution_is_buffered(fake, broker):
    import datetime, ib_async
    broker._commission("feed.0001.01.01", 2.0)  # a report for an execution not yet seen: nothing to book yet
    assert broker.fills_since(0) == [] and broker.pending_commissions() == []
    ex = ib_async.Execution(execId="feed.0001.01.01", time=datetime.datetime(2024, 1, 5, 15, tzinfo=datetime.timezone.utc), side="BOT",
                            shares=300.0, price=190.0, permId=4242, clientId=99, orderRef="elsewhere")
    broker._on_exec(-1, broker.contracts["AAPL"], ex)  # then the execution comes: the buffered report is applied at once
    fill, adjustment = broker.fills_since(0)
    assert (fill.quantity, fill.commission) == (300.0, pytest.approx(1.5))  # the estimate
    assert (adjustment.quantity, adjustment.commission) == (0.0, pytest.approx(0.5)) and broker.pending_commissions() == []


def test_ib_scenario_07_an_execution_before_open_order_and_one_from_another_client_are_booked(fake, broker):
    fake.control.knob(exec_before_open=True, fill_on_place=True)
    fake.control.price(symbol="AAPL", price=190.0)
    oms = _oms(broker); oms.external = "adopt"
    oms.submit(Order("AAPL", 10, client_id="early")); _book(oms)
    assert oms.orders["early"].status == OrderStatus.FILLED
    fake.control.external(symbol="MSFT", quantity=-5, price=400.0); _book(oms)  # placed elsewhere
    external = [cid for cid, r in oms.orders.items() if r.tag == "external"]
    assert len(external) == 1 and external[0].startswith("ib:") and oms.portfolio.quantity("MSFT") == -5
    assert oms.portfolio.positions["AAPL"].quantity == 10


@pytest.mark.parametrize("code", [110, 404, 10147, 10349])
def test_ib_scenario_08_a_non_fatal_error_after_a_modify_leaves_the_order_live(fake, broker, code):
    oms = _oms(broker)
    oms.submit(Order("AAPL", 10, "limit", limit_price=150.0, tif="GTC", client_id="lim")); _book(oms)
    oms.replace("lim", limit_price=151.0); _book(oms)
    assert fake.control.state()["orders"][0]["lmt_price"] == 151.0
    fake.control.error(code=code, id=broker.ledger.order_id("lim")); _book(oms)
    assert oms.orders["lim"].status == OrderStatus.SUBMITTED  # live until IB says otherwise
    assert code in set(broker.ledger.events().query("kind == 'order_warning'").detail.map(lambda d: __import__("json").loads(d)["code"]))
    oms.cancel("lim"); _book(oms)
    assert oms.orders["lim"].status == OrderStatus.CANCELLED  # and IB's confirmation ends it


def test_ib_scenario_09_a_cancel_that_races_a_fill_books_the_fill(fake, broker):
    oms = _oms(broker)
    oms.submit(Order("AAPL", 10, "limit", limit_price=150.0, client_id="race")); _book(oms)
    fake.control.knob(cancel="refuse")  # the fill reaches IB first: 10148 "cannot be cancelled"
    fake.control.price(symbol="AAPL", price=149.0)
    oms.cancel("race"); _book(oms)
    assert oms.orders["race"].status == OrderStatus.FILLED and oms.portfolio.quantity("AAPL") == 10
    codes = broker.ledger.events().query("kind == 'order_warning'").detail
    assert codes.str.contains("10148").any()


def test_ib_scenario_10_a_cancel_never_acknowledged_stays_pending_and_counts_as_exposure(fake, broker):
    oms = _oms(broker)
    oms.submit(Order("AAPL", 10, "limit", limit_price=150.0, client_id="stuck")); _book(oms)
    fake.control.knob(cancel="ignore")
    oms.cancel("stuck")
    for _ in range(3): _book(oms)
    assert oms.orders["stuck"].status == OrderStatus.PENDING_CANCEL and oms.working() == {"AAPL": 10.0}
    fake.control.price(symbol="AAPL", price=149.0); _book(oms)  # a fill can still arrive
    assert oms.orders["stuck"].status == OrderStatus.FILLED


class CancelAtBar(Strategy):
    "Places a resting buy limit at bar 35 and cancels it at bar 40."
    def on_bar(self, ctx):
        if ctx.i == 35: ctx.order(ctx.symbols[0], 5, limit=ctx.price() * 0.5, tif="GTC")
        if ctx.i == 40:
            for r in ctx.open_orders(): ctx.cancel(r.client_id)


def test_ib_scenario_10_the_runner_alerts_on_an_unacknowledged_cancel(spx, tmp_path, fake):
    cfg = _ib_config(tmp_path / "state", fake, spx, name="cancel")
    fake.control.knob(cancel="ignore")
    st = _run(cfg, spx, CancelAtBar(), max_bars=50)
    assert [o["status"] for o in st["working_orders"]] == ["pending_cancel"]
    alerts = Journal(cfg.state_dir / "journal.sqlite").frame().query("kind == 'alert'").detail
    assert alerts.str.contains("not acknowledged by the broker after 3 bars").sum() == 1


def test_ib_scenario_11_inactive_is_still_exposure_until_cancelled(fake, broker):
    oms = _oms(broker)
    oms.submit(Order("AAPL", 10, "limit", limit_price=150.0, client_id="inact")); _book(oms)
    fake.control.status(status="Inactive", order_ref="inact"); _book(oms)
    assert oms.orders["inact"].status == OrderStatus.INACTIVE and oms.working() == {"AAPL": 10.0}
    fake.control.status(status="Cancelled", order_ref="inact"); _book(oms)
    assert oms.orders["inact"].status == OrderStatus.CANCELLED and oms.working() == {}


# -- scenarios 12-13: the connection ----------------------------------------------------------------------------------
def test_ib_scenario_12_orders_are_refused_while_the_link_is_down_and_missed_fills_come_once(fake, broker):
    oms = _oms(broker)
    oms.submit(Order("AAPL", 10, "limit", limit_price=150.0, client_id="w1")); _book(oms)
    fake.control.error(code=1100); _book(oms)
    assert broker.link == "down" and ("link_down", "IB 1100: Connectivity between IB and Trader Workstation has been lost.") in broker.changes()
    oms.submit(Order("MSFT", 5, client_id="while-down")); _book(oms)
    assert oms.orders["while-down"].status == OrderStatus.REJECTED and "link to IB is down" in oms.orders["while-down"].reason
    assert "while-down" not in _refs(fake)
    fake.control.drop()  # and then the socket goes: fills happen that the client cannot hear
    fake.control.price(symbol="AAPL", price=149.0)
    fake.control.error(code=1102)
    _reconnect(oms)  # executions, open and completed orders, positions re-read
    assert oms.orders["w1"].status == OrderStatus.FILLED and oms.portfolio.quantity("AAPL") == 10
    _book(oms)
    assert [f.fill_id for f in broker.fills_since(0) if f.quantity].count(fake.control.state()["executions"][0]["exec_id"]) == 1


def test_ib_scenario_12_the_runner_pauses_while_the_link_is_down_and_reconciles_when_restored(spx, tmp_path, fake):
    cfg = _ib_config(tmp_path / "state", fake, spx)
    _run(cfg, spx, max_bars=60)
    fake.control.error(code=1100)  # heard by nobody: the runner is not connected now
    r = Runner(cfg, get_strategy("sma_cross", **PARAMS), spx)
    class Once:
        def __init__(self, feed): self.feed = feed
        def __call__(self, after):
            for k, bar in enumerate(self.feed(after)):
                if k == 2: fake.control.error(code=1100)
                if k == 6: fake.control.error(code=1101)
                yield bar
    r.feed = Once(r.feed)
    r.run(max_bars=10)
    ev = Journal(cfg.state_dir / "journal.sqlite").frame()
    stale, fresh = ev[ev.kind == "feed_stale"], ev[ev.kind == "feed_fresh"]
    assert stale.detail.str.startswith("IB link: IB 1100").any() and fresh.detail.str.startswith("IB link: IB 1101").any()
    assert (ev.kind == "reconcile").sum() >= 3 and ev[ev.kind == "reconcile"].detail.iloc[-1].startswith('{"status": "ok"')


def test_reconnects_back_off_while_the_gateway_is_gone(fake, tmp_path):
    b = IBBroker(tmp_path / "state", {"AAPL": spec_for("AAPL")}, port=fake.port, client_id=9, timeout=2, backoff=(0.1, 0.2, 0.4))
    try:
        fake.kill()  # the gateway is gone, not just the connection
        t = time.monotonic()
        while time.monotonic() - t < 2.0: b.on_bar(0); time.sleep(0.01)
        assert b.link == "down" and ("link_down", "the connection to IB closed") in b.changes()
        waits = [float(d.split("next try in ")[1].split(" s")[0]) for d in b.ledger.events().query("kind == 'reconnect_failed'").detail.map(__import__("json").loads)]
        assert waits[:3] == [0.2, 0.4, 0.4] and 3 <= len(waits) <= 8  # backing off, not hammering
        b.submit(Order("AAPL", 1, client_id="gone"))
        assert b.updates_since(0)[-1].status == OrderStatus.REJECTED and "link to IB is down" in b.updates_since(0)[-1].reason
    finally: b.close()


def test_ib_scenario_13_next_valid_id_going_backwards_reuses_no_id(fake, broker):
    oms = _oms(broker)
    for k in range(3): oms.submit(Order("AAPL", 1, "limit", limit_price=100.0, tif="GTC", client_id=f"a{k}"))
    _book(oms)
    fake.control.restart(next_valid_id=1)  # a gateway restart that forgot its ids
    _reconnect(oms)
    for k in range(3): oms.submit(Order("AAPL", 1, "limit", limit_price=100.0, tif="GTC", client_id=f"b{k}"))
    _book(oms)
    ids = [o["order_id"] for o in fake.control.state()["orders"]]
    assert len(ids) == 6 and len(set(ids)) == 6 and min(ids[3:]) > max(ids[:3])


# -- scenarios 14-16: reconciliation and data -------------------------------------------------------------------------
def test_ib_scenario_14_a_reconciliation_query_that_times_out_halts_and_books_nothing(spx, tmp_path, fake):
    cfg = _ib_config(tmp_path / "state", fake, spx, broker={"timeout": 2.0})
    _run(cfg, spx, max_bars=150)
    before = fake.control.state()["positions"]
    fake.control.knob(hold=["positions"])  # IB never answers reqPositions
    st = _run(cfg, spx, max_bars=20)
    assert st["trading_state"]["state"] == "HALTED" and "unknown" in st["trading_state"]["reason"]
    assert st["last_reconciliation"]["status"] == "unknown"
    assert fake.control.state()["positions"] == before  # halted: nothing flattened, nothing new


def test_ib_scenario_15_a_position_that_differs_at_start_halts_that_instrument(spx, tmp_path, fake):
    cfg = _ib_config(tmp_path / "state", fake, spx)
    _run(cfg, spx, max_bars=150)
    held = fake.control.state()["positions"].get("SPX", 0.0)
    fake.control.set_position(symbol="SPX", quantity=held + 7)
    orders = len(_refs(fake))
    st = _run(cfg, spx, max_bars=30)
    own = st["trading_state"]["symbols"]["SPX"]
    assert own["state"] == "HALTED" and f"SPX: journal {held:g}, broker {held + 7:g}" in own["reason"]
    assert len(_refs(fake)) == orders  # no corrective trade
    assert fake.control.state()["positions"]["SPX"] == held + 7


def test_ib_scenario_16_a_silent_data_farm_stops_new_orders_and_cancels_still_go(fake, broker, tmp_path, spx):
    cfg = _ib_config(tmp_path / "state", fake, spx, name="farm")
    r = Runner(cfg, CancelAtBar(), spx)
    class Farm:
        def __init__(self, feed): self.feed = feed
        def __call__(self, after):
            for k, bar in enumerate(self.feed(after)):
                if k == 38: fake.control.error(code=2103)  # broken while the limit rests; the strategy cancels it at bar 40
                if k == 45: fake.control.error(code=2104)
                yield bar
    r.feed = Farm(r.feed)
    st = r.run(max_bars=50)
    ev = Journal(cfg.state_dir / "journal.sqlite").frame()
    assert ev[ev.kind == "feed_stale"].detail.str.contains("IB data farm: IB 2103").any()
    assert ev[ev.kind == "feed_fresh"].detail.str.contains("IB data farm: IB 2104").any()
    assert st["working_orders"] == [] and [o["status"] for o in fake.control.state()["orders"]] == ["Cancelled"]


def test_ib_ingest_and_feed_on_stale_data_use_the_session_calendar(fake, broker, tmp_path, spx_fields):
    from quantlab.trading.brokers.ib import IBFeed
    feed = IBFeed(broker, ["AAPL"], bar="1min", calendar="XNYS", stale_after=None)
    assert feed.period_end(pd.Timestamp("2024-01-05 14:30:00", tz="UTC")) == pd.Timestamp("2024-01-05 14:31", tz="UTC")
    assert feed.period_end(pd.Timestamp("2024-01-05 20:59:55", tz="UTC")) == pd.Timestamp("2024-01-05 21:00", tz="UTC")
    assert feed.period_end(pd.Timestamp("2024-01-06 15:00:00", tz="UTC")) is None  # a Saturday


# -- scenarios 17-18: checks before the broker hears anything -----------------------------------------------------------
@pytest.mark.parametrize("order,field", [
    (Order("AAPL", float("nan")), "quantity"), (Order("AAPL", float("inf")), "quantity"), (Order("AAPL", 0.0), "quantity"),
    (Order("AAPL", 10, "limit", limit_price=-1.0), "limit_price"), (Order("AAPL", 10, "limit", limit_price=1.7976931348623157e308), "limit_price"),
    (Order("AAPL", 10, "stop", stop_price=float("nan")), "stop_price")])
def test_ib_scenario_17_bad_prices_and_sizes_never_reach_ib(fake, broker, order, field):
    oms = _oms(broker)
    rec = oms.submit(order); _book(oms)
    assert rec.status == OrderStatus.DENIED and field in rec.reason
    assert fake.control.state()["orders"] == []


def test_ib_scenario_18_limits_ticks_and_the_price_collar_deny_before_sending(fake, broker):
    oms = _oms(broker, RiskLimits(max_order_quantity=100, max_order_notional=50_000, price_band=0.05, enforce_ticks=True))
    denied = [oms.submit(o) for o in (Order("AAPL", 500), Order("AAPL", 90, "limit", limit_price=600.0),
                                      Order("AAPL", 10, "limit", limit_price=190.001), Order("AAPL", 10, "limit", limit_price=150.0))]
    assert [r.status for r in denied] == [OrderStatus.DENIED] * 4
    ok = oms.submit(Order("AAPL", 10, "limit", limit_price=189.5)); _book(oms)
    assert ok.status == OrderStatus.SUBMITTED and [o["order_ref"] for o in fake.control.state()["orders"]] == [ok.client_id]


# -- scenarios 19-23 ---------------------------------------------------------------------------------------------------
def test_ib_scenario_19_daily_loss_halt_cancels_at_ib_survives_a_restart_and_leaves_only_by_resume(spx, tmp_path, fake):
    cfg = _ib_config(tmp_path / "state", fake, spx, risk={"max_daily_loss": 0.005})
    st = _run(cfg, spx, max_bars=200)
    assert st["trading_state"]["state"] == "HALTED" and "daily loss" in st["trading_state"]["reason"]
    assert not [o for o in fake.control.state()["orders"] if o["status"] in ("Submitted", "PreSubmitted", "PendingCancel")]
    assert _run(cfg, spx, max_bars=20)["trading_state"]["state"] == "HALTED"
    j = Journal(cfg.state_dir / "journal.sqlite"); j.command("resume", "loss reviewed"); j.close()
    assert _run(cfg, spx, max_bars=1)["trading_state"]["state"] == "ACTIVE"


def test_ib_scenario_20_pacing_waits_backs_off_on_162_and_never_crashes(fake, broker):
    bars = [[1_700_000_000 + 86400 * k, 100.0 + k, 101.0 + k, 99.0 + k, 100.5 + k, 1e6] for k in range(30)]
    fake.control.history(symbol="AAPL", bar_size="1 day", bars=bars)
    slept = []
    end = pd.Timestamp(bars[-1][0], unit="s", tz="UTC")
    first = historical_bars(broker, "AAPL", end, "1 day", "1 M", sleep=slept.append)
    assert len(first) == 30 and slept == []
    fake.control.knob(pacing={"identical": 0.3})  # (the fake's 15 s rule shrunk to 0.3 s, so that the back-off can wait it out here)
    broker.pacer = Pacer(identical=0.0, burst=100, per_window=1000)  # a pacer that lets an identical request through at once
    again = historical_bars(broker, "AAPL", end, "1 day", "1 M", sleep=lambda s: (slept.append(s), time.sleep(0.35)))
    assert slept == [15.0] and len(again) == 30  # IB refused it (162, pacing): backed off, retried, no crash
    fake.control.knob(pacing=True)
    assert (broker.ledger.events().kind == "pacing_violation").sum() == 1
    broker.pacer = Pacer()
    broker.pacer.sent_now(str(broker.contracts["AAPL"].conId), "x", time.monotonic())
    for k in range(5): broker.pacer.sent_now(str(broker.contracts["AAPL"].conId), f"y{k}", time.monotonic())
    historical_bars(broker, "AAPL", end - pd.Timedelta("1D"), "1 day", "1 M", sleep=slept.append)
    assert 1.0 < slept[-1] <= 2.0  # the pacer waited rather than break the 6-in-2-seconds rule
    assert fake.control.state()["orders"] == []


def test_ib_ingest_history_is_paced_resumable_and_stamps_available_at(fake, broker, tmp_path, spx_fields):
    from quantlab.data.store import BarStore
    close = spx_fields["close"]["SPX"].loc["2010-01-01":"2011-12-31"]
    opens = spx_fields["open"]["SPX"].reindex(close.index)
    rows = [[int(t.timestamp()), float(o), float(max(o, c)), float(min(o, c)), float(c), 1e6] for t, o, c in zip(close.index, opens, close)]
    fake.control.history(symbol="AAPL", bar_size="1 day", bars=rows)
    store = BarStore(tmp_path / "store")
    got = ingest_history(broker, store, "AAPL", duration="2 Y", bar_size="1 day", end="2011-12-31", sleep=lambda s: None)
    assert got["windows"] == 3 and got["rows"] == len(close)  # (the third window, 2009, has no data: IB's 162 "no data", not an error)
    bars = store.read_bars(["AAPL"])
    assert len(bars) == got["rows"] and (bars["available_at"] >= bars["ts"]).all()
    assert bars["ts"].iloc[-1] == pd.Timestamp("2011-12-30 21:00", tz="UTC")  # stamped at the session close
    again = ingest_history(broker, store, "AAPL", duration="2 Y", bar_size="1 day", end="2011-12-31", sleep=lambda s: None)
    assert again["rows"] == 0  # resumed: every window was done


class Twice(Strategy):
    "Sends the same order (one client id) twice on one bar, and again on the next bar."
    def on_bar(self, ctx):
        if ctx.i in (40, 41):
            for _ in range(2): ctx.submit(Order(ctx.symbols[0], 10, client_id="same-signal"))


def test_ib_scenario_21_the_same_signal_twice_is_one_ib_order(spx, tmp_path, fake):
    cfg = _ib_config(tmp_path / "state", fake, spx, name="twice")
    _run(cfg, spx, Twice(), max_bars=60)
    assert _refs(fake) == ["same-signal"] and len(fake.control.state()["executions"]) == 1


def test_an_order_has_left_the_process_when_submit_returns_even_while_the_client_throttles(fake, broker):
    for k in range(60): broker.ib.client.reqCurrentTime()  # past 45 requests a second: ib_async queues what follows
    assert broker._throttled
    broker.submit(Order("AAPL", 1, client_id="queued"))  # the runner journals "sent" right after this returns
    deadline = time.monotonic() + 2
    while "queued" not in _refs(fake) and time.monotonic() < deadline: time.sleep(0.01)
    assert "queued" in _refs(fake)  # a kill -9 now would not lose it


def test_ib_scenario_21_a_retry_of_submit_is_one_ib_order(fake, broker):
    for _ in range(3): broker.submit(Order("AAPL", 1, client_id="retry"))
    broker.on_bar(0)
    assert _refs(fake) == ["retry"] and (broker.ledger.events().kind == "duplicate_submit").sum() == 2


class Resting(Strategy):
    "A GTC buy limit far below the market, placed once: it rests at IB across restarts."
    def on_bar(self, ctx):
        if ctx.i == 35: ctx.order(ctx.symbols[0], 5, limit=ctx.price() * 0.5, tif="GTC")


def test_ib_scenario_23_a_gateway_restart_keeps_working_orders_and_fills_and_reconciles(spx, tmp_path, fake):
    cfg = _ib_config(tmp_path / "state", fake, spx, name="rest")
    _run(cfg, spx, Resting(), max_bars=60)
    fake.control.restart()  # the gateway restarts between sessions (its state from disk)
    st = _run(cfg, spx, Resting(), max_bars=10)
    assert [o["status"] for o in st["working_orders"]] == ["submitted"]
    assert [o["order_ref"] for o in fake.control.state()["orders"] if o["status"] == "Submitted"] == [st["working_orders"][0]["client_id"]]
    assert st["last_reconciliation"]["status"] == "ok"


# -- parity: the backtest's decisions, through IB ------------------------------------------------------------------------
def test_a_rehearsal_through_ib_makes_the_backtests_fills(spx, tmp_path, fake):
    cfg = _ib_config(tmp_path / "state", fake, spx)
    st = _run(cfg, spx)
    bt = run_backtest(get_strategy("sma_cross", **PARAMS), spx, broker=SimBroker(commission=PerShare.ib_fixed()), start=cfg.start)
    verdict = parity(Journal(cfg.state_dir / "journal.sqlite"), bt.fills)
    assert verdict["equal"] and verdict["fills"] == len(bt.fills) > 20, verdict
    assert st["trading_state"]["state"] == "ACTIVE" and st["last_reconciliation"]["status"] == "ok"
    final = bt.positions.iloc[-1]
    assert fake.control.state()["positions"].get("SPX", 0.0) == final["SPX"]
    ev = Journal(cfg.state_dir / "journal.sqlite").frame()
    perms = dict(zip(ev.loc[ev.kind == "perm_id", "client_id"], ev.loc[ev.kind == "perm_id", "detail"].astype(int)))
    assert perms == {o["order_ref"]: o["perm_id"] for o in fake.control.state()["orders"]}  # IB's permId of every order, journaled


# -- the crash test over IB: kill -9 at random points while the fake keeps running -----------------------------------------
CHILD = """
import logging, sys, pandas as pd
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from quantlab.live.runner import Runner, config_from_dict
from quantlab.strategies import get_strategy
panels = pd.read_pickle(sys.argv[2])
cfg = config_from_dict({"name": "spx", "state_dir": sys.argv[1], "strategy": {"name": "sma_cross", "params": %r},
                        "broker": {"kind": "ib", "port": int(sys.argv[4]), "client_id": 21, "rehearsal_control": int(sys.argv[5]), "timeout": 5.0},
                        "feed": {"start": sys.argv[3]}, "alerts": {"sinks": []}})
Runner(cfg, get_strategy("sma_cross", **%r), panels).run()
""" % (PARAMS, PARAMS)


def _bars_in(journal: Path) -> int:
    if not journal.exists(): return -1
    try:
        con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try: return con.execute("select count(*) from bars").fetchone()[0]
        finally: con.close()
    except sqlite3.Error: return -1


def test_ib_kill_9_at_30_random_points_gives_one_order_per_intent_and_the_fakes_position(spx, tmp_path, fake):
    """kill -9 the runner at `QUANTLAB_IB_CRASH_KILLS` (30) random points while the fake TWS keeps running; restart it each
    time, then run to the end. A fifth of the kills land while it starts (imports, recovery, connecting, reconciling); the
    rest 0-30 ms after it journaled a new bar, anywhere in that bar's writes and messages."""
    kills, seed = int(os.environ.get("QUANTLAB_IB_CRASH_KILLS", "30")), int(os.environ.get("QUANTLAB_CRASH_SEED", "20261203"))
    rng = random.Random(seed)
    pd.to_pickle(spx, tmp_path / "panels.pkl")
    state = tmp_path / "state"
    args = [sys.executable, "-c", CHILD, str(state), str(tmp_path / "panels.pkl"), str(spx["close"].index[30]), str(fake.port), str(fake.control_port)]
    journal, points, logs = state / "journal.sqlite", [], []
    while len(points) < kills:
        held = _bars_in(journal)
        p = subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        if rng.random() < 0.2:  # within its start: after the drawn delay, or at its first new bar if that comes sooner
            point = ("start", round(rng.uniform(0.5, 3.0), 3))
            deadline = time.monotonic() + point[1]  # (a fixed sleep let a fast start trade to the end before the kill)
            while p.poll() is None and time.monotonic() < deadline and _bars_in(journal) <= held: time.sleep(0.005)
        else:
            point = ("trading", round(rng.uniform(0.0, 0.03), 3))
            while p.poll() is None and _bars_in(journal) <= held + 1: time.sleep(0.005)
            time.sleep(point[1])
        if p.poll() is not None: logs.append(p.stderr.read()); p.stderr.close(); break
        p.send_signal(signal.SIGKILL); p.wait(); logs.append(p.stderr.read()); p.stderr.close()
        points.append(point)
    print(f"seed {seed}: {len(points)} kills {points}")
    end = subprocess.run(args, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    logs.append(end.stderr)
    assert end.returncode == 0, end.stderr[-3000:]
    assert len(points) == kills, f"the session ended after {len(points)} kills"
    assert not [line for log in logs for line in log.splitlines() if "Error handling fields" in line]
    j = Journal(journal, readonly=True)
    sent = j.orders().query("sent == 1")["client_id"].tolist()
    st = j.state("trading_state"); j.close()
    refs = _refs(fake)
    intents = set(Journal(journal, readonly=True).orders()["client_id"])
    assert sorted(refs) == sorted(set(refs)) and set(sent) <= set(refs) <= intents  # exactly one IB order per intent that went out
    never = set(Journal(journal, readonly=True).orders().query("status == 'never_sent'")["client_id"])
    assert not never & set(refs)
    assert fake.control.state()["positions"].get("SPX", 0.0) == _journal_position(state)  # the final position is the fake's
    assert st["state"] == "ACTIVE"


# -- a real paper account (IB Gateway or TWS on 127.0.0.1): run by hand, skipped in CI ------------------------------------
@pytest.mark.broker
def test_a_real_paper_account_round_trip(tmp_path):
    port = int(os.environ.get("QUANTLAB_IB_PORT", "0"))
    if not port: pytest.skip("no IB Gateway: set QUANTLAB_IB_PORT (4002 Gateway paper, 7497 TWS paper) and run with -m broker")
    b = IBBroker(tmp_path, {"SPY": spec_for("SPY", primary_exchange="ARCA")}, port=port, client_id=int(os.environ.get("QUANTLAB_IB_CLIENT_ID", "97")),
                 account=os.environ.get("QUANTLAB_IB_ACCOUNT"))
    try:
        assert b.account.startswith("D"), f"{b.account} is not a paper account (paper accounts start with D)"
        b.submit(Order("SPY", 1, "limit", limit_price=1.0, tif="DAY", client_id=f"quantlab-test-{int(time.time())}"))
        b.on_bar(0)
        assert any(o.limit_price == 1.0 for o in b.open_orders())
        b.cancel(b.ledger.orders()["client_id"].iloc[-1])
        for _ in range(10): b.on_bar(0); time.sleep(0.5)
        assert any(u.status == OrderStatus.CANCELLED for u in b.updates_since(0))
    finally: b.close()


# -- the real-time feed, scenario 22 over IB, and the command line ---------------------------------------------------------
def test_ib_feed_builds_session_bars_from_5_second_bars_and_reports_silence(fake, broker):
    from quantlab.trading.brokers.ib import IBFeed
    from quantlab.trading.feed import FeedStatus
    t0 = int(pd.Timestamp("2024-01-05 14:30:00", tz="UTC").timestamp())  # NYSE opens 09:30 New York
    batches = [[{"symbol": s, "time": t0 + 5 * k, "open": p + k, "high": p + k + 0.5, "low": p + k - 0.5, "close": p + k + 0.25, "volume": 100.0}
                for s, p in (("AAPL", 180.0), ("MSFT", 370.0))] for k in range(14)]  # 70 s of 5-second bars
    now = {"t": t0}
    def until():
        if batches: fake.control.bars(bars=batches.pop(0))
        elif now["t"] < t0 + 400: now["t"] += 100; fake.control.knob(market_data=False)
        return now["t"] >= t0 + 400
    feed = IBFeed(broker, ["AAPL", "MSFT"], bar="1min", stale_after=150, grace=5.0, poll=0.02, clock=lambda: now["t"], until=until)
    out = list(feed)
    bars = [b for b in out if not isinstance(b, FeedStatus)]
    assert [b.time for b in bars[:1]] == [pd.Timestamp("2024-01-05 14:31", tz="UTC")]
    first = bars[0]
    assert first.values["open"].tolist() == [180.0, 370.0] and first.values["close"].tolist() == [191.25, 381.25]  # 12 bars: 0..11
    assert first.values["high"].tolist() == [191.5, 381.5] and first.values["volume"].tolist() == [1200.0, 1200.0]
    assert any(isinstance(b, FeedStatus) and b.kind == "stale" for b in out)  # the farm went quiet while the market was open


def _rows(path) -> int:
    "Orders in an IB ledger being written by another process (0 until its table exists)."
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try: return con.execute("select count(*) from ids").fetchone()[0]
        finally: con.close()
    except sqlite3.Error: return 0


def test_ib_scenario_22_kill_9_during_ledger_and_journal_writes_leaves_both_sound(tmp_path):
    code = ("import sys, json; from quantlab.trading.brokers.ib import IBLedger; from quantlab.trading.orders import Order, Fill\n"
            "l = IBLedger(sys.argv[1])\nfor k in range(10**6):\n"
            "    o = Order('SPX', 1, client_id=f'c{k}'); l.sent(o, k + 1)\n"
            "    l.record(Fill(f'c{k}', 'SPX', 1.0, 100.0, 0, 1.0, fill_id=f'e{k}.01'), k + 1000, 1.0)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ib.sqlite")])
    deadline = time.monotonic() + 60  # kill it mid-write once it is writing (its start takes seconds on a loaded machine)
    while time.monotonic() < deadline and _rows(tmp_path / "ib.sqlite") <= 10: time.sleep(0.05)
    time.sleep(0.5); p.send_signal(signal.SIGKILL); p.wait()
    con = sqlite3.connect(tmp_path / "ib.sqlite")
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    ids, execs = con.execute("select count(*) from ids").fetchone()[0], con.execute("select count(*) from executions").fetchone()[0]
    assert ids > 10 and execs in (ids - 1, ids)  # each write is whole: at most the last order lacks its execution
    from quantlab.trading.brokers.ib import IBLedger
    assert IBLedger(tmp_path / "ib.sqlite").max_order_id() == ids  # a restart's next id is above every id used


def test_the_command_line_runs_a_rehearsal_through_the_fake_tws(tmp_path):
    fake = subprocess.Popen([sys.executable, "-m", "quantlab.cli", "live", "fake-tws", "--state", str(tmp_path / "fake"), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        ports = __import__("json").loads(fake.stdout.readline())
        env = {**os.environ, "QUANTLAB_DATA_DIR": str(tmp_path / "data")}
        run = subprocess.run([sys.executable, "-m", "quantlab.cli", "live", "run", "sma_cross", "--name", "cli", "-p", "fast", "5", "-p", "slow", "20",
                              "--end", "2000-06-30", "--broker", "ib", "--port", str(ports["port"]), "--client-id", "41",
                              "--rehearse", str(ports["control_port"]), "--json"], env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        st = __import__("json").loads(run.stdout)
        assert st["parity"]["equal"] and st["parity"]["fills"] > 5 and st["trading_state"]["state"] == "ACTIVE"
        ctl = FakeControl(ports["control_port"])
        assert ctl.state()["executions"]
        ctl.close()
    finally:
        if fake.poll() is None: ctl = FakeControl(ports["control_port"]); ctl.call("shutdown"); ctl.close()
        fake.wait(10); fake.stdout.close()


def test_the_command_line_ingests_ib_history_into_the_store(tmp_path, fake, spx_fields):
    close = spx_fields["close"]["SPX"].loc["2011-01-01":"2011-12-31"]
    fake.control.history(symbol="SPY", bar_size="1 day", bars=[[int(t.timestamp()), float(c), float(c) + 1, float(c) - 1, float(c), 1e6] for t, c in close.items()])
    env = {**os.environ, "QUANTLAB_DATA_DIR": str(tmp_path / "data")}
    run = subprocess.run([sys.executable, "-m", "quantlab.cli", "data", "ingest-ib", "SPY", "--duration", "1 Y", "--end", "2011-12-31",
                          "--port", str(fake.port), "--primary-exchange", "ARCA"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"ingested {len(close)} bars of SPY" in run.stdout
    from quantlab.data.store import BarStore
    assert len(BarStore(tmp_path / "data").read_bars(["SPY"])) == len(close)


# -- contracts, brackets, the real-time feed in the runner, slippage in the parity check ---------------------------------
def test_futures_and_fx_contracts_are_qualified_cached_and_traded(fake, tmp_path):
    from quantlab.core import Instrument
    fake.control.contract(symbol="ES", secType="FUT", lastTradeDateOrContractMonth="20261218", exchange="CME", primaryExchange="",
                          multiplier="50", localSymbol="ESZ6", tradingClass="ES", minTick=0.25)
    fake.control.contract(symbol="EUR", secType="CASH", exchange="IDEALPRO", primaryExchange="", localSymbol="EUR.USD", tradingClass="EUR.USD",
                          minTick=0.00005)
    specs = {"ESZ6": spec_for(Instrument("ESZ6", "future", multiplier=50, tick_size=0.25), ib_symbol="ES", last_trade="202612", multiplier="50"),
             "EURUSD": spec_for(Instrument("EURUSD", "fx"))}
    b = IBBroker(tmp_path / "state", specs, port=fake.port, client_id=8, timeout=5)
    try:
        assert b.contracts["ESZ6"].secType == "FUT" and b.contracts["EURUSD"].secType == "CASH" and b.contracts["ESZ6"].multiplier == "50"
        b.submit(Order("ESZ6", 2, client_id="f1")); b.submit(Order("EURUSD", 100_000, client_id="x1")); b.on_bar(0)
        fake.control.price(symbol="ES", price=6000.0); fake.control.price(symbol="EUR", price=1.1); b.on_bar(1)
        assert b.positions() == {"ESZ6": 2.0, "EURUSD": 100_000.0}
        assert fake.control.state()["cash"] == pytest.approx(1_000_000 - 2 * 6000.0 * 50 - 100_000 * 1.1 - 1.0 - 500.0)  # the multiplier counts
    finally: b.close()
    cached = __import__("json").loads((tmp_path / "state" / "contracts.json").read_text())
    assert set(cached) == {"ESZ6", "EURUSD"}
    fake.control.knob(hold=["contract_details"])  # IB would not answer now: a restart must not need it
    b = IBBroker(tmp_path / "state", specs, port=fake.port, client_id=8, timeout=2)
    b.close()


def test_a_bracket_goes_to_ib_as_its_entry_then_an_oca_pair(fake, broker):
    from quantlab.trading.orders import bracket
    oms = _oms(broker)
    for o in bracket("AAPL", 10, take_profit=200.0, stop_loss=180.0, client_id="br"): oms.submit(o)
    _book(oms)
    assert _refs(fake) == ["br"]  # the children wait for the entry's fill
    fake.control.price(symbol="AAPL", price=190.0); _book(oms); _book(oms)
    kids = {o["order_ref"]: o for o in fake.control.state()["orders"] if o["order_ref"] != "br"}
    assert {k: (o["order_type"], o["oca_group"], o["oca_type"], o["tif"]) for k, o in kids.items()} == \
           {"br-tp": ("LMT", "br", 1, "GTC"), "br-sl": ("STP", "br", 1, "GTC")}
    fake.control.price(symbol="AAPL", price=201.0); _book(oms)  # the take-profit fills; IB cancels the stop (one-cancels-all)
    assert oms.orders["br-tp"].status == OrderStatus.FILLED and oms.orders["br-sl"].status == OrderStatus.CANCELLED
    assert oms.portfolio.quantity("AAPL") == 0 and fake.control.state()["positions"] == {}


class BuyOnce(Strategy):
    "Buys 3 shares on its first decision."
    def on_bar(self, ctx):
        if not ctx.open_orders() and not ctx.portfolio.quantity(ctx.symbols[0]): ctx.order(ctx.symbols[0], 3)


def test_the_runner_trades_on_ib_real_time_bars(fake, tmp_path):
    import threading
    cfg = config_from_dict({"name": "rt", "state_dir": str(tmp_path / "state"), "strategy": {"name": "buy_once"},
                            "broker": {"kind": "ib", "port": fake.port, "client_id": 12, "timeout": 5.0},
                            "feed": {"kind": "ib", "symbols": ["AAPL"], "bar": "10s", "calendar": "24/7", "stale_after": 3600.0},
                            "promotion": {"override": "the fake TWS's real-time bars in a test"}})
    t0 = (int(time.time()) // 10 + 6) * 10  # bar times a minute ahead of the clock: released as each next bar begins
    def push(ctl):
        while not any(s for s in ctl.state()["subscriptions"].values()): time.sleep(0.02)
        for k in range(12):
            if k == 3:  # the first bar is complete: wait for the strategy's order to reach IB, so that the next bar fills it
                deadline = time.monotonic() + 30
                while not ctl.state()["orders"] and time.monotonic() < deadline: time.sleep(0.02)
            ctl.bar(symbol="AAPL", time=t0 + 5 * k, open=100.0 + k, high=100.5 + k, low=99.5 + k, close=100.25 + k, volume=10.0); time.sleep(0.05)
    def pushing():
        with FakeControl(fake.control_port) as ctl: push(ctl)
    pusher = threading.Thread(target=pushing); pusher.start()
    st = Runner(cfg, BuyOnce(), symbols=["AAPL"]).run(max_bars=4)
    pusher.join()
    j = Journal(cfg.state_dir / "journal.sqlite", readonly=True)
    times = [pd.Timestamp(j.bar_time(i), tz="UTC") for i in range(st["bars"])]
    assert times[:3] == [pd.Timestamp(t0 + 10 * k, unit="s", tz="UTC") for k in (1, 2, 3)]  # 10-second bars from 5-second ones
    assert [b.values["open"][0] for b in j.bars()[:2]] == [100.0, 102.0] and [b.values["close"][0] for b in j.bars()[:2]] == [101.25, 103.25]
    assert _refs(fake) and fake.control.state()["positions"] == {"AAPL": 3.0}  # bought at the next 5-second bar's open, through IB
    assert fake.control.state()["executions"][0]["price"] == 103.0


def test_fills_at_other_prices_keep_the_decisions_and_show_the_slippage(spx, tmp_path, fake):
    fake.control.knob(slippage=0.25)  # the fake fills market orders a quarter point worse than the model
    cfg = _ib_config(tmp_path / "state", fake, spx)
    _run(cfg, spx)
    bt = run_backtest(get_strategy("sma_cross", **PARAMS), spx, broker=SimBroker(commission=PerShare.ib_fixed()), start=cfg.start)
    verdict = parity(Journal(cfg.state_dir / "journal.sqlite"), bt.fills)
    assert not verdict["equal"] and verdict["decisions_equal"] and verdict["fills"] == len(bt.fills)
    assert verdict["slippage"]["mean_per_unit"] == pytest.approx(0.25) and verdict["slippage"]["max_per_unit"] == pytest.approx(0.25)
    assert verdict["slippage"]["total"] > 0
    from quantlab.reports.render import run_report
    m = run_report("live_review", {"state_dir": str(cfg.state_dir)}, tmp_path / "reports", progress=False).metrics
    assert m["decision_diff"] == 0 and not m["parity_equal"]  # same decisions, other prices
    assert m["attribution"]["execution"] == pytest.approx(-verdict["slippage"]["total"])  # the quarter point, on every unit traded
    assert m["attribution"]["execution"] == pytest.approx(-0.25 * Journal(cfg.state_dir / "journal.sqlite").orders()["data"].map(lambda d: abs(json.loads(d)["quantity"])).sum())
    a = m["attribution"]
    assert a["signal"] + a["execution"] + a["costs"] + a["residual"] == pytest.approx(a["live P&L"])


def test_an_ib_feed_needs_the_ib_broker_and_its_symbols(tmp_path):
    from quantlab.live.runner import ConfigError
    base = {"name": "x", "state_dir": str(tmp_path), "strategy": {"name": "sma_cross"}}
    with pytest.raises(ConfigError, match=r"\[feed\] kind: an ib feed needs \[broker\] kind"): config_from_dict({**base, "feed": {"kind": "ib", "symbols": ["A"]}})
    with pytest.raises(ConfigError, match=r"\[feed\] symbols: the ib feed needs a list of symbols"): config_from_dict({**base, "feed": {"kind": "ib"}, "broker": {"kind": "ib"}})
    with pytest.raises(ConfigError, match=r"\[broker\] account: the account comes from the environment"): config_from_dict({**base, "broker": {"kind": "ib", "account": "DU1"}})
    cfg = config_from_dict({**base, "feed": {"kind": "ib", "symbols": ["AAPL"], "bar": "5min"}, "broker": {"kind": "ib", "port": 4002, "contracts": {"AAPL": {"primary_exchange": "NASDAQ"}}}})
    assert (cfg.feed, cfg.ib_port, cfg.contracts, cfg.stale_after) == ("ib", 4002, {"AAPL": {"primary_exchange": "NASDAQ"}}, 900.0)


def test_close_closes_the_socket_even_if_another_library_then_replaces_the_event_loop(fake, tmp_path):
    """ib_async's disconnect only starts closing: the socket closed on the loop's next turn. When the thread's loop was
    replaced and dropped first (CI saw it; which library replaced it is unknown), the socket leaked, and a later,
    unrelated test failed on the ResourceWarning. close() turns the loop once, so nothing is left but the loop."""
    import asyncio, gc, warnings
    b = IBBroker(tmp_path / "state", {"AAPL": spec_for("AAPL")}, port=fake.port, client_id=9, timeout=5, backoff=(0.05,))
    assert b.cash() > 0
    sock = b.ib.client.conn.transport.get_extra_info("socket")
    assert sock.fileno() >= 0
    b.close()
    assert sock.fileno() == -1  # closed by close() itself, not on a later turn of a loop that may be dropped
    del b
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.set_event_loop(asyncio.new_event_loop())  # the old loop may be garbage now, with whatever it still held
        gc.collect()
    leaked = [str(w.message) for w in seen if "transport" in str(w.message) or "socket.socket" in str(w.message)]
    assert leaked == []  # (whether the old loop is collected here depends on what else holds it: under xdist, not always)
