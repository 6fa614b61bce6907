"""Execution algorithms (quantlab.trading.execution, #16) on real NYSE TAQ data: the highfrequency package's raw trades
(all venues) aggregated to one-minute bars, its cleaned NYSE quotes as the spread, the volume profile of 2018-01-02
(point in time) for a parent order worked on 2018-01-03. The engine, the OMS, the risk engine and the simulated broker
are the ones every backtest and paper session runs; the fills are capped at the participation share of each bar's
traded volume (VolumeShare), as a venue's volume would cap them."""

import numpy as np
import pandas as pd
import pytest

from quantlab.backtest.driver import run_backtest
from quantlab.core import Instrument, UsageError
from quantlab.data import schema
from quantlab.data.aggregate import clean_quotes, quotes_to_bars, session_bars, trades_to_time_bars
from quantlab.trading.brokers.sim import PerShare, QuoteSpread, SimBroker, VolumeShare
from quantlab.trading.execution import (AlgoSpec, VolumeProfile, cumulative_targets, execution_report, implementation_shortfall,
                                        plan_slices, volume_profile)
from quantlab.trading.risk import RiskLimits
from quantlab.trading.strategy import Strategy

NY = "America/New_York"
CAP = 0.10
DAY2 = pd.Timestamp("2018-01-03", tz=NY)
START = pd.Timestamp("2018-01-03 10:00", tz=NY).tz_convert("UTC")  # the parent is decided at the close of the 09:59-10:00 bar


@pytest.fixture(scope="module")
def taq(shared_data):
    "One-minute bars of 'XXX' on both days' regular sessions (every minute; no trade: the last price, volume 0), with quotes."
    d = shared_data / "highfrequency"
    raw = pd.read_csv(d / "sampleTDataRaw.csv.gz", dtype={"COND": str, "EX": str}).drop(columns="COND")
    trades = schema.coerce_trades(raw.rename(columns={"DT": "ts", "SYMBOL": "symbol", "PRICE": "price", "SIZE": "size", "EX": "exchange"}))
    hhmm = trades["ts"].dt.tz_convert(NY).dt.strftime("%H:%M")
    trades = trades[(hhmm >= "09:30") & (hhmm < "16:00")]
    q = pd.read_csv(d / "sampleQData.csv.gz", dtype={"EX": str})
    quotes = schema.coerce_quotes(q.rename(columns={"DT": "ts", "SYMBOL": "symbol", "BID": "bid", "OFR": "ask", "BIDSIZ": "bid_size",
                                                    "OFRSIZ": "ask_size", "EX": "exchange"}))
    bars = session_bars(trades_to_time_bars(trades, "1min"), "09:30", "16:00", NY, quotes=quotes_to_bars(clean_quotes(quotes), "1min"))
    panels = {f: bars.pivot(index="ts", columns="symbol", values=f) for f in ("open", "high", "low", "close", "volume", "vwap", "bid", "ask")}
    assert len(panels["close"]) == 780 and panels["close"].notna().all().all() and panels["volume"]["XXX"].sum() == trades["size"].sum()
    return {"panels": panels, "trades": trades}


@pytest.fixture(scope="module")
def profile(taq):
    return volume_profile(taq["panels"]["volume"]["XXX"], DAY2, days=20)


class OneParent(Strategy):
    "At START: one parent through the desk (spec), or one market order (spec None); optionally cancel the parent later."
    def __init__(self, quantity, spec=None, cancel_after=None):
        super().__init__()
        self.quantity, self.spec, self.cancel_after, self.pid = quantity, spec, cancel_after, None

    def on_bar(self, ctx):
        if ctx.now == START:
            if self.spec is None: ctx.buy("XXX", self.quantity, reason="one market order")
            else: self.pid = ctx.execute("XXX", self.quantity, self.spec)
        elif self.cancel_after is not None and ctx.now == START + pd.Timedelta(minutes=self.cancel_after):
            ctx.cancel(self.pid)
        return None


def _run(taq, strategy, risk=None):
    broker = SimBroker(cash=50_000_000, commission=PerShare.ib_fixed(), spread=QuoteSpread(), partial=VolumeShare(CAP))
    res = run_backtest(strategy, taq["panels"], cash=50_000_000, broker=broker, risk=risk, instruments=[Instrument("XXX")])
    return res


def _parent(res):
    "The run's one parent order (the desk's record, with its schedule)."
    return res.audit._desk.parents[res.audit.table("parents")["parent_id"].iloc[0]]


