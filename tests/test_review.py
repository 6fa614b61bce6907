"""The live_review template on real sessions: a paper session that made the backtest's fills, and one an operator
halted part-way (a decision diff the review must find and place)."""
import json
from pathlib import Path

import pytest

from conftest import report_text

from quantlab.live.journal import Journal
from quantlab.live.runner import Runner, config_from_dict
from quantlab.reports.render import run_report
from quantlab.strategies import get_strategy
from quantlab.trading.brokers.paper import PaperBroker

PARAMS = {"fast": 5, "slow": 20}


@pytest.fixture(scope="module")
def spx(spx_fields):
    return {k: v.iloc[:400] for k, v in spx_fields.items()}


def _session(tmp, data, max_bars=None):
    cfg = config_from_dict({"name": "rev", "state_dir": str(tmp), "strategy": {"name": "sma_cross", "params": PARAMS},
                            "broker": {"commission_bps": 5}, "alerts": {"sinks": []}, "feed": {"start": str(data["close"].index[30])}})
    Runner(cfg, get_strategy("sma_cross", **PARAMS), data).run(max_bars=max_bars)
    return cfg


def test_a_paper_session_reviews_as_its_backtest_with_its_pnl_explained(spx, tmp_path):
    cfg = _session(tmp_path / "state", spx)
    run = run_report("live_review", {"state_dir": str(cfg.state_dir)}, tmp_path / "reports", progress=False)
    m = run.metrics
    assert (m["decision_diff"], m["sized_differently"], m["parity_equal"], m["slippage_total"]) == (0, 0, True, 0.0)
    pb = PaperBroker(cfg.state_dir / "paper.sqlite")  # the P&L from the broker's own books, independently of the journal
    pnl = pb.cash() + sum(q * spx["close"][s].iloc[-1] for s, q in pb.positions().items()) - cfg.cash
    pb.close()
    a = m["attribution"]
    assert a["live P&L"] == pytest.approx(pnl, abs=1e-6) and a["residual"] == pytest.approx(0.0, abs=1e-6)
    assert a["costs"] < 0 and a["execution"] == 0.0
    html = run.html.read_text()
    html = report_text(html)
    assert "Decision diff: 0" in html and ("P&amp;L: signal, execution, costs" in html or "P&L: signal, execution, costs" in html)


def test_a_session_halted_part_way_shows_the_decisions_it_did_not_make(spx, tmp_path):
    d = tmp_path / "state"
    cfg = _session(d, spx, max_bars=200)
    j = Journal(d / "journal.sqlite"); j.command("halt", "review test"); j.close()
    _session(d, spx)
    m = run_report("live_review", {"state_dir": str(d)}, tmp_path / "reports", progress=False).metrics
    from quantlab.backtest.driver import run_backtest
    from quantlab.trading.brokers.sim import BasisPoints, SimBroker
    bt = run_backtest(get_strategy("sma_cross", **PARAMS), spx, broker=SimBroker(commission=BasisPoints(5)), start=cfg.start)
    after_halt = int((bt.orders["created"] >= spx["close"].index[200]).sum())  # the halt applies before bar 200
    assert after_halt > 0 and m["decision_diff"] == after_halt and m["risk_events"] >= 1
