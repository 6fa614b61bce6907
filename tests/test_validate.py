"""quantlab.data.validate on the real sample files and on damaged copies of them."""
import json

from conftest import reference_calendar
import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings, strategies as st

from quantlab.core import DataError
from quantlab.data.loaders import load_file
from quantlab.data.validate import CHECKS, ERROR_CHECKS, validate_bars

YAHOO = ["yhoo-1996-2015.txt", "orcl-1995-2014.txt", "nvda-1999-2014.txt"]


def _rewrite(src, dst, edit):
    "Copy a text file with `edit(lines)` applied to its lines (lines[0] is the header)."
    lines = src.read_text().splitlines()
    lines = edit(lines)
    dst.write_text("\n".join(lines) + "\n")
    return dst


def _set_field(line, i, value):
    parts = line.split(",")
    parts[i] = value
    return ",".join(parts)


@pytest.mark.parametrize("name", YAHOO)
def test_real_yahoo_files_have_no_errors_and_no_gaps(shared_data, name):
    path = shared_data / "backtrader" / name
    rep = validate_bars(load_file(path, "yahoo").bars, file=path)
    assert rep.ok, rep.errors
    assert rep.freq == "1D"
    c = rep.counts()
    assert c["gap"] == 0 and c["off_calendar"] == 0 and c["duplicate"] == 0 and c["unsorted"] == 0
    s = rep.summary()
    assert int(s["rows"].iloc[0]) == len(pd.read_csv(path))


def test_unadjusted_split_is_a_return_outlier_at_its_row(shared_data):
    path = shared_data / "zipline" / "QUANDL_SAMPLE_TABLE.csv"
    raw = pd.read_csv(path)
    rep = validate_bars(load_file(path, "quandl_wiki").bars, file=path)
    assert rep.ok
    out = rep.findings[rep.findings["check"] == "outlier"]
    expected_row = int(np.flatnonzero((raw["ticker"] == "AAPL") & (raw["date"] == "2014-06-09"))[0]) + 1
    assert out["row"].tolist() == [expected_row]
    assert out["symbol"].tolist() == ["AAPL"]
    assert out["value"].iloc[0] == pytest.approx(np.log(93.70 / 645.57), abs=1e-4)
    assert list(rep.summary().index) == ["AAPL", "BRK_A", "MSFT", "ZEN"]
    assert rep.summary().loc["ZEN", "rows"] == 160


def test_index_without_volume_gets_one_zero_volume_finding(shared_data):
    path = shared_data / "backtrader" / "2005-2006-day-001.txt"
    rep = validate_bars(load_file(path, "backtrader", symbol="SX5E", calendar="XEUR").bars, calendar="XEUR")
    z = rep.findings[rep.findings["check"] == "zero_volume"]
    assert len(z) == 1 and z["value"].iloc[0] == 512 and z["row"].iloc[0] == 1
    assert rep.ok and rep.counts()["gap"] == 0


def test_table_of_closes_gets_one_missing_volume_finding_per_symbol(shared_data):
    "A wide close table has no volume: one nan_volume finding per symbol, not one per bar; a single missing volume stays one finding."
    bars = load_file(shared_data / "pypfopt" / "stock_prices.csv", "wide_close").bars
    rep = validate_bars(bars)
    n = rep.findings[rep.findings["check"] == "nan_volume"]
    assert len(n) == 20 and n.set_index("symbol")["value"].to_dict() == bars.groupby("symbol").size().astype(float).to_dict()
    assert rep.ok
    some = load_file(shared_data / "zipline" / "csvdir_daily" / "AAPL.csv.gz", "zipline_csvdir").bars
    some.loc[[10, 20], "volume"] = np.nan
    m = validate_bars(some).findings.query("check == 'nan_volume'")
    assert m["row"].tolist() == [11, 21] and m["message"].eq("volume is missing").all()


