"""The live runner on real data (the bundled S&P 500 and the 20-stock pypfopt panel), against the paper broker:
the parity proof, restarts, the lock, reconciliation, and the faults of ../shared/IB_NOTES.md (numbered as there)."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantlab.backtest.driver import run_backtest
from quantlab.core import StateError
from quantlab.live.journal import Journal
from quantlab.live.runner import ConfigError, Runner, StateLock, config_from_dict, parity, status
from quantlab.strategies import get_strategy
from quantlab.trading.brokers.paper import PaperBroker
from quantlab.trading.brokers.sim import BasisPoints, SimBroker
from quantlab.trading.orders import Order
from quantlab.trading.strategy import Strategy

PARAMS = {"fast": 5, "slow": 20}  # short windows: many trades in a few hundred bars


class Crash(BaseException):
    "Stands in for the process dying at that line (nothing after it runs; `finally` blocks do, as they would not)."


@pytest.fixture(scope="module")
def spx(spx_fields):
    return {k: v.iloc[:400] for k, v in spx_fields.items()}


def _config(tmp, name="spx", start_bar=30, data=None, **extra):
    raw = {"name": name, "state_dir": str(tmp), "strategy": {"name": "sma_cross", "params": PARAMS},
           "broker": {"commission_bps": 5}, **extra}
    if data is not None: raw["feed"] = {"start": str(data["close"].index[start_bar])}
    return config_from_dict(raw)


def _run(cfg, data, **kw):
    return Runner(cfg, get_strategy("sma_cross", **PARAMS), data).run(**kw)


def _fills(state_dir):
    j = Journal(Path(state_dir) / "journal.sqlite", readonly=True)
    try: return pd.DataFrame([f._asdict() for _, _, f in j.fills()])[["bar", "symbol", "quantity", "price", "commission"]]
    finally: j.close()


def _paper(state_dir):
    return PaperBroker(Path(state_dir) / "paper.sqlite")


@pytest.fixture(scope="module")
def reference(spx, tmp_path_factory):
    "The uninterrupted session every fault test must end equal to."
    d = tmp_path_factory.mktemp("reference")
    _run(_config(d, data=spx), spx)
    return {"fills": _fills(d), "positions": _paper(d).positions(), "cash": _paper(d).cash()}


def _assert_ended_like(reference, d):
    pd.testing.assert_frame_equal(_fills(d), reference["fills"])
    pb = _paper(d)
    assert pb.positions() == reference["positions"] and pb.cash() == pytest.approx(reference["cash"], abs=1e-6)
    assert pb.duplicates() == []  # no client id reached the broker twice
    assert len(pb.executions()) == len(reference["fills"])  # no fill lost or counted twice


# -- the parity proof ------------------------------------------------------------------------------------------
def test_paper_session_makes_the_backtests_fills_spx(spx, tmp_path, reference):
    cfg = _config(tmp_path, data=spx)
    st = _run(cfg, spx)
    bt = run_backtest(get_strategy("sma_cross", **PARAMS), spx, broker=SimBroker(commission=BasisPoints(5)), start=cfg.start)
    j = Journal(tmp_path / "journal.sqlite")
    verdict = parity(j, bt.fills)
    assert verdict["equal"] and verdict["fills"] == len(bt.fills) > 20, verdict
    assert st["bars"] == 400 and st["last_bar_finished"] and st["trading_state"]["state"] == "ACTIVE"
    assert _paper(tmp_path).positions() == {s: q for s, q in bt.positions.iloc[-1].items() if q}


def test_paper_session_makes_the_backtests_fills_on_20_stocks(pypfopt_closes, tmp_path):
    data = {"close": pypfopt_closes.loc["2017":]}
    cfg = _config(tmp_path, data=data, start_bar=25)
    _run(cfg, data)
    bt = run_backtest(get_strategy("sma_cross", **PARAMS), data, broker=SimBroker(commission=BasisPoints(5)), start=cfg.start)
    verdict = parity(Journal(tmp_path / "journal.sqlite"), bt.fills)
    assert verdict["equal"] and verdict["fills"] > 100, verdict
    assert _paper(tmp_path).positions() == {s: q for s, q in bt.positions.iloc[-1].items() if q}


def test_a_second_parity_check_fails_when_a_fill_differs(spx, tmp_path):
    cfg = _config(tmp_path, data=spx)
    _run(cfg, spx)
    bt = run_backtest(get_strategy("sma_cross", **PARAMS), spx, broker=SimBroker(commission=BasisPoints(5)), start=cfg.start)
    fills = bt.fills.copy(); fills.loc[fills.index[3], "price"] += 0.01
    assert parity(Journal(tmp_path / "journal.sqlite"), fills)["first_difference"] == 3


# -- restarts and the lock --------------------------------------------------------------------------------------
def test_a_stopped_and_restarted_session_ends_like_an_uninterrupted_one(spx, tmp_path, reference):
    cfg = _config(tmp_path, data=spx)
    for n in (50, 120, 7):
        st = _run(cfg, spx, max_bars=n)
        assert st["last_bar_finished"]
    _run(cfg, spx)
    _assert_ended_like(reference, tmp_path)
    rec = status(tmp_path)["last_reconciliation"]
    assert rec["status"] == "ok" and rec["differences"] == {}


def test_a_second_runner_on_the_same_state_directory_refuses_to_start(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "runner.lock").write_text(str(sleeper.pid))
        with pytest.raises(StateError, match=f"PID {sleeper.pid}"): StateLock(tmp_path).acquire()
    finally:
        sleeper.kill(); sleeper.wait()
    assert StateLock(tmp_path).acquire() == sleeper.pid  # the owner is gone: a stale lock, taken over


def test_a_journal_of_another_strategy_is_refused(spx, tmp_path):
    _run(_config(tmp_path, data=spx), spx, max_bars=40)
    other = config_from_dict({"name": "spx", "state_dir": str(tmp_path), "strategy": {"name": "sma_cross", "params": {"fast": 7, "slow": 20}}})
    with pytest.raises(StateError, match="belongs to"): Runner(other, get_strategy("sma_cross", fast=7, slow=20), spx).run()


# -- faults (IB_NOTES numbering) ----------------------------------------------------------------------------------
def _crash_on(monkeypatch, cls, method, call):
    "Make `cls.method` die on its `call`-th call (once)."
    original, calls = getattr(cls, method), {"n": 0}
    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == call: raise Crash(f"{method} call {call}")
        return original(self, *a, **k)
    monkeypatch.setattr(cls, method, dying)
    return original


def test_scenario_01_killed_after_the_intent_is_stored_before_it_is_sent(spx, tmp_path, monkeypatch, reference):
    cfg = _config(tmp_path, data=spx)
    original = _crash_on(monkeypatch, PaperBroker, "submit", 3)
    with pytest.raises(Crash): _run(cfg, spx)
    monkeypatch.setattr(PaperBroker, "submit", original)
    j = Journal(tmp_path / "journal.sqlite")
    lost = j.con.execute("select client_id from orders where sent = 0").fetchone()[0]
    j.close()
    _run(cfg, spx)
    j = Journal(tmp_path / "journal.sqlite")
    assert j.order(lost)["status"] == "never_sent"
    assert not _paper(tmp_path).received(lost)  # never resent under its id
    reissued = lost.rsplit(":", 1)[0] + ":2"
    assert j.order(reissued) is not None and _paper(tmp_path).received(reissued)
    _assert_ended_like(reference, tmp_path)


def test_scenario_02_killed_after_send_before_the_ack_is_stored(spx, tmp_path, monkeypatch, reference):
    cfg = _config(tmp_path, data=spx)
    original = _crash_on(monkeypatch, Journal, "sent", 4)
    with pytest.raises(Crash): _run(cfg, spx)
    monkeypatch.setattr(Journal, "sent", original)
    j = Journal(tmp_path / "journal.sqlite")
    unacked = j.con.execute("select client_id from orders where sent = 0").fetchone()[0]
    j.close()
    assert _paper(tmp_path).received(unacked)
    _run(cfg, spx)
    assert Journal(tmp_path / "journal.sqlite").order(unacked)["sent"] == 1
    _assert_ended_like(reference, tmp_path)  # exactly one broker order for it: no duplicate


def test_scenario_03_killed_after_a_broker_fill_before_it_is_stored(spx, tmp_path, monkeypatch, reference):
    cfg = _config(tmp_path, data=spx)
    original = _crash_on(monkeypatch, Journal, "fill", 5)
    with pytest.raises(Crash): _run(cfg, spx)
    monkeypatch.setattr(Journal, "fill", original)
    assert len(_paper(tmp_path).executions()) == len(_fills(tmp_path)) + 1  # the broker has a fill the journal lacks
    _run(cfg, spx)
    _assert_ended_like(reference, tmp_path)


def test_scenario_14_a_failing_reconciliation_query_halts_and_books_nothing(spx, tmp_path, monkeypatch):
    cfg = _config(tmp_path, data=spx)
    _run(cfg, spx, max_bars=150)
    before = _paper(tmp_path).positions()
    def down(self): raise ConnectionError("broker not answering")
    monkeypatch.setattr(PaperBroker, "positions", down)
    st = _run(cfg, spx, max_bars=100)
    monkeypatch.undo()
    assert st["trading_state"]["state"] == "HALTED" and "unknown" in st["trading_state"]["reason"]
    assert st["last_reconciliation"]["status"] == "unknown"
    assert _paper(tmp_path).positions() == before  # halted: nothing flattened, no new position
    events = Journal(tmp_path / "journal.sqlite").frame()
    assert (events.kind == "denied").sum() > 0 and events.query("kind == 'denied'").detail.str.contains("HALTED").all()


def test_scenario_15_a_position_that_differs_at_start_halts_that_instrument_with_the_difference(pypfopt_closes, tmp_path):
    data = {"close": pypfopt_closes.loc["2017":]}
    cfg = _config(tmp_path, data=data, start_bar=25)
    _run(cfg, data, max_bars=150)
    pb = _paper(tmp_path)
    held = pb.positions()
    victim = sorted(held)[0]
    with pb.con: pb.con.execute("update account set value = ? where key = 'positions'", (json.dumps({**held, victim: held[victim] + 7}),))
    pb.close()
    orders_before = len(Journal(tmp_path / "journal.sqlite").orders())
    st = _run(cfg, data, max_bars=60)
    assert st["trading_state"]["state"] == "ACTIVE"  # the others trade on
    own = st["trading_state"]["symbols"][victim]
    assert own["state"] == "HALTED" and f"{victim}: journal {held[victim]:g}, broker {held[victim] + 7:g}" in own["reason"]
    assert st["last_reconciliation"]["differences"][victim]["broker"] == held[victim] + 7
    orders = Journal(tmp_path / "journal.sqlite").orders().iloc[orders_before:]
    assert victim not in set(orders.loc[orders.status != "denied", "symbol"])  # no corrective trade, nothing new in it
    assert len(orders[orders.symbol != victim]) > 0  # while the rest of the book trades
    assert _paper(tmp_path).positions()[victim] == held[victim] + 7


def test_a_cash_difference_halts_everything(spx, tmp_path):
    cfg = _config(tmp_path, data=spx)
    _run(cfg, spx, max_bars=150)
    pb = _paper(tmp_path)
    with pb.con: pb.con.execute("update account set value = ? where key = 'cash'", (json.dumps(pb.cash() - 1000.0),))
    pb.close()
    st = _run(cfg, spx, max_bars=5)
    assert st["trading_state"]["state"] == "HALTED" and "cash: journal" in st["trading_state"]["reason"]


def test_scenario_19_daily_loss_halt_survives_a_restart_and_leaves_only_by_resume(spx, tmp_path):
    cfg = _config(tmp_path, data=spx, risk={"max_daily_loss": 0.005})
    st = _run(cfg, spx, max_bars=200)
    assert st["trading_state"]["state"] == "HALTED" and "daily loss" in st["trading_state"]["reason"]
    assert _run(cfg, spx, max_bars=20)["trading_state"]["state"] == "HALTED"
    j = Journal(tmp_path / "journal.sqlite"); j.command("resume", "loss reviewed"); j.close()
    st = _run(cfg, spx, max_bars=1)
    assert st["trading_state"]["state"] == "ACTIVE"
    assert "operator: loss reviewed" in Journal(tmp_path / "journal.sqlite").frame().query("kind == 'state_change'").detail.iloc[-1]


class Twice(Strategy):
    "Sends the same order (one client id) twice on one bar, and a second time on the next bar."
    def on_bar(self, ctx):
        if ctx.i in (40, 41):
            for _ in range(2): ctx.submit(Order(ctx.symbols[0], 10, client_id="same-signal"))


def test_scenario_21_the_same_signal_twice_is_one_broker_order(spx, tmp_path):
    cfg = config_from_dict({"name": "twice", "state_dir": str(tmp_path), "strategy": {"name": "twice"}})
    Runner(cfg, Twice(), spx).run(max_bars=60)
    assert _paper(tmp_path).duplicates() == [] and len(_paper(tmp_path).executions()) == 1


def test_scenario_22_kill_9_during_journal_writes_leaves_a_sound_journal(tmp_path):
    code = ("import sys; from quantlab.live.journal import Journal; from quantlab.trading.orders import Order\n"
            "j = Journal(sys.argv[1])\nfor k in range(10**6): j.intent(Order('SPX', 1 + k, client_id=f'c{k}'), k); j.sent(f'c{k}', k)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "journal.sqlite")])
    time.sleep(3.0); p.send_signal(signal.SIGKILL); p.wait()
    j = Journal(tmp_path / "journal.sqlite")
    j.check()
    orders = j.orders()
    assert len(orders) > 10 and (orders["sent"].iloc[:-1] == 1).all()  # only the last intent can be unsent


class RestingLimit(Strategy):
    "A GTC buy limit far below the market, placed once: it rests at the broker across restarts."
    def on_bar(self, ctx):
        if ctx.i == 35: ctx.order(ctx.symbols[0], 5, limit=ctx.price() * 0.5, tif="GTC")


def test_scenario_23_a_paper_broker_restart_keeps_working_orders_and_fills(spx, tmp_path):
    cfg = config_from_dict({"name": "rest", "state_dir": str(tmp_path), "strategy": {"name": "resting"}})
    Runner(cfg, RestingLimit(), spx).run(max_bars=60)
    st = Runner(cfg, RestingLimit(), spx).run(max_bars=10)
    assert [o["status"] for o in st["working_orders"]] == ["submitted"]
    assert [o.client_id for o in _paper(tmp_path).open_orders()] == [st["working_orders"][0]["client_id"]]
    assert st["last_reconciliation"]["status"] == "ok"


def test_an_order_placed_at_the_broker_by_hand_is_adopted_as_external(spx, tmp_path):
    cfg = _config(tmp_path, data=spx)
    _run(cfg, spx, max_bars=100)
    pb = _paper(tmp_path)
    from quantlab.trading.brokers.sim import BarArrays
    pb.attach(BarArrays.growing(["SPX"], ("open", "high", "low", "close", "volume"), 1000))  # a venue with no bars yet
    pb.submit(Order("SPX", 1, "limit", limit_price=1.0, tif="GTC", client_id="by-hand")); pb.close()
    st = _run(cfg, spx, max_bars=5)
    assert st["last_reconciliation"]["adopted"] == ["by-hand"] and "by-hand" in [o["client_id"] for o in st["working_orders"]]
    assert Journal(tmp_path / "journal.sqlite").order("by-hand")["origin"] == "external"
    _run(cfg, spx, max_bars=5)  # and a replay with the adopted order in it still matches the journal


def test_halt_cancels_and_flattens_then_resume_trades_again(spx, tmp_path):
    cfg = _config(tmp_path, data=spx)
    while not _paper(tmp_path).positions(): _run(cfg, spx, max_bars=5)  # until sma_cross holds the index
    j = Journal(tmp_path / "journal.sqlite"); j.command("halt_flatten", "test the kill switch"); j.close()
    st = _run(cfg, spx, max_bars=20)
    assert st["trading_state"]["state"] == "HALTED" and _paper(tmp_path).positions() == {}
    j = Journal(tmp_path / "journal.sqlite"); j.command("resume", "done"); j.close()
    _run(cfg, spx)
    assert Journal(tmp_path / "journal.sqlite").state("trading_state")["state"] == "ACTIVE"
    assert len(_paper(tmp_path).executions()) > len(_fills(tmp_path).query("quantity < 0").tail(1))


# -- the crash test: kill -9 at random points, restart, run to the end ---------------------------------------------
CHILD = """
import sys, pandas as pd
from quantlab.live.runner import Runner, config_from_dict
from quantlab.strategies import get_strategy
panels = pd.read_pickle(sys.argv[2])
cfg = config_from_dict({"name": "spx", "state_dir": sys.argv[1], "strategy": {"name": "sma_cross", "params": %r},
                        "broker": {"commission_bps": 5}, "feed": {"start": sys.argv[3]}})
