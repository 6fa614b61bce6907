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
