"""quantlab.research.labels against brute-force references on real prices and on hand-made paths."""
import numpy as np
import pandas as pd
import pytest

from quantlab.core import DataError, UsageError, session_closes
from quantlab.research.labels import (ewm_volatility, forward_returns, known_labels, label_end, meta_labels,
                             triple_barrier)


@pytest.fixture(scope="module")
def stocks(pypfopt_closes):
    "PyPortfolioOpt's 20 adjusted closes, stamped at the NYSE close (UTC)."
    return pypfopt_closes.copy()


@pytest.fixture(scope="module")
def yhoo(shared_data):
    df = pd.read_csv(shared_data / "backtrader" / "yhoo-1996-2015.txt", parse_dates=["Date"]).set_index("Date")
    df.index = session_closes(df.index)
    return df


def _brute_barrier(close, t0, target, side, pt, sl, max_hold):
    "The book's applyPtSlOnT1 for one event, written plainly (None when unresolved)."
    n = len(close)
    p0 = close[t0]
    upper = pt * target if pt > 0 else np.inf
    lower = -sl * target if sl > 0 else -np.inf
    last = t0 + max_hold
    for i in range(t0 + 1, min(last, n - 1) + 1):
        if np.isnan(close[i]): continue
        r = (close[i] / p0 - 1) * side
        if r >= upper: return i, r, "profit_take"
        if r <= lower: return i, r, "stop_loss"
    if last > n - 1: return None
    i = last
    while np.isnan(close[i]): i -= 1
    return last, (close[i] / p0 - 1) * side, "time"


def test_forward_returns_match_a_loop_over_dates(stocks):
    fwd = forward_returns(stocks, 5)
    values = stocks.to_numpy()
    for r in range(0, len(stocks), 97):
        for c in range(stocks.shape[1]):
            expected = values[r + 5, c] / values[r, c] - 1 if r + 5 < len(stocks) else np.nan
            np.testing.assert_allclose(fwd.iat[r, c], expected, rtol=1e-12, equal_nan=True)
    assert fwd.iloc[-5:].isna().all().all()


def test_next_open_fill_uses_the_opens_after_the_decision_bar(yhoo):
    opens = yhoo[["Open"]].rename(columns={"Open": "YHOO"})
    closes = yhoo[["Close"]].rename(columns={"Close": "YHOO"})
    fwd = forward_returns(closes, 3, fill="next_open", open=opens)["YHOO"]
    o = yhoo["Open"].to_numpy()
    i = 1000
    assert fwd.iloc[i] == pytest.approx(o[i + 4] / o[i + 1] - 1, rel=1e-12)
    assert fwd.iloc[-4:].isna().all() and fwd.iloc[-5:].notna().iloc[0]
    end = label_end(closes.index, 3, "next_open")
    assert end.iloc[i] == closes.index[i + 4]


def test_known_labels_never_show_a_label_after_as_of(stocks):
    fwd = forward_returns(stocks, 10)
    end = label_end(stocks.index, 10)
    as_of = stocks.index[5000]
    seen = known_labels(fwd, end, as_of)
    known_rows = seen.notna().any(axis=1)
    assert (end[known_rows[known_rows].index] <= as_of).all()
    # the last known row is exactly 10 bars before as_of, and it is not censored
    assert known_rows[known_rows].index[-1] == stocks.index[4990]
    pd.testing.assert_frame_equal(seen.loc[: stocks.index[4990]], fwd.loc[: stocks.index[4990]])


def test_ewm_volatility_matches_pandas_on_returns(stocks):
    vol = ewm_volatility(stocks[["AAPL", "GOOG"]], span=50, min_periods=20)
    ret = stocks["AAPL"].pct_change(fill_method=None)
    ref = ret.ewm(span=50, min_periods=20).std()
    pd.testing.assert_series_equal(vol["AAPL"], ref, check_names=False)


