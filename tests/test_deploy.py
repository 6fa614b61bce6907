"""The container files, checked statically: no Docker daemon or base image can be fetched on these machines, so the
image is never built here (deploy/README.md says so). What can be checked is checked against the real package: the
entrypoint is a real subcommand, the healthcheck path is served without a token, the config the image runs loads,
ports agree, and every metric Prometheus and Grafana name is one the runner exports."""
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from quantlab.cli import build_parser
from quantlab.live.monitor import Dashboard, Monitor
from quantlab.live.runner import load_config

REPO = Path(__file__).resolve().parents[1]


def _dockerfile():
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _exec_form(arg: str) -> list[str]:
    return json.loads(arg)


def test_the_dockerfile_is_multi_stage_and_runs_as_a_non_root_user():
    ins = _dockerfile()
    stages = [a for k, a in ins if k == "FROM"]
    assert len(stages) >= 2 and all(" AS " in s.upper() for s in stages)
    assert any(k == "COPY" and a.startswith("--from=build") for k, a in ins)  # the runtime takes only the built environment
    last_from = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
    users = [a.strip() for k, a in ins[last_from:] if k == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:")
    assert any(k == "RUN" and "useradd" in a and users[-1] in a for k, a in ins[last_from:])
    for k, a in ins:  # every COPY source exists in the repo
        if k == "COPY" and not a.startswith("--from"):
            for src in shlex.split(a)[:-1]: assert (REPO / src).exists(), src
    assert any(k == "RUN" and '".[ib]"' in a and "-c requirements.lock" in a for k, a in ins)  # the ib extra, pinned by the lock


def test_the_entrypoint_is_a_real_subcommand_and_its_config_loads(monkeypatch):
    ins = dict(_dockerfile())
    argv = _exec_form(ins["ENTRYPOINT"]) + _exec_form(ins["CMD"])
    assert argv[:3] == ["quantlab", "live", "run"]
    assert "quantlab=quantlab.cli:main" in (REPO / "settings.ini").read_text()
    args = build_parser().parse_args(argv[1:])
    assert args.run.__name__ == "_live_run" and args.target == "/etc/quantlab/live.toml"
    copied = [a for k, a in _dockerfile() if k == "COPY" and a.endswith("/etc/quantlab/live.toml")]
    assert copied == ["deploy/live.toml /etc/quantlab/live.toml"]
    cfg = load_config(REPO / "deploy" / "live.toml")
    assert (cfg.broker, cfg.feed, cfg.monitor_host, cfg.monitor_port, cfg.promotion_stage) == ("ib", "ib", "0.0.0.0", 8765, "live")
    assert "8765" in ins["EXPOSE"]


def test_the_healthcheck_asks_for_a_path_served_without_a_token(tmp_path):
    hc = dict(_dockerfile())["HEALTHCHECK"]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", hc)
    assert url and url.group(1) == str(load_config(REPO / "deploy" / "live.toml").monitor_port)
    import urllib.request
    m = Monitor("x"); m.beat()
    d = Dashboard(m, tmp_path, "a-token", lambda: {}).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{d.port}{url.group(2)}", timeout=5) as r: assert r.status == 200
    finally: d.stop()


def test_compose_is_valid_and_wires_the_runner_gateway_and_monitoring():
    c = yaml.safe_load((REPO / "compose.yaml").read_text())
    svc = c["services"]
    assert {"runner", "ib-gateway", "prometheus", "grafana"} <= set(svc)
    cfg = load_config(REPO / "deploy" / "live.toml")
    assert cfg.ib_host == "ib-gateway" and svc["runner"]["depends_on"] == ["ib-gateway"]
    assert any(v.endswith(":/data") for v in svc["runner"]["volumes"]) and str(cfg.state_dir).startswith("/data/")
    env = svc["runner"]["environment"]
    assert set(env) == {cfg.ib_account_env, cfg.monitor_token_env, cfg.webhook_url_env}
    for s in svc.values():  # secrets come from the environment: no literal values
        for k, v in (s.get("environment") or {}).items():
            if any(w in k for w in ("PASSWORD", "TOKEN", "USERID", "ACCOUNT", "WEBHOOK")): assert str(v).startswith("${"), k
    assert all(p.startswith("127.0.0.1:") for s in svc.values() for p in s.get("ports", []))
    assert svc["runner"]["ports"] == [f"127.0.0.1:{cfg.monitor_port}:{cfg.monitor_port}"]
    assert svc["prometheus"]["profiles"] == ["monitoring"] == svc["grafana"]["profiles"]
    for s in svc.values():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("./"): assert (REPO / src).exists(), src


def _exported_metrics() -> set[str]:
    from prometheus_client import generate_latest
    m = Monitor("x")
    m._book = {"SPY": (1.0, 100.0)}; m.m["working"].labels("submitted"); m.m["orders"].labels("filled"); m.m["drift"].labels("SPY"); m.m["alerts"].labels("r", "sent")
    names = set(re.findall(r"^(quantlab_\w+?)(?:\{| )", generate_latest(m.registry).decode(), re.M))
    return names


def test_prometheus_and_grafana_name_only_metrics_the_runner_exports():
    exported = _exported_metrics()
    assert {"quantlab_equity", "quantlab_heartbeat_timestamp_seconds", "quantlab_fill_latency_seconds_bucket", "quantlab_trading_state"} <= exported
    prom = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = prom["scrape_configs"]
    cfg = load_config(REPO / "deploy" / "live.toml")
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == [f"runner:{cfg.monitor_port}"]
    assert job["authorization"]["type"] == "Bearer" and "credentials_file" in job["authorization"]
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    grafana = json.loads((REPO / "deploy" / "grafana" / "quantlab.json").read_text())
    exprs += [t["expr"] for p in grafana["panels"] for t in p["targets"]]
    named = {n for e in exprs for n in re.findall(r"\bquantlab_\w+", e)}
    assert named and named <= exported, named - exported
    assert len(grafana["panels"]) >= 12 and len({p["id"] for p in grafana["panels"]}) == len(grafana["panels"])