def test_intraday_gaps_match_an_independent_count(shared_data):
    """The README counts 725 intra-day gaps in the 1-minute file; every one is a gap finding inside the day."""
    path = shared_data / "backtrader" / "2006-01-02-volume-min-001.txt"
    bars = load_file(path, "backtrader_intraday", symbol="FESX").bars
    rep = validate_bars(bars, calendar="XEUR", file=path)
    assert rep.freq == "min" and rep.ok
    local = bars["ts"].dt.tz_convert("Europe/Berlin")
    step = bars["ts"].diff()
    inner = (step > pd.Timedelta("1min")) & (local.dt.date == local.dt.date.shift())
    assert inner.sum() == 725
    gaps = rep.findings[rep.findings["check"] == "gap"]
    day = gaps["ts"].dt.tz_convert("Europe/Berlin").dt.date
    first = bars.groupby(local.dt.date)["ts"].min().reindex(day).to_numpy()
    last = bars.groupby(local.dt.date)["ts"].max().reindex(day).to_numpy()
    inside = gaps[(gaps["ts"].to_numpy() > first) & (gaps["ts"].to_numpy() < last)]
    assert len(inside) == 725
    assert inside["value"].sum() == ((step[inner] / pd.Timedelta("1min")) - 1).sum()
    # each gap is reported at the row of the bar after it, whose ts is the gap's end plus one bar
    after = bars["ts"].iloc[inside["row"].to_numpy() - 1].to_numpy()
    gap_end = inside["ts"] + pd.to_timedelta(inside["value"], unit="min")
    assert (after == gap_end.to_numpy()).all()


def test_removed_sessions_are_reported_as_gaps(shared_data, tmp_path):
    src = shared_data / "backtrader" / "yhoo-1996-2015.txt"
    dates = ["2010-03-02", "2010-03-03", "2012-07-05"]
    path = _rewrite(src, tmp_path / "yhoo.txt", lambda ls: [l for l in ls if l.split(",")[0] not in dates])
    rep = validate_bars(load_file(path, "yahoo").bars, file=path)
    gaps = rep.findings[rep.findings["check"] == "gap"]
    assert gaps["value"].tolist() == [2, 1]
    nyse = reference_calendar("XNYS")
    assert gaps["ts"].tolist() == [nyse.session_close("2010-03-02"), nyse.session_close("2012-07-05")]
    lines = path.read_text().splitlines()
    assert lines[gaps["row"].iloc[0]].startswith("2010-03-04")  # the row after the gap (header is line 0)


def test_negative_price_in_file_is_an_error_at_its_row(shared_data, tmp_path):
    src = shared_data / "backtrader" / "orcl-1995-2014.txt"
    path = _rewrite(src, tmp_path / "orcl.txt", lambda ls: ls[:100] + [_set_field(ls[100], 4, "-3.5")] + ls[101:])
    rep = validate_bars(load_file(path, "yahoo").bars, file=path)
    assert not rep.ok
    first = rep.errors.iloc[0]
    assert (first["check"], first["row"], first["column"], first["value"]) == ("non_positive_price", 100, "close", -3.5)
    with pytest.raises(DataError) as err:
        rep.raise_for_errors()
    assert f"file {path}, row 100, column 'close'" in str(err.value)


def test_high_below_low_is_an_ohlc_error(shared_data, tmp_path):
    src = shared_data / "backtrader" / "nvda-1999-2014.txt"
    def edit(ls):
        d, o, h, l, c, a, v = ls[2000].split(",")
        ls[2000] = ",".join([d, o, l, h, c, a, v])  # high and low swapped
        return ls
    path = _rewrite(src, tmp_path / "nvda.txt", edit)
    rep = validate_bars(load_file(path, "yahoo").bars, file=path)
    e = rep.errors
    assert e[["check", "row", "column"]].values.tolist() == [["ohlc_inconsistent", 2000, "high"]]