@pytest.mark.parametrize("pt,sl,max_hold", [(1.0, 1.0, 10), (2.0, 1.0, 20), (0.0, 1.5, 15), (1.0, 0.0, 5)])
def test_triple_barrier_matches_brute_force_on_real_prices(stocks, pt, sl, max_hold):
    panel = stocks[["AAPL", "GOOG", "SHLD", "FB"]].iloc[-2500:]  # GOOG and FB list inside the window
    out = triple_barrier(panel, pt=pt, sl=sl, max_hold=max_hold, span=60)
    vol = ewm_volatility(panel, 60)
    expected = []
    for c, sym in enumerate(panel.columns):
        close = panel[sym].to_numpy()
        trg = vol[sym].to_numpy()
        for t0 in range(len(panel)):
            if np.isnan(close[t0]) or not np.isfinite(trg[t0]) or trg[t0] <= 0: continue
            res = _brute_barrier(close, t0, trg[t0], 1.0, pt, sl, max_hold)
            if res is None: continue
            i, r, kind = res
            expected.append((panel.index[t0], sym, panel.index[i], r, kind))
    ref = pd.DataFrame(expected, columns=["ts", "symbol", "t_end", "ret", "barrier"]).sort_values(["ts", "symbol"])
    got = out.astype({"symbol": str, "barrier": str}).sort_values(["ts", "symbol"]).reset_index(drop=True)
    ref = ref.reset_index(drop=True)
    assert len(got) == len(ref) > 5000
    assert (got["ts"] == ref["ts"]).all() and (got["symbol"] == ref["symbol"]).all()
    assert (got["t_end"] == ref["t_end"]).all()
    assert (got["barrier"] == ref["barrier"]).all()
    np.testing.assert_allclose(got["ret"], ref["ret"], rtol=1e-12)
    np.testing.assert_array_equal(got["label"], np.sign(ref["ret"]).astype("int8"))
    # all three outcomes occur when both horizontal barriers are on
    if pt and sl: assert set(got["barrier"]) == {"profit_take", "stop_loss", "time"}


def test_triple_barrier_labels_are_known_only_after_ts(stocks):
    panel = stocks[["AAPL", "XOM"]].iloc[-1000:]
    out = triple_barrier(panel, pt=1, sl=1, max_hold=7)
    steps = panel.index.get_indexer(out["t_end"]) - panel.index.get_indexer(out["ts"])
    assert steps.min() >= 1 and steps.max() <= 7
    # nothing is labelled whose vertical barrier lies beyond the data unless a horizontal barrier was hit
    late = out[panel.index.get_indexer(out["ts"]) > len(panel) - 1 - 7]
    assert (late["barrier"] != "time").all()


def test_meta_labels_match_brute_force_with_random_sides(stocks):
    panel = stocks[["JPM", "BAC", "WMT"]].iloc[-1500:]
    rng = np.random.default_rng(7)
    side = pd.DataFrame(rng.choice([-1.0, 0.0, 1.0, np.nan], size=panel.shape), index=panel.index, columns=panel.columns)
    out = meta_labels(panel, side, pt=1.5, sl=1.0, max_hold=10, span=50)
    vol = ewm_volatility(panel, 50)
    rows = []
    for sym in panel.columns:
        close, trg, sd = panel[sym].to_numpy(), vol[sym].to_numpy(), side[sym].to_numpy()
        for t0 in range(len(panel)):
            if not np.isfinite(trg[t0]) or not np.isfinite(sd[t0]) or sd[t0] == 0: continue
            res = _brute_barrier(close, t0, trg[t0], sd[t0], 1.5, 1.0, 10)
            if res is None: continue
            rows.append((panel.index[t0], sym, int(res[1] > 0), res[2], int(sd[t0])))
    ref = pd.DataFrame(rows, columns=["ts", "symbol", "meta", "barrier", "side"]).sort_values(["ts", "symbol"]).reset_index(drop=True)
    got = out.astype({"symbol": str, "barrier": str}).sort_values(["ts", "symbol"]).reset_index(drop=True)
    assert len(got) == len(ref) > 1000
    np.testing.assert_array_equal(got["meta"], ref["meta"])
    np.testing.assert_array_equal(got["side"], ref["side"])
    assert (got["barrier"] == ref["barrier"]).all()
    strict = meta_labels(panel, side, pt=1.5, sl=1.0, max_hold=10, span=50, rule="profit_take")
    assert (strict["meta"] == (strict["barrier"] == "profit_take")).all()
    assert strict["meta"].sum() < out["meta"].sum()


