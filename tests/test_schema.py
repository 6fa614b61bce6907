"""quantlab.data.schema: canonical columns, dtypes, and errors that name file, row and column."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from quantlab.core import DataError
from quantlab.data.schema import (ACTION_COLUMNS, BAR_COLUMNS, QUOTE_COLUMNS, TRADE_COLUMNS, coerce_actions, coerce_bars,
                             coerce_quotes, coerce_trades, column_names, empty_actions, empty_bars, empty_quotes,
                             empty_trades, parse_float, parse_utc)


@pytest.fixture
def yhoo_raw(shared_data) -> pd.DataFrame:
    "The YHOO Yahoo file as pandas reads it, renamed to canonical names."
    df = pd.read_csv(shared_data / "backtrader" / "yhoo-1996-2015.txt")
    return df.rename(columns={"Date": "ts", "Open": "open", "High": "high", "Low": "low", "Close": "close",
                              "Volume": "volume"})


def test_coerce_bars_on_real_file_keeps_values_and_order(yhoo_raw):
    bars = coerce_bars(yhoo_raw, file="yhoo.txt", symbol="YHOO", tz="America/New_York")
    assert list(bars.columns) == column_names(BAR_COLUMNS, required_only=True)
    assert str(bars["ts"].dtype) == "datetime64[ns, UTC]"
    assert all(bars[c].dtype == np.float64 for c in ["open", "high", "low", "close", "volume"])
    np.testing.assert_array_equal(bars["close"].to_numpy(), yhoo_raw["close"].to_numpy())
    assert bars["ts"].iloc[0] == pd.Timestamp("1996-04-12 04:00", tz="UTC")  # midnight New York, EDT
    assert (bars["symbol"] == "YHOO").all()


def test_corrupted_number_names_file_row_and_column(yhoo_raw):
    bad = yhoo_raw.astype({"high": "str"})
    bad.loc[1233, "high"] = "12.3.4"
    with pytest.raises(DataError) as err:
        coerce_bars(bad, file="yhoo.txt", symbol="YHOO", tz="America/New_York")
    assert err.value.row == 1234 and err.value.column == "high" and err.value.file == "yhoo.txt"
    assert "file yhoo.txt, row 1234, column 'high'" in str(err.value)
    assert err.value.value == "12.3.4"


def test_missing_column_names_the_column(yhoo_raw):
    with pytest.raises(DataError, match="column 'volume'") as err:
        coerce_bars(yhoo_raw.drop(columns="volume"), file="yhoo.txt", symbol="YHOO", tz="UTC")
    assert err.value.row is None


def test_unparseable_date_names_row(yhoo_raw):
    bad = yhoo_raw.copy()
    bad.loc[9, "ts"] = "1996-02-30"
    with pytest.raises(DataError, match="row 10, column 'ts'"):
        coerce_bars(bad, symbol="YHOO", tz="America/New_York")


def test_naive_timestamps_need_a_time_zone(yhoo_raw):
    with pytest.raises(DataError, match="tz="):
        coerce_bars(yhoo_raw, symbol="YHOO")


def test_dst_gap_is_an_error_with_its_row():
    s = pd.Series(["2006-03-26 01:59", "2006-03-26 02:30"])  # Europe/Berlin springs forward at 02:00
    with pytest.raises(DataError, match="row 2, column 'ts'"):
        parse_utc(s, "ts", tz="Europe/Berlin")


def test_missing_values_stay_missing_for_the_validator():
    out = parse_float(pd.Series(["1.0", "", "NaN", None, "NA"], dtype=object), "close")
    assert out.isna().tolist() == [False, True, True, True, True]


def test_empty_frames_have_canonical_dtypes_and_concat_cleanly():
    for spec, empty in [(BAR_COLUMNS, empty_bars), (QUOTE_COLUMNS, empty_quotes), (TRADE_COLUMNS, empty_trades)]:
        e = empty()
        assert list(e.columns) == column_names(spec, required_only=True)
        assert str(e["ts"].dtype) == "datetime64[ns, UTC]"
    one = coerce_bars(pd.DataFrame({"ts": ["2024-01-02T21:00Z"], "open": [1.0], "high": [1.0], "low": [1.0],
                                    "close": [1.0], "volume": [1.0]}), symbol="A")
    both = pd.concat([empty_bars(), one], ignore_index=True)
    assert both["close"].dtype == np.float64 and str(both["ts"].dtype) == "datetime64[ns, UTC]"
    assert list(empty_actions().columns) == column_names(ACTION_COLUMNS)


def test_quotes_and_trades_keep_optional_string_columns(shared_data):
    q = pd.read_csv(shared_data / "highfrequency" / "sampleQData.csv.gz", nrows=50)
    quotes = coerce_quotes(q.rename(columns={"DT": "ts", "SYMBOL": "symbol", "BID": "bid", "OFR": "ask",
                                             "BIDSIZ": "bid_size", "OFRSIZ": "ask_size", "EX": "exchange"}))
    assert quotes["exchange"].eq("N").all() and str(quotes["ts"].dtype) == "datetime64[ns, UTC]"
    np.testing.assert_array_equal(quotes["ask"].to_numpy(), q["OFR"].to_numpy())
    t = pd.read_csv(shared_data / "highfrequency" / "sampleTData.csv.gz", nrows=50)
    trades = coerce_trades(t.rename(columns={"DT": "ts", "SYMBOL": "symbol", "PRICE": "price", "SIZE": "size",
                                             "EX": "exchange"}))
    assert list(trades.columns) == ["symbol", "ts", "price", "size", "exchange"]
    with pytest.raises(DataError, match="column 'size'"):
        coerce_trades(t.rename(columns={"DT": "ts", "SYMBOL": "symbol", "PRICE": "price"}))


def test_actions_are_dated_at_utc_midnight_and_checked():
    a = coerce_actions(pd.DataFrame({"symbol": ["KO", "KO"], "ex_date": ["2012-08-13", "2012-09-12"],
                                     "kind": ["split", "dividend"], "value": ["2", "0.255"]}), file="ko.csv")
    assert a["ex_date"].tolist() == [pd.Timestamp("2012-08-13", tz="UTC"), pd.Timestamp("2012-09-12", tz="UTC")]
    assert a["value"].tolist() == [2.0, 0.255]
    assert (a["available_at"] == a["ex_date"]).all()
    with pytest.raises(DataError, match="file ko.csv, row 2, column 'value'"):
        coerce_actions(a.assign(value=[2.0, 0.0]), file="ko.csv")
    with pytest.raises(DataError, match="row 1, column 'kind'"):
        coerce_actions(a.assign(kind=["spinoff", "dividend"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=30))
def test_parse_float_round_trips_any_float_written_as_text(values):
    text = pd.Series([repr(v) for v in values], dtype=object)
    out = parse_float(text, "close").to_numpy()
    expected = np.array(values, dtype=np.float64)
    assert np.array_equal(out, expected, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(), st.text(max_size=6), st.none()), min_size=1, max_size=20))
def test_coerce_bars_either_succeeds_or_raises_data_error_with_a_valid_row(values):
    n = len(values)
    df = pd.DataFrame({"ts": pd.date_range("2024-01-02", periods=n, tz="UTC"), "open": pd.Series(values, dtype=object),
                       "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0})
    try:
        out = coerce_bars(df, symbol="X")
    except DataError as exc:
        assert exc.column == "open" and 1 <= exc.row <= n
        assert isinstance(values[exc.row - 1], str)
    else:
        assert out["open"].dtype == np.float64 and len(out) == n