Runner(cfg, get_strategy("sma_cross", **%r), panels).run()
""" % (PARAMS, PARAMS)


def _bars_in(journal: Path) -> int:
    "Bars the child's journal holds (read while it writes: WAL)."
    if not journal.exists(): return -1
    import sqlite3
    try:
        con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try: return con.execute("select count(*) from bars").fetchone()[0]
        finally: con.close()
    except sqlite3.Error: return -1


def test_kill_9_at_random_points_then_restart_ends_like_an_uninterrupted_run(spx_fields, tmp_path):
    """kill -9 the runner at `QUANTLAB_CRASH_KILLS` (50) random points, restarting it each time, then run to the end.

    A fifth of the kills land while it starts (imports, the journal's replay, the reconciliation); the rest land
    0-20 ms after it journaled its first new bar, i.e. anywhere in a bar's writes: intent, send, fill, finish."""
    spx = {k: v.iloc[:1500] for k, v in spx_fields.items()}  # long enough for 50 kills
    _run(_config(tmp_path / "reference", data=spx), spx)
    reference = {"fills": _fills(tmp_path / "reference"), "positions": _paper(tmp_path / "reference").positions(),
                 "cash": _paper(tmp_path / "reference").cash()}
    kills, seed = int(os.environ.get("QUANTLAB_CRASH_KILLS", "50")), int(os.environ.get("QUANTLAB_CRASH_SEED", "20261203"))
    rng = random.Random(seed)
    pd.to_pickle(spx, tmp_path / "panels.pkl")
    state = tmp_path / "state"
    args = [sys.executable, "-c", CHILD, str(state), str(tmp_path / "panels.pkl"), str(spx["close"].index[30])]
    journal, points = state / "journal.sqlite", []
    while len(points) < kills:
        held = _bars_in(journal)
        p = subprocess.Popen(args, cwd=tmp_path)
        if rng.random() < 0.2:  # within its start: after the drawn delay, or at its first new bar if that comes sooner
            point = ("start", round(rng.uniform(0.3, 2.5), 3))
            deadline = time.monotonic() + point[1]  # (a fixed sleep let a fast start trade to the end before the kill)
            while p.poll() is None and time.monotonic() < deadline and _bars_in(journal) <= held: time.sleep(0.005)
        else:
            point = ("trading", round(rng.uniform(0.0, 0.02), 3))
            while p.poll() is None and _bars_in(journal) <= held: time.sleep(0.005)
            time.sleep(point[1])
        if p.poll() is not None: break  # it reached the end before this kill
        p.send_signal(signal.SIGKILL); p.wait()
        points.append(point)
    print(f"seed {seed}: {len(points)} kills {points}")
    assert subprocess.run(args, cwd=tmp_path).returncode == 0  # restart and run to the end
    _assert_ended_like(reference, state)
    assert len(points) == kills, f"the session ended after {len(points)} kills"


# -- risk controls, through the runner: denied before the broker hears of them, journaled with the reason ----------
class Fixed(Strategy):
    "Sends the orders it is given at bar 40 (to test what risk lets through)."
    orders: list = []
    def on_bar(self, ctx):
        if ctx.i == 40:
            for o in self.orders: ctx.submit(o)


def _denials(tmp, orders, risk=None, instruments=None):
    Fixed.orders = orders
    cfg = config_from_dict({"name": "risk", "state_dir": str(tmp), "strategy": {"name": "fixed"}, **({"risk": risk} if risk else {})})
    Runner(cfg, Fixed(), _denials.spx, instruments).run(max_bars=45)
    ev = Journal(tmp / "journal.sqlite").frame()
    return ev.query("kind == 'denied'").set_index("client_id")["detail"].to_dict(), _paper(tmp)


@pytest.mark.parametrize("field,order", [
    ("quantity", Order("SPX", float("nan"), client_id="nan-qty")),
    ("quantity", Order("SPX", float("inf"), client_id="inf-qty")),
    ("quantity", Order("SPX", 0.0, client_id="zero-qty")),
    ("limit_price", Order("SPX", 1, "limit", limit_price=-5.0, client_id="neg-price")),
    ("limit_price", Order("SPX", 1, "limit", limit_price=1.7976931348623157e308, client_id="sentinel-price")),
    ("stop_price", Order("SPX", 1, "stop", stop_price=float("nan"), client_id="nan-stop"))])
def test_scenario_17_bad_prices_and_sizes_are_blocked_naming_the_field(spx, tmp_path, field, order):
    _denials.spx = spx
    denied, paper = _denials(tmp_path, [order])
    assert f"field '{field}'" in denied[order.client_id]
    assert not paper.received(order.client_id)


def test_scenario_18_limits_ticks_and_price_collar_deny_before_sending(spx, tmp_path):
    from quantlab.core import Instrument
    _denials.spx = spx
    last = float(spx["close"]["SPX"].iloc[40])
    orders = [Order("SPX", 500, client_id="too-many"), Order("SPX", 10, "limit", limit_price=round(last * 1.2, 2), client_id="far"),
              Order("SPX", 10, "limit", limit_price=round(last, 2) + 0.013, client_id="off-tick"), Order("SPX", 10, client_id="fine")]
    denied, paper = _denials(tmp_path, orders, risk={"max_order_quantity": 100, "price_band": 0.05, "enforce_ticks": True},
                             instruments=[Instrument("SPX", tick_size=0.05)])
    assert "max_order_quantity" in denied["too-many"] and "price_band" in denied["far"] and "tick" in denied["off-tick"]
    assert "fine" not in denied and paper.received("fine")
    assert not any(paper.received(c) for c in ("too-many", "far", "off-tick"))


def test_order_rate_and_concentration_guardrails(spx, tmp_path):
    _denials.spx = spx
    denied, paper = _denials(tmp_path, [Order("SPX", 1, client_id=f"o{k}") for k in range(4)], risk={"max_orders_per_day": 3})
    assert sorted(denied) == ["o3"] and "max_orders_per_day" in denied["o3"] and paper.received("o2") and not paper.received("o3")
    denied, _ = _denials(tmp_path / "b", [Order("SPX", 700, client_id="big")], risk={"max_position_weight": 0.5})
    assert "max_position_weight" in denied["big"]


def test_a_fill_for_an_order_placed_by_hand_is_adopted_and_survives_a_replay(spx, tmp_path):
    from quantlab.trading.orders import Fill
    cfg = _config(tmp_path, data=spx)
    _run(cfg, spx, max_bars=100)
    pb = _paper(tmp_path)
    pb.external_fill(Fill("by-hand-fill", "SPX", 5.0, 1300.0, ts=0, commission=1.0, fill_id="hand-1")); pb.close()
    st = _run(cfg, spx, max_bars=3)
    assert st["last_reconciliation"]["differences"] == {} and st["trading_state"]["state"] == "ACTIVE"
    j = Journal(tmp_path / "journal.sqlite")
    assert j.order("by-hand-fill")["origin"] == "external" and "adopt_fill" in set(j.frame().kind)
    j.close()
    st = _run(cfg, spx, max_bars=3)  # the replay re-adopts it on its fill, and the books still agree
    assert st["last_reconciliation"]["differences"] == {}


def test_a_poll_feed_that_goes_quiet_pauses_new_orders_and_resumes_on_fresh_bars(spx, tmp_path):
    from quantlab.live.runner import FeedStatus, PollFeed
    close = spx["close"].iloc[:200]
    now = {"t": close.index[0].timestamp()}
    gap = (close.index[120], close.index[120] + pd.Timedelta(days=30))  # bars from 120 on arrive a month late
    def fetch(after):
        seen = close[(close.index <= pd.Timestamp(now["t"], unit="s", tz="UTC"))]
        if pd.Timestamp(now["t"], unit="s", tz="UTC") < gap[1]: seen = seen[seen.index < gap[0]]
        seen = seen if after is None else seen[seen.index > pd.Timestamp(after, tz="UTC")]
        return {k: spx[k].loc[seen.index] for k in spx}
    def tick(s): now["t"] += s
    feed = lambda after: PollFeed(fetch, ["SPX"], interval=86_400, stale_after=5 * 86_400, calendar=None, after=after,
                                  clock=lambda: now["t"], sleep=tick, until=lambda: now["t"] > close.index[-1].timestamp() + 40 * 86_400)
    cfg = _config(tmp_path, data={"close": close}, start_bar=30)
    st = Runner(cfg, get_strategy("sma_cross", **PARAMS), instruments=None, feed=feed, symbols=["SPX"]).run()
    assert st["bars"] == 200
    ev = Journal(tmp_path / "journal.sqlite").frame()
    stale, fresh = ev[ev.kind == "feed_stale"], ev[ev.kind == "feed_fresh"]
    assert stale.bar.astype(int).tolist() == [120, 200] and fresh.bar.astype(int).tolist() == [120]  # the gap; then the feed's end
    assert "stale data" in ev[ev.kind == "alert"].detail.iloc[0]
    bt = run_backtest(get_strategy("sma_cross", **PARAMS), {k: v.iloc[:200] for k, v in spx.items()},
                      broker=SimBroker(commission=BasisPoints(5)), start=cfg.start)
    assert parity(Journal(tmp_path / "journal.sqlite"), bt.fills)["equal"]  # nothing traded in the gap: the same fills


class Protected(Strategy):
    "Asks for protective exits; enters at bar 35 with a bracket (a stop) or, with `naked`, with a bare market order."
    protective_exit, naked = True, False
    def on_bar(self, ctx):
        if ctx.i == 35:
            p = ctx.price()
            if self.naked: ctx.buy(ctx.symbols[0], 5)
            else: ctx.bracket(ctx.symbols[0], 5, take_profit=round(p * 1.5, 2), stop_loss=round(p * 0.5, 2), tif="GTC")


@pytest.mark.parametrize("naked", [False, True])
def test_a_position_without_the_protective_exit_the_strategy_asks_for_raises_an_alert(spx, tmp_path, naked):
    st = Protected(); st.naked = naked
    cfg = config_from_dict({"name": "prot", "state_dir": str(tmp_path), "strategy": {"name": "protected"}})
    Runner(cfg, st, spx).run(max_bars=60)
    assert _paper(tmp_path).positions() == {"SPX": 5.0}
    alerts = Journal(tmp_path / "journal.sqlite").frame().query("kind == 'alert'").detail.tolist()
    got = [json.loads(a) for a in alerts if "no active exit order" in a]
    assert [(a["rule"], a["subject"], a["bar"], a["status"]) for a in got] == ([("unprotected_position", "SPX", 36, "sent")] if naked else [])
    if naked: assert got[0]["message"].startswith("open position 5 SPX has no active exit order") and "place a protective stop for SPX" in got[0]["action"]


def test_live_run_from_a_toml_config_polling_the_local_store(tmp_path):
    "The CLI end to end: a TOML deployment whose feed polls the store, then status and the journal as JSON."
    from quantlab.cli import main
    from quantlab.data.samples import ingest_samples
    from quantlab.data.store import BarStore
    ingest_samples(BarStore(tmp_path / "data"), ["sp500"], progress=False)
    (tmp_path / "deploy.toml").write_text(
        'name = "poller"\nstate_dir = "state/poller"\n[strategy]\nname = "sma_cross"\nparams = { fast = 5, slow = 20 }\n'
        '[feed]\nkind = "poll"\nsource = "store"\nsymbols = ["SP500"]\ninterval = 0.01\n[broker]\ncommission_bps = 5\n')
    assert main(["--data-dir", str(tmp_path / "data"), "live", "run", str(tmp_path / "deploy.toml"), "--max-bars", "300", "--json"]) == 0
    st = status(tmp_path / "state" / "poller")
    assert st["bars"] == 300 and st["fills"] > 10 and st["trading_state"]["state"] == "ACTIVE"
    assert main(["live", "halt", str(tmp_path / "deploy.toml"), "--reason", "end of test"]) == 0
    j = Journal(tmp_path / "state" / "poller" / "journal.sqlite")
    assert j.pending_commands()[0][1:] == ("halt", "end of test")


def test_a_config_error_names_the_file_and_key(tmp_path):
    from quantlab.live.runner import ConfigError, load_config
    (tmp_path / "bad.toml").write_text('name = "x"\n[strategy]\nname = "sma_cross"\n[feed]\nkind = "poll"\nsymbols = []\n')
    with pytest.raises(ConfigError, match=r"bad.toml: \[feed\] symbols"): load_config(tmp_path / "bad.toml")
    (tmp_path / "bad.toml").write_text('name = "x"\n[strategy]\nname = "sma_cross"\n[feed]\ncalendar = "NOPE"\n')
    with pytest.raises(ConfigError, match=r"\[feed\] calendar"): load_config(tmp_path / "bad.toml")


class Wild(Strategy):
    "Returns an impossible weight at bar 40, an infinite one at 41 and a NaN at 42, then a sane one at 43."
    def on_bar(self, ctx):
        return {40: [5.0], 41: [float("inf")], 42: [float("nan")], 43: [0.5]}.get(ctx.i)


@pytest.mark.parametrize("refuse_nan", [False, True])
def test_signal_sanity_refuses_impossible_infinite_and_nan_weights_naming_the_symbol(spx, tmp_path, refuse_nan):
    cfg = config_from_dict({"name": "wild", "state_dir": str(tmp_path), "strategy": {"name": "wild"},
                            "risk": {"max_weight": 1.0, "refuse_nan_weights": refuse_nan}})
    Runner(cfg, Wild(), spx).run(max_bars=50)
    denied = Journal(tmp_path / "journal.sqlite").frame().query("kind == 'denied'")
    assert denied.bar.astype(int).tolist() == ([40, 41, 42] if refuse_nan else [40, 41])
    assert "the weight of SPX is 5.0" in denied.detail.iloc[0] and "the weight of SPX is inf" in denied.detail.iloc[1]
    orders = Journal(tmp_path / "journal.sqlite").orders()
    assert orders.bar.tolist() == [43] and _paper(tmp_path).positions()["SPX"] > 0  # only the sane decision traded


def test_alerts_go_to_the_journal_and_the_configured_sinks(spx, tmp_path, capsys):
    st = Protected(); st.naked = True
    cfg = config_from_dict({"name": "sinks", "state_dir": str(tmp_path), "strategy": {"name": "protected"},
                            "alerts": {"sinks": ["stderr", "file"]}})
    Runner(cfg, st, spx).run(max_bars=40)
    line = (tmp_path / "alerts.log").read_text().strip().splitlines()[-1]
    assert "quantlab live sinks: ALERT (bar 36) [CRITICAL] SPX: open position 5 SPX has no active exit order" in line
    assert line.split(" ", 1)[1] in capsys.readouterr().err
    with pytest.raises(Exception, match=r"\[alerts\] sinks"):
        config_from_dict({"name": "x", "strategy": {"name": "s"}, "alerts": {"sinks": ["pager"]}})


def test_a_replay_at_a_multiple_of_wall_clock_time_is_paced(spx):
    from quantlab.live.runner import ReplayFeed
    data = {k: v.iloc[:4] for k, v in spx.items()}  # 4 daily bars: 3 gaps of 1-3 days
    span = (data["close"].index[-1] - data["close"].index[0]).total_seconds()
    t = time.perf_counter(); bars = list(ReplayFeed(data, speed=span / 0.6)); took = time.perf_counter() - t
    assert len(bars) == 4 and bars[-1].final and 0.55 <= took < 3.0  # 0.6 s of replay time, paced by sleeping
    assert [b.ts for b in ReplayFeed(data, after=bars[1].ts)] == [bars[2].ts, bars[3].ts]  # a restart resumes after its last bar


def test_reconciliation_repeats_on_its_timer(spx, tmp_path):
    cfg = _config(tmp_path, data=spx, reconcile={"every_bars": 25})
    _run(cfg, spx, max_bars=200)
    rec = Journal(tmp_path / "journal.sqlite").frame().query("kind == 'reconcile'")
    assert len(rec) == 1 + (200 - 30) // 25  # at start, then every 25 traded bars
    assert all(json.loads(d)["status"] == "ok" for d in rec.detail)


def test_cash_orders_sized_at_the_fill_make_the_backtests_fills_across_restarts(spx, tmp_path):
    """A strategy that sizes at the fill (#16) sends cash orders; the paper broker sizes them as the SimBroker does,
    and a session stopped twice (each restart replays the journal, cash orders included) ends with the backtest's fills."""
    def strategy():
        st = get_strategy("sma_cross", **PARAMS)
        st.size_at_fill = True
        return st
    cfg = _config(tmp_path, data=spx)
    for n in (60, 150): assert Runner(cfg, strategy(), spx).run(max_bars=n)["last_bar_finished"]
    Runner(cfg, strategy(), spx).run()
    bt = run_backtest(strategy(), spx, broker=SimBroker(commission=BasisPoints(5)), start=cfg.start)
    verdict = parity(Journal(tmp_path / "journal.sqlite"), bt.fills)
    assert verdict["equal"] and verdict["fills"] == len(bt.fills) > 20, verdict
    assert bt.orders["cash"].notna().sum() >= 5 and (bt.orders.loc[bt.orders["cash"].notna(), "filled"] > 0).all()
    assert _paper(tmp_path).duplicates() == []


def test_twap_from_the_deployment_config_makes_the_backtests_children_across_restarts(spx, tmp_path):
    """[execution] in the deployment (#16): every target trade is a TWAP parent worked over 4 bars. A session stopped
    twice (each restart replays the journal, so the desk's parents are rebuilt, not lost) ends with the backtest's
    children and fills; a restart with another [execution] is refused."""
    from quantlab.live.runner import configure
    from quantlab.trading.execution import AlgoSpec
    cfg = _config(tmp_path, data=spx, execution={"algo": "twap", "bars": 4})
    assert cfg.execution == {"algo": "twap", "bars": 4, "max_participation": 1.0, "limit_bps": None} and cfg.card()["execution"] == cfg.execution
    strategy = lambda: configure(get_strategy("sma_cross", **PARAMS), cfg)
    assert strategy().execution == AlgoSpec("twap", 4, 1.0, None)
    for n in (70, 160): assert Runner(cfg, strategy(), spx).run(max_bars=n)["last_bar_finished"]
    Runner(cfg, strategy(), spx).run()
    bt = run_backtest(strategy(), spx, broker=SimBroker(commission=BasisPoints(5)), start=cfg.start)
    verdict = parity(Journal(tmp_path / "journal.sqlite"), bt.fills)
    assert verdict["equal"] and verdict["fills"] == len(bt.fills) > 40, verdict
    parents = bt.audit.table("parents")
    assert len(parents) >= 10 and (bt.orders["algo_id"].notna()).all() and set(parents["status"]) <= {"done", "working"}
    journaled = Journal(tmp_path / "journal.sqlite").orders()["data"].map(json.loads)
    assert len(journaled) == len(bt.orders) and journaled.map(lambda d: d["algo_id"] is not None).all()  # every child, journaled with its parent
    assert sorted(journaled.map(lambda d: d["quantity"])) == sorted(bt.orders["quantity"])
    other = _config(tmp_path, data=spx, execution={"algo": "twap", "bars": 6})
    with pytest.raises(StateError, match="belongs to"): Runner(other, configure(get_strategy("sma_cross", **PARAMS), other), spx).run()


@pytest.mark.parametrize("table,named", [({"algo": "vwap"}, r"\[execution\] algo: 'vwap': only twap"),
                                         ({"bars": 0}, r"\[execution\]: bars must be"), ({"speed": 1}, r"\[execution\] speed: unknown key"),
                                         ({"max_participation": 2.0}, r"\[execution\]: max_participation must be")])
def test_a_bad_execution_table_is_refused_naming_it(tmp_path, table, named):
    with pytest.raises(ConfigError, match=named): _config(tmp_path, execution=table)


def test_a_kill_switch_then_a_crash_before_the_next_bar_restarts_halted(spx, tmp_path):
    """halt_flatten is applied before a bar: the resting order's cancel is confirmed and journaled as read before that bar.
    The process dies before it records the bar. The restart must replay what was done after the last finished bar (the
    halt, and the reports read then): it failed with "journaled reports for bars [60] were never matched" before (a CI
    run of the IB kill -9 test met it at random), and the halt was not replayed at all."""
    from unittest import mock
    cfg = config_from_dict({"name": "rest", "state_dir": str(tmp_path), "strategy": {"name": "resting"}})
    Runner(cfg, RestingLimit(), spx).run(max_bars=60)
    j = Journal(tmp_path / "journal.sqlite"); j.command("halt_flatten", "kill switch"); j.close()
    def dies(self, *a, **k): raise Crash("killed before the bar was recorded")
    with mock.patch.object(Journal, "record_bar", dies), pytest.raises(Crash):
        Runner(cfg, RestingLimit(), spx).run(max_bars=5)
    j = Journal(tmp_path / "journal.sqlite", readonly=True)
    assert j.last_bar() == (59, True) and [(b, p, u.status.value) for b, p, u in j.updates()][-1] == (60, 0, "cancelled")
    j.close()
    st = Runner(cfg, RestingLimit(), spx).run(max_bars=5)
    assert st["trading_state"]["state"] == "HALTED" and st["trading_state"]["reason"] == "operator: kill switch"
    assert st["working_orders"] == [] and st["last_reconciliation"]["status"] == "ok"
    assert _paper(tmp_path).open_orders() == []
