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
