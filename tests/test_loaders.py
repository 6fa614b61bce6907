"""quantlab.data.loaders on every real sample format, and on damaged copies of the files."""
import gzip
import warnings

from conftest import reference_calendar
import numpy as np
import pandas as pd
import pytest

from quantlab.core import DataError, UsageError
from quantlab.data.corporate import adjust_bars
from quantlab.data.loaders import PRESETS, Loaded, load_file, read_table
from quantlab.data.validate import validate_bars


def _sha256sums(shared) -> dict:
    "The data README's checksum list: relative path -> sha256."
    out = {}
    for line in (shared / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.strip().lstrip("*").removeprefix("./")] = digest
    return out


def _session_close(day, cal="XNYS") -> pd.Timestamp:
    return pd.Timestamp(reference_calendar(cal, start="1990-01-01").session_close(day)).tz_convert("UTC")


@pytest.mark.parametrize("name,rows,first,last", [("yhoo-1996-2015.txt", 4965, "1996-04-12", "2015-12-31"),
                                                  ("orcl-1995-2014.txt", 5036, "1995-01-03", "2014-12-31"),
                                                  ("nvda-1999-2014.txt", 4012, "1999-01-22", "2014-12-31")])
def test_yahoo_files_load_with_session_close_stamps(shared_data, name, rows, first, last):
    path = shared_data / "backtrader" / name
    ld = load_file(path, "yahoo")
    raw = pd.read_csv(path)
    assert isinstance(ld, Loaded) and len(ld.bars) == rows and ld.adjusted == "split"
    assert ld.bars["symbol"].iloc[0] == name.split("-")[0].upper()
    assert ld.bars["ts"].iloc[0] == _session_close(first) and ld.bars["ts"].iloc[-1] == _session_close(last)
    np.testing.assert_array_equal(ld.bars["close"].to_numpy(), raw["Close"].to_numpy())
    np.testing.assert_array_equal(ld.bars["volume"].to_numpy(), raw["Volume"].to_numpy(dtype=float))
    np.testing.assert_array_equal(ld.extra["adj_close"].to_numpy(), raw["Adj Close"].to_numpy())
    assert len(ld.actions) == 0
    assert ld.source["sha256"] == _sha256sums(shared_data)[f"backtrader/{name}"]


def test_orcl_adj_close_carries_dividends(shared_data):
    ld = load_file(shared_data / "backtrader" / "orcl-1995-2014.txt", "yahoo")
    ratio = (ld.extra["adj_close"] / ld.bars["close"]).iloc[0]
    assert ratio == pytest.approx(0.889, abs=1e-3)  # the README's figure for 1995