def test_events_and_min_target_filter_starts():
    ix = pd.date_range("2024-01-01 21:00", periods=8, freq="D", tz="UTC")
    close = pd.DataFrame({"A": [100, 102, 104, 103, 101, 99, 100, 102.0]}, index=ix)
    events = pd.DataFrame({"A": [True, False, False, True, False, False, False, False]}, index=ix)
    out = triple_barrier(close, pt=1, sl=1, max_hold=3, target=0.02, events=events)
    assert list(out["ts"]) == [ix[0], ix[3]]
    # 100 -> 102 is +2% (profit-take at ix[1]); 103 -> 101 is -1.94%, 99 is -3.9% (stop at ix[5])
    assert list(out["barrier"]) == ["profit_take", "stop_loss"] and list(out["t_end"]) == [ix[1], ix[5]]
    target = pd.DataFrame({"A": [0.001] * 4 + [0.05] * 4}, index=ix)
    assert triple_barrier(close, max_hold=2, target=target, min_target=0.01)["ts"].min() >= ix[4]


def test_guard_flags_labels_but_not_the_volatility_target(stocks):
    from quantlab.research.guard import check_no_lookahead
    panel = stocks[["AAPL", "XOM", "GE"]].iloc[-1500:]
    cuts = panel.index[[400, 900, 1200]]
    fwd = check_no_lookahead(lambda c: forward_returns(c, 5), panel, dates=cuts, raise_on_leak=False)
    assert not fwd.ok
    # exactly the last 5 rows before each cut change (their labels reach past the cut)
    assert set(fwd.checks["differ"]) == {5 * 3}
    tb = check_no_lookahead(lambda c: triple_barrier(c, 1, 1, 10, span=50), panel, dates=cuts, raise_on_leak=False)
    assert not tb.ok
    assert check_no_lookahead(lambda c: ewm_volatility(c, 50), panel, dates=cuts).ok


def test_a_label_known_by_a_cut_is_the_same_on_data_truncated_there(stocks):
    "t_end is honest: every event with t_end <= cut comes out identical when the data stops at the cut."
    panel = stocks[["AAPL", "XOM", "GE", "BAC"]].iloc[-1200:].copy()
    holes = np.random.default_rng(1).random(panel.shape) < 0.05   # missing prices inside paths
    panel = panel.mask(holes)
    full = triple_barrier(panel, pt=1, sl=1.5, max_hold=12, span=40).astype({"symbol": str, "barrier": str})
    for cut in panel.index[[300, 700, 1100]]:
        trunc = triple_barrier(panel.loc[:cut], pt=1, sl=1.5, max_hold=12, span=40).astype({"symbol": str, "barrier": str})
        known = full[full["t_end"] <= cut].reset_index(drop=True)
        pd.testing.assert_frame_equal(trunc[trunc["t_end"] <= cut].reset_index(drop=True), known)
        assert (trunc["t_end"] <= cut).all()   # truncated data resolves nothing beyond its end
        fwd_full, fwd_trunc = forward_returns(panel, 5), forward_returns(panel.loc[:cut], 5)
        ends = label_end(panel.index, 5)
        rows = ends[ends <= cut].index
        pd.testing.assert_frame_equal(fwd_trunc.loc[rows], fwd_full.loc[rows])


def test_a_missing_price_inside_a_path_is_skipped():
    ix = pd.date_range("2024-01-01 21:00", periods=6, freq="D", tz="UTC")
    close = pd.DataFrame({"A": [100, 100.5, np.nan, 100.8, np.nan, 103.0]}, index=ix)
    out = triple_barrier(close, pt=1, sl=1, max_hold=4, target=0.05).set_index("ts")
    # from ix[0]: no barrier within 4 bars; the close at the vertical (ix[4]) is missing, so the event is valued
    # at the last valid close before it (ix[3], 100.8) but known only at the vertical barrier itself
    assert out.loc[ix[0], "barrier"] == "time" and out.loc[ix[0], "t_end"] == ix[4]
    assert out.loc[ix[0], "ret"] == pytest.approx(0.008)
    assert ix[2] not in out.index   # no event where the price is missing


def test_bad_input_is_named():
    ix = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    bad = pd.DataFrame({"A": [1.0, -2.0, 3.0]}, index=ix)
    with pytest.raises(DataError) as err:
        triple_barrier(bad, max_hold=1, target=0.01)
    assert "row 2" in str(err.value) and "'A'" in str(err.value)
    with pytest.raises(UsageError, match="sorted"):
        forward_returns(bad.abs().iloc[::-1])
    with pytest.raises(UsageError, match="fill"):
        forward_returns(bad.abs(), fill="vwap")
    with pytest.raises(UsageError, match="max_hold"):
        triple_barrier(bad.abs(), max_hold=0)
