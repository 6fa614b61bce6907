"""Monitoring, alerts and the dashboard against real parts on 127.0.0.1: an HTTP receiver for the webhook, an aiosmtpd
SMTP server for email, Prometheus' own text parser for /metrics, and headless Chromium (driven by Playwright) for the
dashboard during a replay session."""
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from quantlab.cli import main
from quantlab.live import alerts as rules
from quantlab.live.alerts import Alerter
from quantlab.live.journal import Journal
from quantlab.live.monitor import Monitor
from quantlab.live.runner import Runner, config_from_dict
from quantlab.strategies import get_strategy
from quantlab.trading.brokers.paper import PaperBroker
from quantlab.trading.strategy import Strategy

PARAMS = {"fast": 5, "slow": 20}


@pytest.fixture(scope="module")
def spx(spx_fields):
    return {k: v.iloc[:400] for k, v in spx_fields.items()}


def _config(tmp, name="mon", **extra):
    raw = {"name": name, "state_dir": str(tmp), "strategy": {"name": "sma_cross", "params": PARAMS}, "broker": {"commission_bps": 5},
           "alerts": {"sinks": []}, **extra}
    return config_from_dict(raw)


def _run(cfg, data, strategy=None, **kw):
    return Runner(cfg, strategy or get_strategy("sma_cross", **PARAMS), data).run(**kw)


def _alerts(state_dir) -> list[dict]:
    j = Journal(Path(state_dir) / "journal.sqlite", readonly=True)
    try: return [json.loads(d) for d in j.frame().query("kind == 'alert'").detail]
    finally: j.close()


class Naked(Strategy):
    "Asks for protective exits, then buys 5 without one at bar 35."
    protective_exit = True
    def on_bar(self, ctx):
        if ctx.i == 35: ctx.buy(ctx.symbols[0], 5)


# -- the rules --------------------------------------------------------------------------------------------------
def test_every_rule_names_its_subject_what_happened_and_what_to_do():
    examples = {"unprotected_position": ("SPX", 5), "position_drift": ("SPX", 5, 7, "HALTED"), "account_drift": ("cash: journal 1, broker 2",),
                "stale_data": ("no new bar for 180 s",), "reject_spike": (4, 10, "d-1-SPX-0", "margin"), "daily_loss": (0.016, 0.02, 0.8),
                "drawdown_breaker": ("drawdown 10%",), "unexpected_restart": ("2026-01-01", 123, "'fill'"),
                "reconciliation_unknown": ("ConnectionError: down",), "cancel_unacknowledged": ("d-1-SPX-0", "SPX", 3), "heartbeat_missing": ("d", 90.0, 60.0)}
    assert set(examples) == set(rules.RULES)
    for name, args in examples.items():
        a = rules.RULES[name](*args)
        assert a.severity in ("warning", "critical") and len(a.action) > 30 and a.subject in a.text()
        assert "Action: " in a.text() and a.message in a.text()


def test_a_reject_spike_alerts_once_until_the_rate_falls():
    m = Monitor("d", reject_window=10, reject_alert_rate=0.3)
    raised = []
    for k in range(10):
        m.on_status(f"o{k}", "submitted")
        if k in (2, 5, 7, 8): raised += m.on_status(f"o{k}", "rejected", "no margin", k)
    assert [(a.rule, a.client_id) for a in raised] == [("reject_spike", "o7")]  # the third reject in ten: 30%
    assert "3 of the last 8 orders sent were rejected (latest o7: no margin)" in raised[0].message


def test_dedup_and_rate_limit_journal_every_alert_with_what_was_done():
    t, seen = [0.0], []
    al = Alerter([], lambda a, s: seen.append(s), dedup_seconds=60, max_per_minute=3, clock=lambda: t[0])
    for k in range(6): al(rules.stale_data(f"no bar for {k}"))  # same rule, same subject
    for s in ("A", "B", "C", "D"): al(rules.unprotected_position(s, 1))
    assert seen == ["sent"] + ["duplicate"] * 5 + ["sent", "sent", "rate_limited", "rate_limited"]


