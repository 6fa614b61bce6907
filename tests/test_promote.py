"""Promotion gates end to end: a real robustness report, the look-ahead guard, a paper session with its parity check,
the record, MLflow's registry on SQLite (aliases paper and live), and `live run --broker ib` refusing what was not
promoted unless overridden with a journaled reason."""
import json
from pathlib import Path

import pandas as pd
import pytest

from quantlab.cli import _lookahead, main
from quantlab.core import StateError
from quantlab.live import promote as pr
from quantlab.live.journal import Journal
from quantlab.live.runner import Runner, config_from_dict
from quantlab.reports.render import run_report
from quantlab.strategies import get_strategy
from quantlab.trading.strategy import Strategy

pytest.importorskip("mlflow", reason="MLflow is the registry extra (pip install 'quantlab[track]'); make test installs it")
BEST = ["-p", "fast", "50", "-p", "slow", "200"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    "A robustness report of sma_cross on the S&P 500 (a 3 x 3 grid) and a data directory."
    root = tmp_path_factory.mktemp("promote")
    run = run_report("robustness", {"strategy": "sma_cross", "grid": {"fast": [20, 50, 100], "slow": [150, 200, 250]}, "bootstrap_reps": 50,
                                    "end": "2012-12-31"}, root / "reports", progress=False)
    return {"root": root, "data": root / "data", "reports": root / "reports", "run": run}


def _promote(world, *args):
    return main(["--data-dir", str(world["data"]), "promote", "sma_cross", *BEST, "--reports-dir", str(world["reports"]), *args])


def test_paper_promotion_writes_a_record_and_an_mlflow_version_with_its_alias(world, capsys):
    assert _promote(world, "--to", "paper", "--reason", "robust enough to paper trade", "--by", "tester") == 0
    out = capsys.readouterr().out
    assert "PASS  deflated Sharpe ratio" in out and "PASS  look-ahead guard: target: clean" in out
    [path] = (world["data"] / "promotions" / "sma_cross").glob("*-paper.json")
    rec = json.loads(path.read_text())
    m = world["run"].metrics
    assert (rec["by"], rec["reason"], rec["stage"]) == ("tester", "robust enough to paper trade", "paper")
    assert rec["data_fingerprint"] == m["data_fingerprint"] and rec["params"] == {"fast": 50, "slow": 200, "long": 1.0, "short": 0.0, "entry": "level"}
    assert rec["reports"]["robustness"] == str(world["run"].html.resolve()) and rec["git_sha"]
    from mlflow import MlflowClient
    uri = rec["registry"]["uri"]
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    v = c.get_model_version_by_alias("quantlab-sma_cross", "paper")
    assert int(v.version) == rec["registry"]["version"] and v.tags["by"] == "tester" and v.tags["data_fingerprint"] == m["data_fingerprint"]


def test_live_needs_the_stricter_gate_and_a_paper_session_with_zero_decision_diff(world, capsys):
    m = world["run"].metrics
    assert _promote(world, "--to", "live", "--reason", "no paper yet") == 1
    out = capsys.readouterr()
    assert "FAIL  paper sessions of these parameters: 0 of 0 given" in out.out and "may not go to live" in out.err
    assert main(["--data-dir", str(world["data"]), "live", "run", "sma_cross", "--name", "paper50", *BEST, "--start", "2005-01-03",
                 "--end", "2008-12-31", "--commission-bps", "1"]) == 0
    policy = world["root"] / "gates.toml"  # the report's DSR decides: a live gate just under it, and 20 sessions of paper
    policy.write_text(f"[live]\nmin_deflated_sharpe = {m['deflated_sharpe'] - 0.01:.4f}\nmin_paper_sessions = 20\nmax_slippage_bps = 0.5\n")
    assert _promote(world, "--to", "live", "--reason", "four years of paper, zero diff", "--paper", "paper50", "--policy", str(policy)) == 0
    out = capsys.readouterr().out
    assert "PASS  decision diff with the backtest is zero: zero" in out and "PASS  paper sessions traded: 1006 (min 20)" in out
    rec = pr.find_promotion(world["data"] / "promotions", "sma_cross", {"fast": 50, "slow": 200, "long": 1.0, "short": 0.0, "entry": "level"}, "live")
    assert rec["paper_sessions"][0]["parity"]["equal"] and rec["registry"]["alias"] == "live"
    strict = world["root"] / "strict.toml"
    strict.write_text(f"[live]\nmin_deflated_sharpe = {m['deflated_sharpe'] + 0.01:.4f}\n")
    assert _promote(world, "--to", "live", "--reason", "x", "--paper", "paper50", "--policy", str(strict)) == 1
    assert "FAIL  deflated Sharpe ratio" in capsys.readouterr().out


def test_ib_refuses_an_unpromoted_strategy_and_journals_an_override(tmp_path):
    promotions = tmp_path / "promotions"  # a live promotion of (50, 200), as `quantlab promote` writes it
    pr.promote("sma_cross", {"fast": 50, "slow": 200, "long": 1.0, "short": 0.0, "entry": "level"}, "live", [pr.Check("gate", True, "passed")], "test", promotions, {})
    spx = {k: v.iloc[:100] for k, v in _spx().items()}
    def run(params, **promotion):
        cfg = config_from_dict({"name": f"ib{len(promotion)}{params['fast']}", "state_dir": str(tmp_path / f"s{len(promotion)}{params['fast']}"),
                                "strategy": {"name": "sma_cross", "params": params}, "alerts": {"sinks": []},
                                "broker": {"kind": "ib", "port": 9, "timeout": 1.0},  # nobody listens: the gate comes before the connection
                                "promotion": {"dir": str(promotions), **promotion}})
        with pytest.raises(Exception) as e: Runner(cfg, get_strategy("sma_cross", **params), spx).run(max_bars=1)
        return e.value, Journal(cfg.state_dir / "journal.sqlite").frame()
    err, ev = run({"fast": 10, "slow": 200})
    assert isinstance(err, StateError) and "has no live promotion" in str(err) and "quantlab promote sma_cross" in str(err)
    err, ev = run({"fast": 10, "slow": 200}, override="a one-day IB shakedown, approved by J.")
    assert not isinstance(err, StateError) and json.loads(ev.query("kind == 'promotion_override'").detail.iloc[0])["reason"] == "a one-day IB shakedown, approved by J."
    assert ev.query("kind == 'alert'").detail.str.contains("promotion_override").any()
    err, ev = run({"fast": 50, "slow": 200})
    assert not isinstance(err, StateError) and json.loads(ev.query("kind == 'promotion'").detail.iloc[0])["stage"] == "live"


def _spx():
    from arch.data import sp500
    df = sp500.load(); df.index = df.index.tz_localize("UTC")
    return {k.lower(): df[[k]].set_axis(["SPX"], axis=1) for k in ("Open", "High", "Low", "Close")}


class Leaky(Strategy):
    "Its feature reads tomorrow's close."
    def features(self, data): return {"tomorrow": data["close"].shift(-1), "today": data["close"]}
    def on_bar(self, ctx): pass


def test_the_lookahead_gate_fails_on_the_feature_that_leaks():
    got = _lookahead(Leaky(), {"samples": ["sp500"], "start": None, "end": "2003-12-31"}, None)
    assert got["today"] is None and "tomorrow" in got["tomorrow"] and "looks ahead" in got["tomorrow"]
    checks = pr.lookahead_checks(got, pr.load_policy()["paper"])
    assert [(c.name, c.passed) for c in checks] == [("look-ahead guard: tomorrow", False), ("look-ahead guard: today", True)]


def test_a_policy_file_with_an_unknown_key_is_refused(tmp_path):
    (tmp_path / "p.toml").write_text("[live]\nmin_sharpe = 1\n")
    with pytest.raises(pr.PromotionError, match=r"p.toml: \[live\] min_sharpe: unknown key"): pr.load_policy(tmp_path / "p.toml")


def test_backtests_log_to_mlflow_tracking_with_a_flag(tmp_path, capsys):
    from mlflow import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["backtest", "sma_cross", "-p", "fast", "20", "--end", "2003-12-31", "--mlflow", uri, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    c = MlflowClient(tracking_uri=uri)
    [run] = c.search_runs([c.get_experiment_by_name("quantlab-backtest").experiment_id])
    assert run.data.params["fast"] == "20" and run.data.metrics["final_equity"] == pytest.approx(out["final_equity"])
    assert (tmp_path / "mlartifacts").is_dir() and not Path("mlruns").exists()


def test_sweeps_and_walk_forwards_log_to_mlflow_tracking_too(tmp_path, capsys):
    from mlflow import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["sma_cross", "--grid", "fast=10,20", "slow=100,200", "--end", "2006-12-31", "--mlflow", uri, "--json"]
    assert main(["sweep", *common]) == 0
    sweep = json.loads(capsys.readouterr().out)
    assert main(["walkforward", *common, "--train", "504", "--test", "252"]) == 0
    wf = json.loads(capsys.readouterr().out)
    c = MlflowClient(tracking_uri=uri)
    [s] = c.search_runs([c.get_experiment_by_name("quantlab-sweep").experiment_id])
    [w] = c.search_runs([c.get_experiment_by_name("quantlab-walkforward").experiment_id])
    assert s.data.metrics["pbo"] == pytest.approx(sweep["pbo"]) and s.data.metrics["sets"] == 4
    assert w.data.metrics["oos_sharpe"] == pytest.approx(wf["summary"]["oos_sharpe"]) and w.data.params["train"] == "504"