def test_duplicate_timestamps(shared_data, tmp_path):
    src = shared_data / "zipline" / "csvdir_daily" / "IBM.csv.gz"
    raw = pd.read_csv(src)
    lines = ["date,open,high,low,close,volume,dividend,split"] + raw.astype(str).agg(",".join, axis=1).tolist()
    same = lines[:11] + [lines[10]] + lines[11:]             # data row 10 repeated as row 11: warning
    other = lines[:11] + [_set_field(lines[10], 5, "1234")] + lines[11:]  # same date, other volume: error
    (tmp_path / "IBM.csv").write_text("\n".join(same) + "\n")
    rep = validate_bars(load_file(tmp_path / "IBM.csv", "zipline_csvdir").bars)
    assert rep.ok
    assert rep.findings.loc[rep.findings["check"] == "duplicate", "row"].tolist() == [11]
    (tmp_path / "IBM.csv").write_text("\n".join(other) + "\n")
    rep = validate_bars(load_file(tmp_path / "IBM.csv", "zipline_csvdir").bars, file=tmp_path / "IBM.csv")
    assert rep.errors[["check", "row", "column", "value"]].values.tolist() == [["duplicate_conflict", 11, "volume", 1234.0]]
    assert "same symbol and ts as row 10" in rep.errors["message"].iloc[0]
    with pytest.raises(DataError, match=f"file {tmp_path / 'IBM.csv'}, row 11, column 'volume'"):
        rep.raise_for_errors()


def test_nan_negative_volume_and_unsorted(shared_data):
    bars = load_file(shared_data / "zipline" / "csvdir_daily" / "MSFT.csv.gz", "zipline_csvdir").bars
    bad = bars.copy()
    bad.loc[4, "close"] = np.nan
    bad.loc[7, "volume"] = -100.0
    rep = validate_bars(bad)
    assert rep.errors[["check", "row", "column"]].values.tolist() == [["nan", 5, "close"], ["negative_volume", 8, "volume"]]
    shuffled = bars.iloc[np.r_[0:50, 60:100, 50:60, 100:len(bars)]].reset_index(drop=True)
    rep = validate_bars(shuffled)
    assert rep.ok
    assert rep.findings.loc[rep.findings["check"] == "unsorted", "row"].tolist() == [91]
    assert rep.counts()["gap"] == 0  # sorting happened before the gap check


def test_unparseable_input_is_an_error_finding():
    df = pd.DataFrame({"symbol": ["A", "A"], "ts": ["2024-01-02T21:00Z", "2024-01-03T21:00Z"], "open": [1, 1],
                       "high": [1, 1], "low": [1, 1], "close": ["1.0", "abc"], "volume": [1, 1]})
    rep = validate_bars(df, file="x.csv")
    assert rep.errors[["check", "row", "column"]].values.tolist() == [["unparseable", 2, "close"]]
    with pytest.raises(DataError, match="file x.csv, row 2, column 'close'"):
        rep.raise_for_errors()


def test_report_serialises_to_json(shared_data):
    path = shared_data / "zipline" / "QUANDL_SAMPLE_TABLE.csv"
    rep = validate_bars(load_file(path, "quandl_wiki").bars, file=path)
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["ok"] is True and d["rows"] == 916 and d["counts"]["outlier"] == 1
    assert d["findings"][0]["ts"].startswith("2014-06-09")
    assert {r["symbol"] for r in d["summary"]} == {"AAPL", "BRK_A", "MSFT", "ZEN"}
    assert set(d["counts"]) == set(CHECKS)