# -- the runner raises them ----------------------------------------------------------------------------------------
def _free_port() -> int:
    "A free port on 127.0.0.1 (aiosmtpd's controller connects to its own port to start, so it cannot take 0)."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


class Receiver(BaseHTTPRequestHandler):
    posts: list = []
    def do_POST(self):
        type(self).posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass


def test_alerts_reach_a_webhook_and_an_smtp_server_on_localhost(spx, tmp_path, monkeypatch):
    from aiosmtpd.controller import Controller
    mails = []
    class Inbox:
        async def handle_DATA(self, server, session, envelope):
            mails.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode())); return "250 OK"
    smtp = Controller(Inbox(), hostname="127.0.0.1", port=_free_port()); smtp.start()
    hook = HTTPServer(("127.0.0.1", 0), type("R", (Receiver,), {"posts": []}))
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    monkeypatch.setenv("QUANTLAB_TEST_HOOK", f"http://127.0.0.1:{hook.server_port}/services/T000/B000")
    try:
        cfg = _config(tmp_path, "hooks", alerts={"sinks": ["webhook", "email"], "webhook_url_env": "QUANTLAB_TEST_HOOK", "smtp_host": "127.0.0.1",
                                                  "smtp_port": smtp.port, "smtp_from": "quantlab@localhost", "smtp_to": ["ops@localhost"]})
        _run(cfg, spx, Naked(), max_bars=40)
    finally: hook.shutdown(); hook.server_close(); smtp.stop()
    [post] = hook.RequestHandlerClass.posts
    assert set(post) == {"text"} and "quantlab live hooks: [CRITICAL] SPX: open position 5 SPX has no active exit order" in post["text"]
    [(sender, to, mail)] = mails
    assert (sender, to) == ("quantlab@localhost", ["ops@localhost"])
    assert "Subject: [quantlab hooks] CRITICAL unprotected_position: SPX" in mail and "What to do: place a protective stop for SPX" in mail
    [a] = _alerts(tmp_path)
    assert (a["rule"], a["bar"], a["status"]) == ("unprotected_position", 36, "sent")


