"""Ticks to bars on real data: NYSE TAQ trades and quotes (R package highfrequency) and backtrader's tick sample."""
import duckdb
import numpy as np
import pandas as pd
import pytest

from quantlab.data import schema
from quantlab.data.aggregate import (clean_quotes, quotes_to_bars, trades_to_dollar_bars, trades_to_time_bars,
                                trades_to_volume_bars)
from quantlab.core import DataError

NYSE_HOURS = ("09:30", "16:00", "America/New_York")


@pytest.fixture(scope="module")
def taq(shared_data):
    "Raw and cleaned TAQ trades and quotes in canonical form."
    d = shared_data / "highfrequency"
    # COND is blank on a third of the rows and schema.coerce_trades rejects a missing optional string: not needed here
    tr = pd.read_csv(d / "sampleTDataRaw.csv.gz", dtype={"COND": str, "EX": str}).drop(columns="COND")
    trades = schema.coerce_trades(tr.rename(columns={"DT": "ts", "SYMBOL": "symbol", "PRICE": "price", "SIZE": "size",
                                                     "EX": "exchange"}),
                                  file=d / "sampleTDataRaw.csv.gz")
    qr = pd.read_csv(d / "sampleQDataRaw.csv.gz", dtype={"EX": str})
    qmap = {"DT": "ts", "SYMBOL": "symbol", "BID": "bid", "OFR": "ask", "BIDSIZ": "bid_size", "OFRSIZ": "ask_size",
            "EX": "exchange"}
    quotes = schema.coerce_quotes(qr.rename(columns=qmap), file=d / "sampleQDataRaw.csv.gz")
    qc = pd.read_csv(d / "sampleQData.csv.gz", dtype={"EX": str})
    pkg_clean = schema.coerce_quotes(qc.rename(columns=qmap), file=d / "sampleQData.csv.gz")
    return trades, quotes, pkg_clean


def test_raw_quotes_have_the_documented_dirt(taq):
    _, quotes, _ = taq
    assert len(quotes) == 131401
    assert int((quotes.ask <= quotes.bid).sum()) == 79
    assert int((quotes.bid == 0).sum()) == 52


def test_clean_quotes_removes_crossed_and_zero_quotes(taq):
    _, quotes, _ = taq
    out = clean_quotes(quotes)
    assert (out.ask > out.bid).all() and (out.bid > 0).all()
    removed = out.attrs["removed"]
    assert removed["zero_or_missing"] + removed["crossed_or_locked"] == len(quotes) - len(out)
    bad = ~((quotes.bid > 0) & (quotes.ask > 0) & (quotes.ask > quotes.bid))
    assert len(out) == int((~bad).sum())


def test_clean_quotes_nyse_regular_hours_matches_highfrequency_cleaned_sample(taq):
    """highfrequency's sampleQData = NYSE quotes, 09:30-16:00 New York, crossed removed, same-time quotes merged
    by median: our cleaning of the raw file must give exactly its timestamps, bids and asks."""
    _, quotes, pkg = taq
    ours = clean_quotes(quotes, exchanges=["N"], session=NYSE_HOURS, merge_same_ts="median")
    assert len(ours) == len(pkg) == 46564
    pkg = pkg.sort_values("ts", kind="stable", ignore_index=True)
    assert (ours.ts.to_numpy() == pkg.ts.to_numpy()).all()
    np.testing.assert_allclose(ours.bid.to_numpy(), pkg.bid.to_numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.ask.to_numpy(), pkg.ask.to_numpy(), rtol=0, atol=1e-9)


def test_trade_time_bars_match_an_independent_duckdb_aggregation(taq):
    trades, _, _ = taq
    bars = trades_to_time_bars(trades, "1min")
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    t = trades.sort_values("ts", kind="stable").assign(seq=np.arange(len(trades)))
    t = t.assign(ts_ns=t.ts.astype("int64"))[["symbol", "ts_ns", "seq", "price", "size"]]
    con.register("t", t)
    ref = con.sql("""
        SELECT symbol, (ts_ns // 60000000000 + 1) * 60000000000 AS end_ns,
               arg_min(price, seq) AS open, max(price) AS high, min(price) AS low,
               arg_max(price, seq) AS close, sum(size) AS volume,
               sum(price * size) / sum(size) AS vwap, count(*) AS trades
        FROM t GROUP BY ALL ORDER BY symbol, end_ns""").df()
    assert len(bars) == len(ref)
    assert (bars.ts.astype("int64").to_numpy() == ref.end_ns.to_numpy()).all()
    for c in ["open", "high", "low", "close", "volume", "vwap"]:
        np.testing.assert_allclose(bars[c].to_numpy(), ref[c].to_numpy(), rtol=1e-12, err_msg=c)
    assert (bars.trades.to_numpy() == ref.trades.to_numpy()).all()
    assert bars.volume.sum() == trades["size"].sum()


