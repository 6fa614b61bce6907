"""quantlab.data.corporate: adjustment factors checked against the vendors' own adjusted columns."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from quantlab.core import DataError, UsageError, session_closes
from quantlab.data.corporate import actions_from_columns, adjust_bars, adjustment_factors, unadjust_splits
from quantlab.data.loaders import load_file


@pytest.fixture(scope="module")
def wiki(shared_data):
    return load_file(shared_data / "zipline" / "QUANDL_SAMPLE_TABLE.csv", "quandl_wiki")


@pytest.mark.parametrize("sym", ["AAPL", "MSFT", "BRK_A", "ZEN"])
def test_total_return_factor_ratios_match_quandl(wiki, sym):
    """README rule: factor(day before) / factor(ex-day) = (1 - div/close_prev) / split, 1.3e-4 on events, 1e-13 else."""
    m = (wiki.bars["symbol"] == sym).to_numpy()
    bars, vendor = wiki.bars[m], (wiki.extra["adj_close"] / wiki.bars["close"])[m].to_numpy()
    ours = adjustment_factors(bars, wiki.actions, "total").to_numpy()
    r_ours, r_vendor = ours[:-1] / ours[1:], vendor[:-1] / vendor[1:]
    ex_days = set(wiki.actions.loc[wiki.actions["symbol"] == sym, "ex_date"].dt.date)
    event = bars["ts"].dt.date.isin(ex_days).to_numpy()[1:]
    assert np.abs(r_ours - r_vendor)[event].max(initial=0) < 1.3e-4
    assert np.abs(r_ours - r_vendor)[~event].max() < 1e-12
    assert ours[-1] == 1.0  # latest price unchanged (Quandl's is not: it includes later dividends)
    level = vendor / ours  # so the levels differ by one constant per symbol
    assert level.max() / level.min() - 1 < 2.6e-4


def test_split_only_factor_and_volume_match_quandl(wiki):
    m = (wiki.bars["symbol"] == "AAPL").to_numpy()
    bars, extra = wiki.bars[m], wiki.extra[m]
    adj = adjust_bars(bars, wiki.actions, "split")
    np.testing.assert_allclose(adj["volume"].to_numpy(), extra["adj_volume"].to_numpy(), rtol=1e-12)
    f = adjustment_factors(bars, wiki.actions, "split").to_numpy()
    before = (bars["ts"] < "2014-06-09").to_numpy()
    assert np.all(f[before] == 1 / 7) and np.all(f[~before] == 1.0)


def test_total_adjusted_ohlc_match_quandl_up_to_a_constant(wiki):
    m = (wiki.bars["symbol"] == "MSFT").to_numpy()
    adj = adjust_bars(wiki.bars[m], wiki.actions, "total")
    for c in ["open", "high", "low", "close"]:
        k = wiki.extra[m][f"adj_{c}"].to_numpy() / adj[c].to_numpy()
        assert k.max() / k.min() - 1 < 2.6e-4, c


def test_csvdir_total_return_agrees_with_quandl_across_vendors(shared_data, wiki):
    """AAPL 2014 from zipline's csvdir (Yahoo) vs Quandl's adj_close: same dividends, same split, same factors."""
    c = load_file(shared_data / "zipline" / "csvdir_daily" / "AAPL.csv.gz", "zipline_csvdir")
    ours = adjustment_factors(c.bars, c.actions, "total")
    m = (wiki.bars["symbol"] == "AAPL").to_numpy()
    q = pd.Series((wiki.extra["adj_close"] / wiki.bars["close"])[m].to_numpy(), index=wiki.bars["ts"][m])
    o = pd.Series(ours.to_numpy(), index=c.bars["ts"]).loc[q.index]
    ratio = (q / o).to_numpy()
    assert ratio.max() / ratio.min() - 1 < 1e-4


def test_actions_from_csvdir_columns(shared_data):
    raw = pd.read_csv(shared_data / "zipline" / "csvdir_daily" / "KO.csv.gz")
    a = actions_from_columns(raw, symbol="KO")
    assert (a["kind"] == "dividend").sum() == 12 and a.loc[a["kind"] == "split", "value"].tolist() == [2.0]
    assert a["ex_date"].is_monotonic_increasing
    raw.loc[99, "split"] = -2.0
    with pytest.raises(DataError, match="row 100, column 'split'"):
        actions_from_columns(raw, symbol="KO", file="KO.csv.gz")


def test_dividend_above_price_and_bad_how_are_refused():
    bars = pd.DataFrame({"symbol": "X", "ts": session_closes(["2024-01-02", "2024-01-03"]), "close": [1.0, 1.0]})
    acts = pd.DataFrame({"symbol": ["X"], "ex_date": ["2024-01-03"], "kind": ["dividend"], "value": [1.5]})
    with pytest.raises(DataError, match="not below the previous close"):
        adjustment_factors(bars, acts, "total")
    assert adjustment_factors(bars, acts, "split").tolist() == [1.0, 1.0]
    with pytest.raises(UsageError):
        adjustment_factors(bars, acts, "dividend")


def test_unsorted_bars_get_the_same_factors(wiki):
    shuffled = wiki.bars.sample(frac=1.0, random_state=3)
    f1 = adjustment_factors(wiki.bars, wiki.actions, "total")
    f2 = adjustment_factors(shuffled, wiki.actions, "total")
    pd.testing.assert_series_equal(f1, f2.loc[f1.index])


@st.composite
def _series_with_events(draw):
    n = draw(st.integers(3, 40))
    closes = np.array(draw(st.lists(st.floats(1.0, 1000.0), min_size=n, max_size=n)))
    days = pd.bdate_range("2024-01-02", periods=n)
    k = draw(st.integers(0, min(4, n - 1)))
    pos = draw(st.lists(st.integers(1, n - 1), min_size=k, max_size=k, unique=True))
    kinds = draw(st.lists(st.sampled_from(["split", "dividend"]), min_size=k, max_size=k))
    vals = [draw(st.sampled_from([2.0, 3.0, 0.5, 7.0])) if kd == "split" else
            draw(st.floats(0.0001, 0.9)) * closes[p - 1] for kd, p in zip(kinds, pos)]
    bars = pd.DataFrame({"symbol": "X", "ts": pd.DatetimeIndex(days).tz_localize("UTC") + pd.Timedelta("21h"),
                         "open": closes, "high": closes, "low": closes, "close": closes, "volume": 100.0})
    acts = pd.DataFrame({"symbol": "X", "ex_date": days[pos] if k else pd.DatetimeIndex([]), "kind": kinds,
                         "value": vals})
    return bars, acts, pos


@settings(max_examples=60, deadline=None)
@given(_series_with_events())
def test_factors_follow_the_documented_rule(case):
    bars, acts, pos = case
    f = adjustment_factors(bars, acts, "total").to_numpy()
    close = bars["close"].to_numpy()
    expected_ratio = np.ones(len(bars) - 1)
    for (_, a), p in zip(acts.iterrows(), pos):
        expected_ratio[p - 1] *= (1.0 / a["value"]) if a["kind"] == "split" else (1 - a["value"] / close[p - 1])
    np.testing.assert_allclose(f[:-1] / f[1:], expected_ratio, rtol=1e-12)
    assert f[-1] == 1.0 and np.all(f > 0)
    # split-adjusting then converting back to raw is the identity
    adj = adjust_bars(bars, acts, "split")
    back, _ = unadjust_splits(adj, acts)
    np.testing.assert_allclose(back["close"].to_numpy(), close, rtol=1e-12)
    np.testing.assert_allclose(back["volume"].to_numpy(), bars["volume"].to_numpy(), rtol=1e-12)