def test_a_sink_that_fails_is_journaled_and_the_session_goes_on(spx, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTLAB_TEST_HOOK", "http://127.0.0.1:9/nobody-listens")
    cfg = _config(tmp_path, "deadhook", alerts={"sinks": ["webhook"], "webhook_url_env": "QUANTLAB_TEST_HOOK"})
    st = _run(cfg, spx, Naked(), max_bars=40)
    assert st["bars"] == 40
    failed = Journal(tmp_path / "journal.sqlite").frame().query("kind == 'alert_failed'")
    assert len(failed) == 1 and json.loads(failed.detail.iloc[0])["sink"] == "WebhookSink"
    monkeypatch.delenv("QUANTLAB_TEST_HOOK")
    with pytest.raises(Exception, match="QUANTLAB_TEST_HOOK"): _run(cfg, spx, Naked(), max_bars=1)  # a sink without its secret: no start


def test_the_daily_loss_warns_at_80_percent_then_halts_at_100(spx, tmp_path):
    _run(_config(tmp_path, risk={"max_daily_loss": 0.01}), spx, max_bars=200)
    got = [(a["rule"], a["bar"], a["severity"]) for a in _alerts(tmp_path) if a["rule"].startswith("daily_loss")]
    assert got == [("daily_loss_80%", 20, "warning"), ("daily_loss_limit", 22, "critical")]  # a 0.8-1% loss on bar 20, more than 1% on bar 22
    st = Journal(tmp_path / "journal.sqlite").state("trading_state")
    assert st["state"] == "HALTED" and "daily loss" in st["reason"]


def test_the_drawdown_breaker_alerts_once(spx, tmp_path):
    _run(_config(tmp_path, risk={"max_drawdown": 0.03}), spx, max_bars=300)
    dd = [a for a in _alerts(tmp_path) if a["rule"] == "drawdown_breaker"]
    assert len(dd) == 1 and dd[0]["severity"] == "critical" and "breached max_drawdown 3.00%" in dd[0]["message"]


def test_an_unexpected_restart_is_found_in_the_journal_at_start(spx, tmp_path):
    cfg = _config(tmp_path)
    _run(cfg, spx, max_bars=50)
    _run(cfg, spx, max_bars=10)
    assert not [a for a in _alerts(tmp_path) if a["rule"] == "unexpected_restart"]  # clean stops
    con = sqlite3.connect(tmp_path / "journal.sqlite")  # a kill -9: the run never journals its stop
    with con: con.execute("delete from events where seq = (select max(seq) from events where kind = 'stop')")
    con.close()
    _run(cfg, spx, max_bars=10)
    [a] = [a for a in _alerts(tmp_path) if a["rule"] == "unexpected_restart"]
    assert "ended without a clean stop" in a["message"] and "its last event was 'snapshot'" in a["message"]


def test_reconciliation_unknown_and_position_drift_are_actionable(spx, tmp_path, monkeypatch):
    cfg = _config(tmp_path)
    _run(cfg, spx, max_bars=150)
    pb = PaperBroker(tmp_path / "paper.sqlite"); held = pb.positions()
    with pb.con: pb.con.execute("update account set value = ? where key = 'positions'", (json.dumps({"SPX": held.get("SPX", 0) + 3}),))
    pb.close()
    _run(cfg, spx, max_bars=5)
    [drift] = [a for a in _alerts(tmp_path) if a["rule"] == "position_drift"]
    assert drift["subject"] == "SPX" and "find the fill that explains the difference" in drift["action"]
    monkeypatch.setattr(PaperBroker, "positions", lambda self: (_ for _ in ()).throw(ConnectionError("broker not answering")))
    _run(cfg, spx, max_bars=5)
    [unknown] = [a for a in _alerts(tmp_path) if a["rule"] == "reconciliation_unknown"]
    assert "ConnectionError: broker not answering" in unknown["message"] and unknown["severity"] == "critical"


def test_live_watch_alerts_on_a_missing_heartbeat_and_not_on_a_clean_stop(spx, tmp_path, capsys):
    _run(_config(tmp_path), spx, max_bars=5)
    assert main(["live", "watch", str(tmp_path), "--timeout", "1"]) == 0
    beat = json.loads((tmp_path / "heartbeat.json").read_text())
    (tmp_path / "heartbeat.json").write_text(json.dumps({**beat, "stopped": False, "at": time.time() - 120}))
    assert main(["live", "watch", str(tmp_path), "--timeout", "60"]) == 1
    err = capsys.readouterr().err
    assert "the runner's heartbeat is missing: last beat 120 s ago (limit 60 s)" in err and "restart it" in err


# -- the server: metrics, health, status, the kill switch, the page in Chromium ------------------------------------------
def _session(cfg, data, strategy=None):
    "A runner on its own thread; returns (thread, monitor.json once it exists, the runner)."
    runner = Runner(cfg, strategy or get_strategy("sma_cross", **PARAMS), data)
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    path = Path(cfg.state_dir) / "monitor.json"
    for _ in range(400):
        if path.exists() and path.stat().st_size: break
        time.sleep(0.05)
    return t, json.loads(path.read_text()), runner


def _get(url, token=None, **headers):
    h = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=h), timeout=10) as r: return r.status, r.read()
    except urllib.error.HTTPError as e: return e.code, e.read()