def test_trade_time_bars_match_pandas_resample_on_backtrader_ticks(shared_data):
    raw = pd.read_csv(shared_data / "backtrader" / "ticksample.csv")
    trades = pd.DataFrame({"symbol": "FESX", "ts": pd.to_datetime(raw.Datetime).dt.tz_localize("UTC"),
                           "price": raw.Close.astype(float), "size": raw.Volume.astype(float)})
    ours = trades_to_time_bars(trades, "10s").set_index("ts")
    s = trades.set_index("ts")
    r = s.price.resample("10s", closed="left", label="right")
    ref = pd.DataFrame({"open": r.first(), "high": r.max(), "low": r.min(), "close": r.last(),
                        "volume": s["size"].resample("10s", closed="left", label="right").sum()}).dropna()
    assert len(ours) == len(ref) and (ours.index == ref.index).all()
    for c in ref.columns: np.testing.assert_allclose(ours[c], ref[c], err_msg=c)
    assert len(raw) == 135 and ours.trades.sum() == 135


def test_volume_bars_sum_to_the_traded_volume_and_close_at_the_threshold(taq):
    trades, _, _ = taq
    per_bar = 5000.0
    bars = trades_to_volume_bars(trades, per_bar)
    assert bars.volume.sum() == trades["size"].sum()
    assert bars.trades.sum() == len(trades)
    # independent: a bar closes with the trade whose cumulative volume crosses (or reaches) a multiple of per_bar
    t = trades.sort_values("ts", kind="stable", ignore_index=True)
    size = t["size"].to_numpy()
    after = np.cumsum(size)
    closes = np.flatnonzero(np.floor(after / per_bar) > np.floor((after - size) / per_bar))
    closes = np.union1d(closes, [len(t) - 1])
    assert len(bars) == len(closes)
    assert (bars.ts.to_numpy() == t.ts.to_numpy()[closes]).all()
    np.testing.assert_allclose(bars.volume.to_numpy(), np.diff(np.r_[0.0, after[closes]]))
    assert bars.ts.is_monotonic_increasing


def test_dollar_bars_hold_the_notional_and_close_at_multiples(taq):
    trades, _, _ = taq
    per_bar = 1e6
    bars = trades_to_dollar_bars(trades, per_bar)
    t = trades.sort_values("ts", kind="stable", ignore_index=True)
    notional = (t.price * t["size"]).to_numpy()
    np.testing.assert_allclose((bars.vwap * bars.volume).sum(), notional.sum(), rtol=1e-10)
    after = np.cumsum(notional)
    closes = np.union1d(np.flatnonzero(np.floor(after / per_bar) > np.floor((after - notional) / per_bar)), [len(t) - 1])
    assert len(bars) == len(closes)
    np.testing.assert_allclose((bars.vwap * bars.volume).to_numpy(), np.diff(np.r_[0.0, after[closes]]), rtol=1e-9)


def test_quote_bars_time_weighting_matches_a_fine_grid_sample(taq):
    """Time-weighted mid per minute against a brute-force reference: the prevailing quote sampled every 50 ms
    (pd.merge_asof), averaged per minute."""
    _, _, pkg = taq
    q = clean_quotes(pkg)
    day = q[q.ts < pd.Timestamp("2018-01-02 16:30", tz="UTC")]
    bars = quotes_to_bars(day, "1min")
    grid = pd.DataFrame({"ts": pd.date_range(day.ts.min().floor("1min"), day.ts.max().ceil("1min"),
                                             freq="50ms", inclusive="left")})
    grid["ts"] = grid.ts.astype(day.ts.dtype)
    samp = pd.merge_asof(grid, day.assign(mid=(day.bid + day.ask) / 2)[["ts", "mid"]], on="ts")
    samp["end"] = samp.ts.dt.floor("1min") + pd.Timedelta("1min")
    ref = samp.dropna().groupby("end").mid.mean()
    got = bars.set_index("ts").mid_tw
    common = got.index.intersection(ref.index)
    assert len(common) == len(got) - 0 or len(common) >= len(got) - 1
    np.testing.assert_allclose(got.loc[common], ref.loc[common], atol=2e-3)
    # the bar's last mid is the quote in force at the bar end
    last = day.groupby(day.ts.dt.floor("1min") + pd.Timedelta("1min")).last()
    np.testing.assert_allclose(bars.set_index("ts").mid, (last.bid + last.ask) / 2)


def test_missing_column_is_a_data_error():
    with pytest.raises(DataError, match="size"):
        trades_to_time_bars(pd.DataFrame({"symbol": ["A"], "ts": [pd.Timestamp("2024-01-02", tz="UTC")], "price": [1.0]}))