def test_half_day_session_is_stamped_at_the_early_close(shared_data):
    ld = load_file(shared_data / "backtrader" / "yhoo-1996-2015.txt", "yahoo")
    ts = ld.bars["ts"]
    day = ts[ts.dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%d") == "2015-11-27"]
    assert day.tolist() == [pd.Timestamp("2015-11-27 18:00", tz="UTC")]  # 13:00 New York, day after Thanksgiving


def test_zipline_csvdir_is_converted_back_to_raw_prices(shared_data):
    """AAPL's csvdir file is split-adjusted; after loading it agrees with Quandl's *unadjusted* 2014 closes."""
    c = load_file(shared_data / "zipline" / "csvdir_daily" / "AAPL.csv.gz", "zipline_csvdir")
    q = load_file(shared_data / "zipline" / "QUANDL_SAMPLE_TABLE.csv", "quandl_wiki")
    assert c.adjusted is None and c.source["notes"]
    qa = q.bars[q.bars["symbol"] == "AAPL"].set_index("ts")
    ca = c.bars.set_index("ts").loc[qa.index]
    assert np.abs(ca["close"] / qa["close"] - 1).max() < 1e-4
    assert np.abs(ca["open"] / qa["open"] - 1).max() < 1e-3
    assert np.median(np.abs(ca["volume"] / qa["volume"] - 1)) < 1e-6  # vendors agree on most days' volume
    day_before, split_day = _session_close("2014-06-06"), _session_close("2014-06-09")
    assert ca.loc[day_before, "close"] == pytest.approx(645.57, abs=0.01)
    assert ca.loc[split_day, "close"] == pytest.approx(93.70, abs=0.01)
    # dividends before the split are back to the cash amounts Quandl lists (3.05 on 2014-02-06)
    div = c.actions.set_index(["ex_date", "kind"])["value"]
    assert div[(pd.Timestamp("2014-02-06", tz="UTC"), "dividend")] == pytest.approx(3.05, abs=1e-3)
    assert div[(pd.Timestamp("2014-06-09", tz="UTC"), "split")] == 7.0


def test_csvdir_split_is_applied_exactly_once_on_read(shared_data):
    """Raw bars + their actions, adjusted for splits on read, give back the vendor's split-adjusted numbers."""
    for sym, day in [("AAPL", "2014-06-09"), ("KO", "2012-08-13")]:
        path = shared_data / "zipline" / "csvdir_daily" / f"{sym}.csv.gz"
        vendor = pd.read_csv(path)
        ld = load_file(path, "zipline_csvdir")
        again = adjust_bars(ld.bars, ld.actions, "split")
        np.testing.assert_allclose(again["close"].to_numpy(), vendor["close"].to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(again["volume"].to_numpy(), vendor["volume"].to_numpy(), rtol=1e-12)
        i = int(np.flatnonzero(vendor["date"] == day)[0])
        raw_jump = ld.bars["close"].iloc[i] / ld.bars["close"].iloc[i - 1]
        adj_jump = again["close"].iloc[i] / again["close"].iloc[i - 1]
        ratio = vendor["split"].iloc[i]
        assert raw_jump == pytest.approx(adj_jump / ratio, rel=1e-9)
        assert abs(np.log(adj_jump)) < 0.05  # no split-sized jump once adjusted


def test_ko_raw_prices_around_its_split(shared_data):
    ld = load_file(shared_data / "zipline" / "csvdir_daily" / "KO.csv.gz", "zipline_csvdir")
    b = ld.bars.set_index("ts")
    assert b.loc[_session_close("2012-08-10"), "close"] == pytest.approx(78.79, abs=0.01)
    assert b.loc[_session_close("2012-08-13"), "close"] == pytest.approx(39.30, abs=0.01)
    k = ld.actions
    assert k[k["kind"] == "split"][["ex_date", "value"]].values.tolist() == [[pd.Timestamp("2012-08-13", tz="UTC"), 2.0]]
    assert k[(k["kind"] == "dividend") & (k["ex_date"] < "2012-08-13")]["value"].tolist() == pytest.approx([0.51, 0.51])


@pytest.mark.parametrize("sym,divs,splits", [("AAPL", 10, 1), ("IBM", 12, 0), ("KO", 12, 1), ("MSFT", 12, 0)])
def test_csvdir_event_counts_match_the_readme(shared_data, sym, divs, splits):
    ld = load_file(shared_data / "zipline" / "csvdir_daily" / f"{sym}.csv.gz", "zipline_csvdir")
    assert len(ld.bars) == 754 and ld.bars["symbol"].eq(sym).all()
    assert (ld.actions["kind"] == "dividend").sum() == divs and (ld.actions["kind"] == "split").sum() == splits


def test_quandl_long_file_has_four_symbols_and_its_events(shared_data):
    path = shared_data / "zipline" / "QUANDL_SAMPLE_TABLE.csv"
    ld = load_file(path, "quandl_wiki")
    assert ld.bars.groupby("symbol").size().to_dict() == {"AAPL": 252, "BRK_A": 252, "MSFT": 252, "ZEN": 160}
    assert ld.bars.loc[ld.bars["symbol"] == "ZEN", "ts"].min() == _session_close("2014-05-15")
    a = ld.actions
    aapl = a[a["symbol"] == "AAPL"]
    assert aapl[aapl["kind"] == "dividend"][["ex_date", "value"]].values.tolist() == [
        [pd.Timestamp(d, tz="UTC"), v] for d, v in [("2014-02-06", 3.05), ("2014-05-08", 3.29),
                                                    ("2014-08-07", 0.47), ("2014-11-06", 0.47)]]
    assert aapl[aapl["kind"] == "split"]["value"].tolist() == [7.0]
    msft = a[a["symbol"] == "MSFT"]
    assert msft["value"].tolist() == [0.28, 0.28, 0.28, 0.31]
    assert set(a["symbol"]) == {"AAPL", "MSFT"}
    assert list(ld.extra.columns) == ["adj_open", "adj_high", "adj_low", "adj_close", "adj_volume"]
    assert ld.source["sha256"] == _sha256sums(shared_data)["zipline/QUANDL_SAMPLE_TABLE.csv"]


def test_quandl_parquet_copy_loads_the_same(shared_data, tmp_path):
    src = shared_data / "zipline" / "QUANDL_SAMPLE_TABLE.csv"
    pd.read_csv(src).to_parquet(tmp_path / "wiki.parquet")
    a, b = load_file(src, "quandl_wiki"), load_file(tmp_path / "wiki.parquet", "quandl_wiki")
    pd.testing.assert_frame_equal(a.bars, b.bars)
    pd.testing.assert_frame_equal(a.actions, b.actions)


def test_backtrader_daily_index_on_the_eurex_calendar(shared_data):
    ld = load_file(shared_data / "backtrader" / "2005-2006-day-001.txt", "backtrader", symbol="SX5E", calendar="XEUR")
    assert len(ld.bars) == 512 and ld.bars["volume"].eq(0).all()
    assert ld.bars["ts"].iloc[0] == _session_close("2005-01-03", "XEUR")
    assert ld.extra["open_interest"].eq(0).all()
    with pytest.raises(UsageError, match="symbol="):
        load_file(shared_data / "backtrader" / "2005-2006-day-001.txt", "backtrader")


def test_backtrader_minute_file_with_header_bug(shared_data):
    path = shared_data / "backtrader" / "2006-01-02-volume-min-001.txt"
    ld = load_file(path, "backtrader_intraday", symbol="FESX")
    assert len(ld.bars) == 30889
    first = path.read_text().splitlines()[1].split(",")  # 2006-01-02,09:01:00,3602.00,3603.00,3597.00,3599.00,5699,0
    b = ld.bars.iloc[0]
    assert [b["open"], b["high"], b["low"], b["close"], b["volume"]] == [float(x) for x in first[2:7]]
    local = ld.bars["ts"].dt.tz_convert("Europe/Berlin")
    assert local.iloc[0] == pd.Timestamp("2006-01-02 09:01", tz="Europe/Berlin")
    assert local.iloc[-1] == pd.Timestamp("2006-02-27 22:00", tz="Europe/Berlin")
    assert local.dt.date.nunique() == 41
    assert ld.source["tz"] == "Europe/Berlin" and ld.source["daily"] is False
    # without the repair pandas would shift every column; we refuse instead
    with pytest.raises(DataError, match="line 2"):
        read_table(path, fix_time_header=False)
    # another time zone, if the user knows better
    ldn = load_file(path, "backtrader_intraday", symbol="FESX", tz="Europe/London")
    assert (ldn.bars["ts"] - ld.bars["ts"]).eq(pd.Timedelta("1h")).all()


def test_backtrader_five_minute_file(shared_data):
    ld = load_file(shared_data / "backtrader" / "2006-min-005.txt", "backtrader_intraday", symbol="SX5E")
    assert len(ld.bars) == 2142
    rep = validate_bars(ld.bars, calendar="XETR")  # the cash index trades on Xetra hours, 09:00-17:30
    assert rep.freq == "5min" and rep.ok


# ---- bad input made from the real files -------------------------------------------------------------


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_corrupted_number_is_reported_at_file_row_column(shared_data, tmp_path):
    lines = (shared_data / "backtrader" / "yhoo-1996-2015.txt").read_text().splitlines()
    parts = lines[321].split(","); parts[2] = "3O.5"  # letter O in the High of data row 321, the file's line 322 (the header is line 1)
    lines[321] = ",".join(parts)
    path = _write_lines(tmp_path / "yhoo.txt", lines)
    with pytest.raises(DataError) as err:
        load_file(path, "yahoo")
    e = err.value
    assert (e.file, e.line, e.column, e.value) == (path, 322, "High", "3O.5")
    assert f"file {path}, line 322, column 'High'" in str(e)


def test_missing_column_and_wrong_preset(shared_data, tmp_path):
    raw = pd.read_csv(shared_data / "backtrader" / "nvda-1999-2014.txt")
    raw.drop(columns="Volume").to_csv(tmp_path / "nvda.txt", index=False)
    with pytest.raises(DataError, match="column 'Volume'"):
        load_file(tmp_path / "nvda.txt", "yahoo")
    with pytest.raises(DataError, match="column 'Date'") as err:
        load_file(shared_data / "zipline" / "csvdir_daily" / "MSFT.csv.gz", "yahoo")
    assert "preset 'yahoo'" in str(err.value)
    with pytest.raises(DataError, match="column 'ticker'"):
        load_file(shared_data / "backtrader" / "nvda-1999-2014.txt", "quandl_wiki")
    with pytest.raises(UsageError, match="unknown preset"):
        load_file(shared_data / "backtrader" / "nvda-1999-2014.txt", "bloomberg")


def test_bad_date_and_holiday_in_csvdir_gz(shared_data, tmp_path):
    with gzip.open(shared_data / "zipline" / "csvdir_daily" / "KO.csv.gz", "rt") as f:
        lines = f.read().splitlines()
    bad = list(lines); bad[40] = "2012-02-31" + bad[40][10:]
    path = tmp_path / "KO.csv.gz"
    with gzip.open(path, "wt") as f: f.write("\n".join(bad) + "\n")
    with pytest.raises(DataError, match=f"file {path}, line 41, column 'date'"):
        load_file(path, "zipline_csvdir")
    hol = list(lines); hol[130] = "2012-07-04" + hol[130][10:]  # Independence Day: no NYSE session
    with gzip.open(path, "wt") as f: f.write("\n".join(hol) + "\n")
    with pytest.raises(DataError, match="line 131, column 'date'") as err:
        load_file(path, "zipline_csvdir")
    assert "not a session of XNYS" in str(err.value)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ld = load_file(path, "zipline_csvdir", off_calendar="drop")
    assert len(ld.bars) == 753 and any("dropped 1 row" in str(x.message) for x in w)


def test_negative_dividend_names_row_and_vendor_column(shared_data, tmp_path):
    raw = pd.read_csv(shared_data / "zipline" / "QUANDL_SAMPLE_TABLE.csv")
    raw.loc[300, "ex-dividend"] = -0.5
    raw.to_csv(tmp_path / "wiki.csv", index=False)
    with pytest.raises(DataError, match="line 302, column 'ex-dividend'"):
        load_file(tmp_path / "wiki.csv", "quandl_wiki")


def test_row_with_too_many_fields(shared_data, tmp_path):
    lines = (shared_data / "backtrader" / "orcl-1995-2014.txt").read_text().splitlines()
    lines[77] += ",999"
    with pytest.raises(DataError, match="line 78"):
        load_file(_write_lines(tmp_path / "orcl.txt", lines), "yahoo")


def test_generic_preset_finds_columns_and_takes_a_mapping(shared_data, tmp_path):
    ld = load_file(shared_data / "zipline" / "csvdir_daily" / "IBM.csv.gz")  # generic: names found
    assert len(ld.bars) == 754 and ld.source["daily"] and (ld.actions["kind"] == "dividend").sum() == 12
    assert ld.bars["ts"].iloc[0] == _session_close("2012-01-03")
    raw = pd.read_csv(shared_data / "backtrader" / "ticksample.csv")
    ticks = load_file(shared_data / "backtrader" / "ticksample.csv", symbol="FESX", tz="Europe/Berlin")
    assert len(ticks.bars) == len(raw) == 135 and not ticks.source["daily"]
    assert ticks.bars["ts"].iloc[0] == pd.Timestamp("2015-09-23 18:57:42.146", tz="UTC")
    renamed = raw.rename(columns={"Datetime": "When", "Close": "Last Px", "Volume": "Qty"})
    renamed.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="column 'close'"):
        load_file(tmp_path / "t.csv", symbol="FESX", tz="Europe/Berlin", mapping={"When": "ts", "Qty": "volume"})
    m = load_file(tmp_path / "t.csv", symbol="FESX", tz="Europe/Berlin",
                  mapping={"When": "ts", "Last Px": "close", "Qty": "volume"})
    pd.testing.assert_frame_equal(m.bars, ticks.bars)


def test_presets_are_the_contracted_names():
    assert set(PRESETS) == {"yahoo", "zipline_csvdir", "quandl_wiki", "backtrader", "backtrader_intraday", "wide_close", "generic"}


def test_bad_time_of_day_in_intraday_file(shared_data, tmp_path):
    lines = (shared_data / "backtrader" / "2006-min-005.txt").read_text().splitlines()
    lines[500] = lines[500].replace(lines[500].split(",")[1], "12:6x:00", 1)
    path = _write_lines(tmp_path / "m5.txt", lines)
    with pytest.raises(DataError) as err:
        load_file(path, "backtrader_intraday", symbol="SX5E")
    assert (err.value.line, err.value.column, err.value.value) == (501, "Time", "12:6x:00")


def test_wide_close_table_is_the_long_bars(shared_data):
    "pypfopt's 20-column close table: every filled cell a bar, on the NYSE close of its date, in the file's values."
    path = shared_data / "pypfopt" / "stock_prices.csv"
    loaded = load_file(path, preset="wide_close")
    raw = pd.read_csv(path, index_col=0, parse_dates=True)
    assert len(loaded.bars) == int(raw.notna().sum().sum()) == 106_931
    got = loaded.bars.pivot(index="ts", columns="symbol", values="close")
    got.index = got.index.tz_convert("America/New_York").tz_localize(None).normalize().as_unit(raw.index.unit)
    pd.testing.assert_frame_equal(got[raw.columns], raw.rename_axis(index="ts", columns="symbol"), check_freq=False, check_exact=True)
    b = loaded.bars
    assert (b["open"] == b["close"]).all() and (b["high"] == b["close"]).all() and b["volume"].isna().all()
    first = b.groupby("symbol")["ts"].min()
    assert str(first["BABA"].date()) == "2014-09-19" and str(first["GOOG"].date()) == "2004-08-19"