def test_two_thousand_symbols_daily_is_handled_per_symbol():
    """Many symbols, few bars each: the per-symbol loop must still be right."""
    days = pd.DatetimeIndex(reference_calendar("XNYS").sessions_in_range("2024-01-02", "2024-01-31"))
    closes = pd.DatetimeIndex(reference_calendar("XNYS").schedule.loc[days, "close"])
    n_sym = 2000
    df = pd.DataFrame({"symbol": np.repeat([f"S{i}" for i in range(n_sym)], len(days)),
                       "ts": np.tile(closes, n_sym), "open": 10.0, "high": 12.0, "low": 8.0,
                       "close": np.random.default_rng(0).uniform(9, 11, n_sym * len(days)), "volume": 5.0})
    df = df.drop(index=[5, 5 + 3 * len(days)]).reset_index(drop=True)
    rep = validate_bars(df)
    gaps = rep.findings[rep.findings["check"] == "gap"]
    assert gaps["symbol"].tolist() == ["S0", "S3"] and rep.ok


def _reference_errors(o, h, l, c, v):
    "Row-by-row reference of the error checks (slow, obvious)."
    out = set()
    for i in range(len(o)):
        px = {"open": o[i], "high": h[i], "low": l[i], "close": c[i]}
        for k, x in px.items():
            if not np.isfinite(x): out.add(("nan", i + 1))
            elif x <= 0: out.add(("non_positive_price", i + 1))
        if v[i] < 0: out.add(("negative_volume", i + 1))
        if all(np.isfinite(x) for x in px.values()):
            top, bottom = max(o[i], c[i]), min(o[i], c[i])  # slack relative to the size, whatever the sign (prices <= 0 are errors anyway)
            if h[i] < top - 1e-9 * abs(top) or h[i] < l[i] - 1e-9 * abs(l[i]) or l[i] > bottom + 1e-9 * abs(bottom):
                out.add(("ohlc_inconsistent", i + 1))
    return out


price = st.one_of(st.floats(min_value=-10, max_value=1e6), st.just(np.nan), st.just(np.inf))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(price, price, price, price, st.floats(min_value=-5, max_value=1e9)), min_size=1, max_size=25))
@example(rows=[(np.nan, np.nan, np.inf, 1.1125369292536007e-308, 1e-06), (np.inf, np.nan, np.inf, 2.0, 210234653.0149534)])  # 2.0 / 1e-308 overflowed (found by CI)
def test_validate_never_crashes_and_agrees_with_a_row_by_row_reference(rows):
    o, h, l, c, v = (np.array(x, dtype=float) for x in zip(*rows))
    n = len(rows)
    ts = pd.date_range("2024-01-02 14:31", periods=n, freq="min", tz="UTC")
    df = pd.DataFrame({"symbol": "X", "ts": ts, "open": o, "high": h, "low": l, "close": c, "volume": v})
    rep = validate_bars(df)
    assert set(rep.findings["row"]) <= set(range(1, n + 1))
    got = {(k, r) for k, r in rep.errors[["check", "row"]].itertuples(index=False) if k in ERROR_CHECKS}
    ref = _reference_errors(o, h, l, c, v)
    # the reference checks OHLC only on finite rows with relative slack; ours uses the same slack
    assert {x for x in got if x[0] != "ohlc_inconsistent"} == {x for x in ref if x[0] != "ohlc_inconsistent"}
    assert {x for x in ref if x[0] == "ohlc_inconsistent"} <= {x for x in got if x[0] == "ohlc_inconsistent"}
    assert rep.ok == (len(got) == 0)


def test_empty_and_single_row_inputs():
    from quantlab.data.schema import empty_bars
    rep = validate_bars(empty_bars())
    assert rep.ok and len(rep.findings) == 0 and len(rep.summary()) == 0 and rep.to_dict()["rows"] == 0
    one = pd.DataFrame({"symbol": ["A"], "ts": [pd.Timestamp("2024-01-02 21:00", tz="UTC")], "open": [1.0],
                        "high": [1.0], "low": [1.0], "close": [1.0], "volume": [10.0]})
    rep = validate_bars(one)
    assert rep.ok and len(rep.findings) == 0 and rep.summary().loc["A", "rows"] == 1
