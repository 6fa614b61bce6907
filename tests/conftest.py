"""Shared pytest builders. Tests import quantlab, never notebooks."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    "The real market data fixtures: $QUANTLAB_SHARED_DATA, else ../shared/data beside the checkout."
    env = os.environ.get("QUANTLAB_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    "Path of ../shared/data; skips with the reason when it is absent."
    path = shared_data_dir()
    if not (path / "README.md").exists():
        pytest.skip(f"real market data fixtures not found at {path} (set QUANTLAB_SHARED_DATA)")
    return path


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    "A fresh, empty store directory, also exported as QUANTLAB_DATA_DIR."
    path = tmp_path / "store"
    monkeypatch.setenv("QUANTLAB_DATA_DIR", str(path))
    return path


FIELDS = ["Open", "High", "Low", "Close", "Volume"]


@pytest.fixture(scope="session")
def spx_fields() -> dict:
    "The bundled S&P 500 (arch, Yahoo ^GSPC) as one-column panels per field, symbol SPX, midnight-UTC stamps."
    from arch.data import sp500
    df = sp500.load()
    df.index = df.index.tz_localize("UTC")
    return {k.lower(): df[[k]].set_axis(["SPX"], axis=1) for k in FIELDS}


@pytest.fixture(scope="session")
def bt_stock_fields(shared_data) -> dict:
    "YHOO, ORCL and NVDA (backtrader's Yahoo files, split-adjusted OHLC) as panels per field on their common dates."
    import pandas as pd
    frames = {s: pd.read_csv(shared_data / "backtrader" / f, index_col="Date", parse_dates=True)
              for s, f in [("YHOO", "yhoo-1996-2015.txt"), ("ORCL", "orcl-1995-2014.txt"), ("NVDA", "nvda-1999-2014.txt")]}
    idx = frames["YHOO"].index.intersection(frames["ORCL"].index).intersection(frames["NVDA"].index).sort_values()
    out = {}
    for f in FIELDS:
        panel = pd.DataFrame({s: frames[s].loc[idx, f] for s in frames}).astype(float)
        panel.index = pd.DatetimeIndex(idx).tz_localize("UTC")
        out[f.lower()] = panel
    return out


def _pypfopt_panel(shared_data, name):
    "A PyPortfolioOpt price file as a float panel stamped at the NYSE close (UTC), index `ts`."
    import pandas as pd
    from quantlab.core import session_closes
    raw = pd.read_csv(shared_data / "pypfopt" / name, parse_dates=["date"]).set_index("date")
    raw.index = session_closes(raw.index)
    raw.index.name = "ts"
    assert raw.index.notna().all()
    return raw.astype("float64")


@pytest.fixture(scope="session")
def pypfopt_closes(shared_data):
    "pypfopt's 20 adjusted closes (1990-2018, late listings as leading NaNs)."
    return _pypfopt_panel(shared_data, "stock_prices.csv")


@pytest.fixture(scope="session")
def pypfopt_spy(shared_data):
    "pypfopt's SPY adjusted close, stamped like `pypfopt_closes`."
    return _pypfopt_panel(shared_data, "spy_prices.csv").iloc[:, 0]


def pytest_configure(config):
    config.addinivalue_line("markers", "broker: needs a real IB Gateway / TWS paper account on 127.0.0.1 (QUANTLAB_IB_PORT); skipped otherwise")


def pytest_collection_modifyitems(config, items):
    "Tests marked `broker` run only against a real paper account: QUANTLAB_IB_PORT set (see the README's IB section)."
    if os.environ.get("QUANTLAB_IB_PORT"): return
    skip = pytest.mark.skip(reason="needs a real IB paper account: start IB Gateway (paper, API on 127.0.0.1) and set QUANTLAB_IB_PORT")
    for item in items:
        if "broker" in item.keywords: item.add_marker(skip)


def reference_calendar(name: str, **kw):
    "exchange_calendars itself, the independent reference some tests compare with (its pandas 3.1 deprecation ignored as in quantlab.core.calendar)."
    import exchange_calendars as xcals
    from quantlab.core import upstream_tz_values
    with upstream_tz_values(): return xcals.get_calendar(name, **kw)


def report_text(html: str) -> str:
    "A report page with its figures' scripts unpacked (they are stored gzipped until plotly.js is loaded)."
    import base64, gzip, re
    figures = [gzip.decompress(base64.b64decode(g)).decode() for g in re.findall(r'data-gz="([^"]+)"', html)]
    return "\n".join([html, *figures])


def pytest_configure(config):
    """Warnings are errors in every run (`make test`, or plain pytest), with one documented exception.

    An asyncio event loop that a library creates and never closes (the loop, and the socket pair it wakes itself
    with) is reported by the garbage collector whenever it happens to run: in whichever test runs then, not the one
    that made it, so the report cannot be acted on there. Those two unraisable-exception reports stay warnings;
    the loops and sockets quantlab itself opens are closed (the IB and fake-TWS tests check it with warnings as
    errors). Everything else, including an unclosed file or a socket we open, fails the test that triggers it."""
    config.addinivalue_line("markers", "broker: runs against a real IB Gateway or TWS (QUANTLAB_IB_PORT, QUANTLAB_IB_ACCOUNT); skipped otherwise")
    for line in ("error",
                 r"default:Exception ignored in. <function BaseEventLoop.__del__:pytest.PytestUnraisableExceptionWarning",
                 r"default:Exception ignored in. <socket.socket fd=\d+, family=1, type=1, proto=0>:pytest.PytestUnraisableExceptionWarning"):
        config.addinivalue_line("filterwarnings", line)
