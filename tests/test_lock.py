"""The locked install: requirements.lock agrees with settings.ini, `make` installs from it, and a plain
`pip install .` (no extras) into a clean virtual environment pulls in no copyleft package and runs a backtest.
The clean environment is built offline from uv's cache (filled by `make`'s install from the lock): no network."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from quantlab.core import lock_hash, requirements_fingerprint

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"


def _pins() -> dict[str, str]:
    return {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", LOCK.read_text(), re.M)}


def _header() -> tuple[str, str]:
    m = re.match(r"# quantlab lock: extras (\S+); inputs sha256 ([0-9a-f]{64})", LOCK.read_text())
    assert m, "requirements.lock lacks its first line (make lock writes it)"
    return m.group(1), m.group(2)


def test_the_lock_was_compiled_from_these_requirements_and_the_makefiles_extras():
    extras, sha = _header()
    make = re.search(r"^EXTRAS \?= (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert extras == make, f"the lock covers extras {extras}, the Makefile installs {make}: run `make lock`"
    assert sha == requirements_fingerprint(REPO / "settings.ini", extras), "settings.ini's requirements changed since the lock was compiled: run `make lock`"


def test_every_requirement_in_settings_is_pinned_inside_its_range():
    import configparser
    cfg = configparser.ConfigParser(); cfg.read(REPO / "settings.ini")
    extras, _ = _header()
    pins, bad = _pins(), []
    for key in ["requirements", *(f"{e}_requirements" for e in extras.split(","))]:
        for text in cfg["DEFAULT"][key].split():
            req = Requirement(text)
            v = pins.get(canonicalize_name(req.name))
            if v is None or not req.specifier.contains(v, prereleases=True): bad.append(f"{text} ({key}): lock has {v}")
    assert not bad, "; ".join(bad)
    assert all("--hash=sha256:" in block for block in LOCK.read_text().split("\n\n") if "==" in block)


def test_the_installed_environment_is_the_lock():
    from importlib import metadata
    pins = _pins()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {n: (v, installed.get(n)) for n, v in pins.items() if installed.get(n) != v}
    assert not differ, f"installed packages differ from requirements.lock (make venv reinstalls): {differ}"
    assert lock_hash() == __import__("hashlib").sha256(LOCK.read_bytes()).hexdigest()[:16]


def test_a_plain_install_pulls_in_no_copyleft_package_and_runs_a_backtest(tmp_path):
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is installed into .venv by make (it installs from the lock)"
    venv = tmp_path / "plain"
    env = {**os.environ, "UV_OFFLINE": "1", "VIRTUAL_ENV": str(venv)}
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, env=env, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([uv, "pip", "install", "-q", "--offline", "--python", str(py), "-c", str(LOCK), str(REPO)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, f"offline install from uv's cache failed (make fills it): {r.stderr[-2000:]}"
    names = subprocess.run([str(py), "-c", "import json, importlib.metadata as m; print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))"],
                           capture_output=True, text=True, check=True).stdout
    got = set(json.loads(names))
    assert "quantlab" in got and not {"backtesting", "backtrader", "pmdarima", "mlflow", "ib-async", "dask"} & got
    lic = subprocess.run([str(py), str(REPO / "tests" / "licences.py")], capture_output=True, text=True)
    assert lic.returncode == 0 and lic.stdout.strip() == "no copyleft", lic.stdout + lic.stderr
    bt = subprocess.run([str(venv / "bin" / "quantlab"), "backtest", "sma_cross", "-p", "fast", "20", "-p", "slow", "100", "--end", "2004-12-31", "--json"],
                        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert bt.returncode == 0, bt.stderr[-2000:]
    assert json.loads(bt.stdout)["fills"] > 0
    miss = subprocess.run([str(venv / "bin" / "quantlab"), "data", "samples"], capture_output=True, text=True, cwd=tmp_path)
    assert "not installed: goog, eurusd, msft (their packages come with the 'samples' extra: pip install 'quantlab[samples]')" in miss.stderr
    doc = subprocess.run([str(venv / "bin" / "quantlab"), "doctor"], capture_output=True, text=True, cwd=tmp_path)
    assert doc.returncode == 0 and "requirements: ok" in doc.stdout and "lock: none" in doc.stdout
    assert "extra track: missing or wrong: mlflow" in doc.stdout and "pip install 'quantlab[track]'" in doc.stdout
    need = subprocess.run([str(venv / "bin" / "quantlab"), "doctor", "--need", "track"], capture_output=True, text=True, cwd=tmp_path)
    assert need.returncode == 1 and "missing what a run needs: extra track" in need.stderr


def test_the_run_card_records_the_lock(spx_fields):
    from quantlab.backtest.driver import run_backtest
    from quantlab.strategies import get_strategy
    res = run_backtest(get_strategy("sma_cross", fast=5, slow=20), {k: v.iloc[:100] for k, v in spx_fields.items()})
    assert res.run_card["lock"] == lock_hash() and len(res.run_card["lock"]) == 16


def test_doctor_reports_this_environment_and_fails_on_a_missing_need(capsys):
    from quantlab.cli import main
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"lock: {lock_hash()} (" in out and "0 differ from what is installed" in out and "extra samples: ok" in out
    assert main(["doctor", "--need", "warp-drive"]) == 2