def test_volume_profile_is_point_in_time(taq, profile):
    v = taq["panels"]["volume"]["XXX"]
    assert profile.days == 1 and profile.adv == pytest.approx(v.loc[:"2018-01-02 23:59"].sum())
    changed = v.copy(); changed.loc["2018-01-03"] *= 7  # the trading day's own volume cannot move its profile
    assert volume_profile(changed, DAY2).share.equals(profile.share)
    assert profile.share.sum() == pytest.approx(1.0) and profile.share.idxmax() in (9 * 60 + 31, 16 * 60)  # the open or the close
    with pytest.raises(UsageError, match="no bars before"):
        volume_profile(v, pd.Timestamp("2018-01-02", tz=NY))


def test_uniform_profile_vwap_children_equal_twap(taq, profile):
    uniform = VolumeProfile(pd.Series(1 / 390, index=profile.share.index), profile.adv, 1)
    twap = _run(taq, OneParent(30_000, AlgoSpec("twap", 60, CAP, 5.0, profile=uniform)))
    vwap = _run(taq, OneParent(30_000, AlgoSpec("vwap", 60, CAP, 5.0, profile=uniform)))
    cols = ["client_id", "quantity", "kind", "limit_price", "status", "filled"]
    pd.testing.assert_frame_equal(twap.orders[cols], vwap.orders[cols])
    pd.testing.assert_frame_equal(twap.fills.drop(columns="fill_id"), vwap.fills.drop(columns="fill_id"))
    assert len(twap.orders) >= 30


def test_vwap_follows_the_profile_and_participation_stays_under_the_cap(taq, profile):
    res = _run(taq, OneParent(25_000, AlgoSpec("vwap", 90, CAP, 5.0, profile=profile)))
    p, fills, panels = _parent(res), res.fills, taq["panels"]
    assert p.status == "done" and res.audit.table("parents")["filled"].iloc[0] == 25_000
    per_bar = fills.groupby("bar")["quantity"].sum()
    participation = per_bar / panels["volume"]["XXX"].to_numpy()[per_bar.index]
    assert participation.max() <= CAP + 1e-12 and participation.max() > 0.5 * CAP   # the cap binds somewhere, never exceeded
    # the schedule is the profile's: its first 10 minutes (the busy open is before 10:00) hold their expected share
    expected = profile.forecast(np.array([10 * 60 + k for k in range(1, 91)]))
    np.testing.assert_allclose(p.target, np.cumsum(expected) / expected.sum(), rtol=1e-12)
    assert fills["bar"].min() == panels["close"].index.get_loc(START) + 1  # nothing before the bar after the decision
    s = implementation_shortfall(p, fills, panels)
    assert s["filled"] == 25_000 and s["status"] == "done" and s["children"] == len(p.children) and s["max_participation"] == participation.max()


def test_every_child_is_risk_checked_and_linked_to_its_parent(taq, profile):
    res = _run(taq, OneParent(20_000, AlgoSpec("twap", 40, CAP, 5.0)), risk=RiskLimits(max_order_quantity=450))
    orders, parents = res.orders, res.audit.table("parents")
    pid = parents["parent_id"].iloc[0]
    assert (orders["algo_id"] == pid).all() and orders["client_id"].str.startswith(f"{pid}.").all()
    assert orders["approved"].notna().all()                       # each child got its own risk decision
    denied = orders[orders["status"] == "denied"]
    assert len(denied) and denied["risk_reason"].str.contains("quantity").all() and (denied["quantity"].abs() > 450).all()
    assert (orders.loc[orders["approved"] == True, "quantity"].abs() <= 450).all()  # noqa: E712
    assert orders["decision_id"].nunique() == 1                    # all children trace to the decision that made the parent
    filled = res.fills.groupby("client_id")["quantity"].sum()
    assert parents["filled"].iloc[0] == filled.sum() == orders["filled"].sum()


def test_limit_children_are_amended_and_the_last_slice_is_market(taq):
    res = _run(taq, OneParent(25_000, AlgoSpec("twap", 30, CAP, -2.0)))  # passive limits: 2 bp below the last close
    events = res.audit.table("order_events")
    assert (events["reason"] == "replace").sum() > 0               # unfilled slices were amended, not sent again
    orders = res.orders
    assert (orders["kind"].iloc[:-1] == "limit").all() and orders["kind"].iloc[-1] == "market"  # the window's last bar: market
    assert orders["reason"].iloc[-1].endswith("(market: the window's last bar)")
    p = res.audit.table("parents").iloc[0]
    assert p["status"] == "done" and p["filled"] == 25_000 and res.fills["bar"].max() == res.fills["bar"].min() + 29  # over 30 bars
    working = [r for r in res.run.oms.orders.values() if r.is_open]
    assert working == []                                           # nothing left working after the window