def test_metrics_health_and_status_are_served_with_a_token(spx, tmp_path):
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    cfg = _config(tmp_path, monitor={"port": 0, "heartbeat_seconds": 0.2}, feed={"speed": 86400 * 40.0, "start": str(spx["close"].index[30])})
    t, info, runner = _session(cfg, spx)
    url, token = info["url"], info["token"]
    assert oct((tmp_path / "monitor.json").stat().st_mode & 0o777) == "0o600" and url.startswith("http://127.0.0.1:")
    time.sleep(1.0)
    code, body = _get(url + "health")
    assert code == 200 and json.loads(body)["status"] == "ok" and json.loads(body)["heartbeat_age"] < 1.0
    assert [_get(url + "metrics")[0], _get(url + "status", "wrong")[0], _get(url + "api/view")[0]] == [401, 401, 401]
    code, body = _get(url + "status", token)
    assert code == 200 and json.loads(body)["name"] == "mon"
    code, body = _get(url + "metrics", token)
    assert code == 200 and b"quantlab_heartbeat_timestamp_seconds" in body
    t.join(120)
    assert not t.is_alive()
    fams = {f.name: f for f in text_string_to_metric_families(generate_latest(runner.monitor.registry).decode())}
    snap = Journal(tmp_path / "journal.sqlite").frame().query("kind == 'snapshot'").detail.map(json.loads).iloc[-1]
    equity = snap["cash"] + sum(q * snap["marks"][s] for s, q in snap["positions"].items())
    assert fams["quantlab_equity"].samples[0].value == pytest.approx(equity, rel=1e-12)
    assert fams["quantlab_bars"].samples[0].value == 400
    assert 0 <= fams["quantlab_last_bar_age_seconds"].samples[0].value < 60
    pos = {s.labels["symbol"]: s.value for s in fams["quantlab_position"].samples}
    assert pos.get("SPX", 0.0) == snap["positions"].get("SPX", 0.0)
    fills = len(Journal(tmp_path / "journal.sqlite").fills())
    assert [s.value for s in fams["quantlab_fill_latency_seconds"].samples if s.name.endswith("_count")] == [fills]
    slip = {s.labels.get("le"): s.value for s in fams["quantlab_fill_slippage_bps"].samples if s.name.endswith("_bucket")}
    assert fills > 5 and slip["-1.0"] == 0 and slip["0.0"] == fills  # the paper broker fills at the model's price: 0 bps each
    with pytest.raises(urllib.error.URLError): urllib.request.urlopen(url + "health", timeout=2)  # stopped with the runner
    assert json.loads((tmp_path / "heartbeat.json").read_text())["stopped"] is True


def test_the_dashboard_draws_and_its_halt_button_halts_the_runner_in_headless_chromium(spx, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI") == "true": pytest.fail("chromium is required in CI (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it and runs this check")
    from playwright.sync_api import sync_playwright
    from prometheus_client.parser import text_string_to_metric_families
    cfg = _config(tmp_path, "dash", monitor={"port": 0}, feed={"speed": 86400 * 12.0, "start": str(spx["close"].index[30])})
    t, info, _ = _session(cfg, spx)
    url, token, requests = info["url"], info["token"], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                                               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{url}?token={token}")
        page.wait_for_function("Number(document.body.dataset.refreshed || 0) >= 3", timeout=30_000)
        line = page.locator("#equity .scatterlayer .trace path.js-line").first.get_attribute("d")
        assert line and line.count("L") > 20  # the equity curve drew, point by point
        assert page.locator("#exposure .main-svg").count() >= 1
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        page.fill("#reason", "checking the kill switch")
        page.click("#halt")
        page.wait_for_function("document.getElementById('msg').textContent.includes('queued')", timeout=10_000)
        page.wait_for_function("document.getElementById('state').textContent.startsWith('HALTED')", timeout=30_000)
        shot = (tmp_path / "dashboard.png").stat().st_size
        browser.close()
    code, body = _get(url + "metrics", token)
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    state = {s.labels["quantlab_trading_state"]: s.value for s in fams["quantlab_trading_state"].samples}
    assert code == 200 and state["HALTED"] == 1.0 and fams["quantlab_equity"].samples[0].value > 0
    code, body = _get(url + "status", token)
    assert code == 200 and json.loads(body)["trading_state"]["reason"] == "operator: checking the kill switch (dashboard)"
    t.join(120)
    assert shot > 30_000 and all(u.startswith(url) for u in requests), [u for u in requests if not u.startswith(url)]
    ev = Journal(tmp_path / "journal.sqlite").frame()
    assert ev.query("kind == 'state_change'").detail.str.contains("checking the kill switch").any()