def test_cancel_stops_the_parent_cleanly(taq):
    res = _run(taq, OneParent(40_000, AlgoSpec("twap", 60, CAP, None), cancel_after=10))
    p = res.audit.table("parents").iloc[0]
    assert p["status"] == "cancelled" and 0 < p["filled"] < 40_000
    assert res.fills["ts"].max() <= START + pd.Timedelta(minutes=11)   # the child working at the cancel was cancelled
    assert not [r for r in res.run.oms.orders.values() if r.is_open]


def test_a_parent_the_cap_cannot_finish_ends_with_the_rest_unfilled(taq):
    res = _run(taq, OneParent(300_000, AlgoSpec("twap", 20, CAP, None)))
    p = res.audit.table("parents").iloc[0]
    assert p["status"] == "ended" and "unfilled" in p["reason"] and p["filled"] < 300_000


def test_execution_report_twap_vwap_and_one_market_order(taq, profile):
    "The same 50,000-share buy three ways; shortfall parts add up, and agree with a recomputation from the fills and the raw trades."
    panels, trades = taq["panels"], taq["trades"]
    runs = {"twap": _run(taq, OneParent(50_000, AlgoSpec("twap", 60, CAP, 5.0, profile=profile))),
            "vwap": _run(taq, OneParent(50_000, AlgoSpec("vwap", 60, CAP, 5.0, profile=profile))),
            "market": _run(taq, OneParent(50_000))}
    report = execution_report(runs, panels)
    assert list(report.index) == ["twap", "vwap", "market"] and list(report["algo"]) == ["twap", "vwap", "orders"]
    arrival = panels["close"]["XXX"].loc[START]
    i0 = panels["close"].index.get_loc(START)
    for name, res in runs.items():
        s, f = report.loc[name], res.fills
        avg = (f["quantity"] * f["price"]).sum() / f["quantity"].sum()
        assert s["avg_price"] == pytest.approx(avg, rel=1e-12) and s["arrival"] == arrival
        total = s["filled_share"] * (s["delay_bps"] + s["impact_bps"] + s["fees_bps"]) + (1 - s["filled_share"]) * s["opportunity_bps"]
        assert s["shortfall_bps"] == pytest.approx(total, abs=1e-9)
        if s["filled_share"] == 1:  # all filled: the shortfall is the average price and the fees against arrival, directly
            direct = 1e4 * (avg - arrival) / arrival + 1e4 * f["commission"].sum() / (f["quantity"].sum() * arrival)
            assert s["shortfall_bps"] == pytest.approx(direct, abs=1e-9)
        assert s["max_participation"] <= CAP + 1e-12  # the one market order too: the venue's volume caps each bar's fill
    window = panels["close"].index[i0 + 1:i0 + 61]
    in_window = trades[(trades["ts"] >= window[0] - pd.Timedelta(minutes=1)) & (trades["ts"] < window[-1])]  # bars: [end - 1 min, end)
    vwap = (in_window["price"] * in_window["size"]).sum() / in_window["size"].sum()
    assert report.loc["twap", "interval_vwap"] == pytest.approx(vwap, rel=1e-9) == report.loc["vwap", "interval_vwap"]
    assert report.loc["market", "children"] == 1 and report.loc["twap", "children"] > 10


def test_plan_slices_for_many_parents_sums_to_each_parent():
    rng = np.random.default_rng(3)
    q = rng.integers(-50_000, 50_000, 1000).astype(float)
    targets = np.vstack([cumulative_targets("vwap", 390, rng.random(390)) for _ in range(1000)])
    slices = plan_slices(q, targets, lot=100)
    np.testing.assert_array_equal(slices.sum(axis=1), np.trunc(q / 100) * 100)
    assert (np.sign(slices) * np.sign(q)[:, None] >= 0).all() and (slices % 100 == 0).all()


def test_the_bar_by_bar_driver_works_the_parent_as_the_backtest_does(taq, profile):
    "Live and paper drive the engine one bar at a time (trading.feed.drive): the same children, amendments and fills."
    from quantlab.trading.engine import Engine
    from quantlab.trading.feed import HistoricalFeed, drive
    spec = AlgoSpec("vwap", 45, CAP, 2.0, profile=profile)
    broker = lambda: SimBroker(cash=50_000_000, commission=PerShare.ib_fixed(), spread=QuoteSpread(), partial=VolumeShare(CAP))
    batch = _run(taq, OneParent(20_000, spec))
    engine = Engine(OneParent(20_000, spec), ["XXX"], broker=broker(), cash=50_000_000, instruments=[Instrument("XXX")])
    live = drive(engine, HistoricalFeed(taq["panels"]))
    for name in ("orders", "order_events", "fills", "parents"):
        a, b = live.audit.table(name), batch.audit.table(name)
        if "ts" in a: a, b = a.assign(ts=a["ts"].dt.as_unit("ns")), b.assign(ts=b["ts"].dt.as_unit("ns"))
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
    assert len(batch.fills) > 20
