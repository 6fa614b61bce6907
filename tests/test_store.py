"""The point-in-time store on real data (Quandl WIKI sample, TAQ trades, Fama-French): upserts, versions,
as_of reads, atomic failure, corrupt state, adjustment on read and ASOF joins."""
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from quantlab.data import store as store_mod
from quantlab.core import DataError, StateError, UsageError, session_closes
from quantlab.data.corporate import actions_from_columns
from quantlab.data.store import BarStore

KNOWN_LATER = pd.Timestamp("2015-03-02 12:00", tz="UTC")  # every "later" write in these tests is known then


def _quandl(shared_data):
    "Quandl WIKI sample: (raw table, canonical bars, canonical actions)."
    path = shared_data / "zipline" / "QUANDL_SAMPLE_TABLE.csv"
    raw = pd.read_csv(path)
    raw["ts"] = session_closes(raw["date"])
    bars = pd.DataFrame({"symbol": raw["ticker"].astype("str"), "ts": raw["ts"],
                         **{c: raw[c].astype(float) for c in ["open", "high", "low", "close", "volume"]}})
    acts = actions_from_columns(raw.rename(columns={"ticker": "symbol"}), date="date", dividend="ex-dividend",
                                split="split_ratio", file=path)
    return raw, bars, acts


@pytest.fixture(scope="module")
def quandl(shared_data):
    return _quandl(shared_data)


def _files(root: Path) -> dict:
    "Every file under root with its bytes."
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write(store, bars, **kw):
    return store.write_bars(bars, source={"file": "QUANDL_SAMPLE_TABLE.csv", "sha256": "x"}, freq="1D", **kw)


# ---------------------------------------------------------------- upserts


def test_reingesting_the_same_file_changes_nothing(data_dir, quandl):
    _, bars, acts = quandl
    store = BarStore()
    assert store.root == data_dir
    r = _write(store, bars, actions=acts)
    assert (r.rows_new, r.rows_corrected) == (len(bars), 0)
    before = _files(data_dir)
    r2 = _write(store, bars, actions=acts)
    assert (r2.rows_new, r2.rows_corrected, r2.rows_unchanged, r2.changed) == (0, 0, len(bars), False)
    assert _files(data_dir) == before


def test_overlapping_writes_merge_without_duplicates(tmp_path, quandl):
    _, bars, _ = quandl
    whole, parts = BarStore(tmp_path / "whole"), BarStore(tmp_path / "parts")
    _write(whole, bars)
    cut1, cut2 = pd.Timestamp("2014-09-30", tz="UTC"), pd.Timestamp("2014-06-30", tz="UTC")
    _write(parts, bars[bars.ts <= cut1])
    r = _write(parts, bars[bars.ts >= cut2])          # three months overlap
    assert r.rows_new == int((bars.ts > cut1).sum()) and r.rows_unchanged == int(((bars.ts >= cut2) & (bars.ts <= cut1)).sum())
    a, b = whole.read_bars(), parts.read_bars()
    assert len(b) == len(bars) == 916 and not b.duplicated(["symbol", "ts"]).any()
    pd.testing.assert_frame_equal(a, b)
    assert b.symbol.is_monotonic_increasing and b.groupby("symbol").ts.apply(lambda s: s.is_monotonic_increasing).all()


def test_a_correction_is_a_new_version_visible_only_after_it_was_known(data_dir, quandl):
    _, bars, _ = quandl
    store = BarStore()
    _write(store, bars)
    day = pd.Timestamp("2014-03-03", tz="UTC")
    row = bars[(bars.symbol == "MSFT") & (bars.ts.dt.normalize() == day)]
    fixed = row.assign(close=row.close * 1.001, high=row[["high", "close"]].max(axis=1) * 1.001)
    r = _write(store, fixed, known_at=KNOWN_LATER)
    assert (r.rows_new, r.rows_corrected) == (0, 1)
    now = store.read_bars("MSFT", start=day, end=day + pd.Timedelta("1D"))
    then = store.read_bars("MSFT", start=day, end=day + pd.Timedelta("1D"), as_of=KNOWN_LATER - pd.Timedelta("1s"))
    assert now.close.iloc[0] == pytest.approx(row.close.iloc[0] * 1.001)
    assert then.close.iloc[0] == row.close.iloc[0]
    assert now.available_at.iloc[0] == KNOWN_LATER and then.available_at.iloc[0] == row.ts.iloc[0]
    assert store.manifest()["datasets"]["bars"]["MSFT"]["rows"] == 253
    with pytest.raises(UsageError, match="known later"):  # a correction cannot predate the version it replaces
        _write(store, fixed.assign(close=fixed.close + 0.01), known_at=KNOWN_LATER - pd.Timedelta("1D"))


# ---------------------------------------------------------------- point in time


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory, shared_data, quandl):
    """Store `early` holds the first writes; `late` is a copy of it plus everything written later (known at
    KNOWN_LATER): bar corrections, back-filled and new bars, a new symbol, new and corrected actions, new and
    corrected factor values. Every read as of a time before KNOWN_LATER must agree between them."""
    import arch.data.frenchdata
    raw, bars, acts = quandl
    root = tmp_path_factory.mktemp("pit")
    early = BarStore(root / "early")
    first = bars[(bars.symbol != "ZEN") & (bars.ts < pd.Timestamp("2014-10-01", tz="UTC"))]
    _write(early, first, actions=acts[acts.symbol == "AAPL"])
    ff_raw = arch.data.frenchdata.load()
    ff = pd.DataFrame({"ts": pd.to_datetime(ff_raw.index.as_unit("ns").asi8.astype(str), format="%Y%m").tz_localize("UTC"),
                       "mkt_rf": ff_raw["Mkt-RF"].to_numpy() / 100, "rf": ff_raw["RF"].to_numpy() / 100})
    ff_known = ff[(ff.ts >= "2013-01-01") & (ff.ts < "2014-10-01")]
    early.write_series("ff", ff_known, ["mkt_rf", "rf"], available_at=pd.DateOffset(months=1))
    shutil.copytree(early.root, root / "late")
    late = BarStore(root / "late")
    rng = np.random.default_rng(7)
    fix = first.iloc[rng.choice(len(first), 25, replace=False)]
    fix = fix.assign(**{c: fix[c] * 1.02 for c in ["open", "high", "low", "close"]})
    _write(late, fix, known_at=KNOWN_LATER)                                         # corrections
    # new bars, an overlap (reverting the corrections above an hour later) and a new symbol
    _write(late, bars[bars.ts >= pd.Timestamp("2014-08-01", tz="UTC")], known_at=KNOWN_LATER + pd.Timedelta("1h"))
    aapl_div = acts[(acts.symbol == "AAPL") & (acts.kind == "dividend")].iloc[[0]].assign(value=3.10)
    late.write_actions(pd.concat([acts[acts.symbol == "MSFT"], aapl_div]), known_at=KNOWN_LATER)
    ff_later = ff[(ff.ts >= "2013-06-01") & (ff.ts < "2015-01-01")].copy()
    ff_later.loc[ff_later.ts == "2014-02-01", "mkt_rf"] += 0.01                       # a revised month
    late.write_series("ff", ff_later, ["mkt_rf", "rf"], available_at=pd.DateOffset(months=1), known_at=KNOWN_LATER)
    assert late.manifest() != early.manifest()
    return early, late


def _pit_reads(store: BarStore, t) -> dict:
    bars = store.read_bars(["AAPL", "MSFT", "BRK_A"], as_of=t)
    return {"raw": bars, "total": store.read_bars(["AAPL", "MSFT", "BRK_A"], as_of=t, adjusted="total"),
            "split": store.read_bars("AAPL", as_of=t, adjusted="split"),
            "actions": store.read_actions(as_of=t), "ff": store.read_series("ff", as_of=t),
            "joined": store.asof_join(bars, "ff")}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=st.datetimes(min_value=pd.Timestamp("2014-01-01").to_pydatetime(),
                      max_value=pd.Timestamp("2015-03-02 11:59").to_pydatetime()))
def test_read_as_of_t_is_unchanged_by_anything_stored_after_t(two_stores, t):
    early, late = two_stores
    t = pd.Timestamp(t, tz="UTC")
    a, b = _pit_reads(early, t), _pit_reads(late, t)
    for k in a:
        pd.testing.assert_frame_equal(a[k], b[k], obj=f"{k} as of {t}")
    assert (a["raw"].available_at <= t).all() and (a["raw"].ts <= t).all()


def test_the_later_writes_are_visible_after_they_were_known(two_stores, quandl):
    early, late = two_stores
    _, bars, _ = quandl
    stored = bars[(bars.symbol != "ZEN") | (bars.ts >= pd.Timestamp("2014-08-01", tz="UTC"))]
    first = bars[(bars.symbol != "ZEN") & (bars.ts < pd.Timestamp("2014-10-01", tz="UTC"))]
    assert len(late.read_bars()) == len(stored) and "ZEN" in late.symbols()
    assert len(late.read_bars(as_of=KNOWN_LATER)) == len(first)   # the back-fill came an hour later
    assert not late.read_bars("AAPL", as_of=KNOWN_LATER).equals(early.read_bars("AAPL"))
    div = late.read_actions("AAPL")
    assert div[div.kind == "dividend"].value.iloc[0] == 3.10


# ---------------------------------------------------------------- errors and atomicity


def test_bad_input_names_file_row_column_and_writes_nothing(data_dir, quandl):
    _, bars, _ = quandl
    store = BarStore()
    _write(store, bars[bars.symbol == "AAPL"])
    before = _files(data_dir)
    bad = bars[bars.symbol == "MSFT"].reset_index(drop=True)
    bad.loc[9, "low"] = -1.0
    with pytest.raises(DataError) as err:
        store.write_bars(bad, source={"file": "msft.csv"}, freq="1D")
    msg = str(err.value)
    assert "msft.csv" in msg and "row 10" in msg and "'low'" in msg
    assert _files(data_dir) == before


def test_failure_mid_write_leaves_the_store_byte_identical(data_dir, quandl, monkeypatch):
    _, bars, acts = quandl
    store = BarStore()
    _write(store, bars[bars.symbol == "AAPL"], actions=acts)
    before = _files(data_dir)
    real = pq.write_table
    calls, lock = [], threading.Lock()

    def flaky(table, where, *a, **kw):
        with lock:
            calls.append(where)
            n = len(calls)
        if n > 1: raise OSError("disk full (injected after the first partition)")
        return real(table, where, *a, **kw)

    monkeypatch.setattr(store_mod.pq, "write_table", flaky)
    changed = bars.assign(close=bars.close * 1.0001, high=bars.high * 1.0001)   # touches all four symbols
    with pytest.raises(OSError, match="injected"):
        _write(store, changed, known_at=KNOWN_LATER)
    assert len(calls) >= 2     # partitions are written by parallel threads: the first succeeds, others fail
    assert _files(data_dir) == before
    monkeypatch.setattr(store_mod.pq, "write_table", real)
    # and a failure while writing the manifest itself (the commit point)
    def no_manifest(path, obj): raise OSError("manifest write failed (injected)")
    monkeypatch.setattr(store_mod, "atomic_write_json", no_manifest)
    with pytest.raises(OSError, match="manifest write failed"):
        _write(store, changed, known_at=KNOWN_LATER)
    assert _files(data_dir) == before
    monkeypatch.undo()
    assert len(store.read_bars("AAPL")) == 252
    assert _write(store, changed, known_at=KNOWN_LATER).rows_new == 916 - 252   # the store still works


def test_corrupt_or_missing_state_is_a_state_error_naming_the_file(data_dir, quandl):
    _, bars, _ = quandl
    store = BarStore()
    _write(store, bars)
    manifest = store.manifest_path
    good = manifest.read_bytes()
    entry = store.manifest()["datasets"]["bars"]["MSFT"]
    part = data_dir / entry["file"]
    # a partition that vanished
    saved = part.read_bytes()
    part.unlink()
    with pytest.raises(StateError, match=str(part)): store.read_bars("MSFT")
    with pytest.raises(StateError, match=str(part)): store.query("SELECT count(*) FROM bars")
    # a partition overwritten with garbage of the same size, and a truncated one
    part.write_bytes(b"\0" * len(saved))
    with pytest.raises(StateError, match=str(part)): store.read_bars("MSFT")
    with pytest.raises(StateError, match="checksum"): store.verify()
    part.write_bytes(saved[: len(saved) // 2])
    with pytest.raises(StateError, match="truncated"): store.read_bars("MSFT")
    part.write_bytes(saved)
    assert len(store.read_bars("MSFT")) == 252 and store.verify()["files"] >= 4
    # a corrupt manifest, a foreign JSON, a missing manifest
    manifest.write_text('{"schema_version": 1, "datasets": {"bars": {"MSFT": {"fi')
    with pytest.raises(StateError, match=str(manifest)): store.read_bars("MSFT")
    manifest.write_text('{"hello": 1}')
    with pytest.raises(StateError, match="not a quantlab manifest"): store.symbols()
    manifest.unlink()
    with pytest.raises(StateError, match="missing but the store holds data files"): store.read_bars()
    with pytest.raises(StateError): store.write_bars(bars, freq="1D")   # never overwrites an unknown state
    manifest.write_bytes(good)
    assert len(store.read_bars()) == 916


def test_unknown_symbol_is_a_usage_error(data_dir, quandl):
    _, bars, _ = quandl
    store = BarStore()
    _write(store, bars[bars.symbol == "AAPL"])
    with pytest.raises(UsageError, match="IBM"): store.read_bars(["AAPL", "IBM"])


# ---------------------------------------------------------------- warnings, adjustment, series, SQL, ticks


def test_warnings_are_kept_with_the_data_per_symbol(data_dir, quandl):
    _, bars, _ = quandl
    store = BarStore()
    b = bars.copy()
    hit = b.index[(b.symbol == "MSFT")][40]
    b.loc[hit, "volume"] = 0.0
    r = _write(store, b)
    assert r.warnings >= 1
    w = store.warnings("MSFT")
    zero = w[w.check == "zero_volume"]
    assert len(zero) == 1 and zero.ts.iloc[0] == b.loc[hit, "ts"] and zero.file.iloc[0] == "QUANDL_SAMPLE_TABLE.csv"
    assert not (store.warnings("AAPL").check == "zero_volume").any()
    _write(store, b)                                                   # same file again
    assert len(store.warnings("MSFT")) == len(w)
    assert set(store.warnings().symbol) <= set(bars.symbol)


def test_adjusted_reads_match_the_vendor_adjusted_prices(data_dir, quandl):
    raw, bars, acts = quandl
    store = BarStore()
    _write(store, bars, actions=acts)
    for sym in ["AAPL", "MSFT"]:
        adj = store.read_bars(sym, adjusted="total")
        vendor = raw[raw.ticker == sym].sort_values("date")
        # Quandl's factors also include dividends after 2014, so compare day-to-day ratios, not levels
        ours = adj.close.to_numpy()[1:] / adj.close.to_numpy()[:-1]
        theirs = vendor.adj_close.to_numpy()[1:] / vendor.adj_close.to_numpy()[:-1]
        np.testing.assert_allclose(ours, theirs, rtol=1.3e-4, err_msg=sym)
    split = store.read_bars("AAPL", adjusted="split")
    rawr = store.read_bars("AAPL")
    pre = rawr.ts < pd.Timestamp("2014-06-09", tz="UTC")
    np.testing.assert_allclose(split.close[pre], rawr.close[pre] / 7)
    np.testing.assert_allclose(split.volume[pre], rawr.volume[pre] * 7)
    # as of a moment before the split was known, there is nothing to adjust for
    before = store.read_bars("AAPL", adjusted="split", as_of="2014-06-08")
    np.testing.assert_allclose(before.close, rawr.close[rawr.ts <= pd.Timestamp("2014-06-08", tz="UTC")])


def test_monthly_factors_join_only_after_the_month_ended(data_dir, shared_data):
    import arch.data.frenchdata, arch.data.sp500
    sp = arch.data.sp500.load()
    bars = pd.DataFrame({"symbol": "SP500", "ts": session_closes(sp.index),
                         **{c.lower(): sp[c].astype(float).to_numpy() for c in ["Open", "High", "Low", "Close", "Volume"]}})
    ffr = arch.data.frenchdata.load()
    ff = pd.DataFrame({"ts": pd.to_datetime(ffr.index.as_unit("ns").asi8.astype(str), format="%Y%m").tz_localize("UTC"),
                       "mkt_rf": ffr["Mkt-RF"].to_numpy() / 100})
    store = BarStore()
    store.write_bars(bars, freq="1D")
    store.write_series("ff", ff, ["mkt_rf"], available_at=pd.DateOffset(months=1))
    joined = store.asof_join(store.read_bars("SP500"), "ff")
    # independent: the factor month seen by a bar is the calendar month before the bar's (New York) month
    month = joined.ts.dt.tz_convert("America/New_York").dt.tz_localize(None).dt.to_period("M")
    expected = (month - 1).dt.to_timestamp().dt.tz_localize("UTC")
    expected = expected.where(expected <= ff.ts.max(), ff.ts.max())
    assert (joined.ff_ts == expected).all()
    ref = ff.set_index("ts").mkt_rf.reindex(expected).to_numpy()
    np.testing.assert_array_equal(joined.mkt_rf.to_numpy(), ref)
    # a late revision of an old month must not replace the newest month in the timeline
    store.write_series("ff", ff[ff.ts == "2010-03-01"].assign(mkt_rf=0.5), ["mkt_rf"],
                       available_at=pd.DateOffset(months=1), known_at="2016-05-10")
    again = store.asof_join(store.read_bars("SP500"), "ff")
    np.testing.assert_array_equal(again.mkt_rf.to_numpy(), joined.mkt_rf.to_numpy())
    assert store.read_series("ff").set_index("ts").mkt_rf.loc["2010-03-01"] == 0.5
    assert store.read_series("ff", as_of="2016-05-09").set_index("ts").mkt_rf.loc["2010-03-01"] != 0.5


def test_query_runs_duckdb_over_the_stored_files(data_dir, quandl):
    _, bars, acts = quandl
    store = BarStore()
    _write(store, bars, actions=acts)
    got = store.query("SELECT symbol, count(*) AS n, max(ts) AS last FROM bars GROUP BY symbol ORDER BY symbol")
    ref = bars.groupby("symbol").agg(n=("ts", "size"), last=("ts", "max")).reset_index()
    assert got.symbol.tolist() == ref.symbol.tolist() and got.n.tolist() == ref.n.tolist()
    assert str(got["last"].dtype) == "datetime64[ns, UTC]" or str(got["last"].dtype).endswith(", UTC]")
    assert (got["last"] == ref["last"]).all()
    assert store.query("SELECT count(*) AS n FROM actions WHERE kind = 'split'").n.iloc[0] == 1


def test_ticks_upsert_as_a_multiset_and_filter_by_time(data_dir, shared_data):
    raw = pd.read_csv(shared_data / "highfrequency" / "sampleTData.csv.gz", dtype={"EX": str})
    trades = pd.DataFrame({"symbol": raw.SYMBOL.astype(str), "ts": pd.to_datetime(raw.DT, utc=True),
                           "price": raw.PRICE.astype(float), "size": raw.SIZE.astype(float), "exchange": raw.EX})
    store = BarStore()
    half = len(trades) // 2
    store.write_trades(trades.iloc[: half + 500])
    r = store.write_trades(trades.iloc[half - 500:])
    assert r.rows_new == len(trades) - half - 500
    got = store.read_trades("XXX")
    assert len(got) == len(trades) == 7168
    assert store.write_trades(trades).changed is False
    ref = trades.sort_values("ts", kind="stable", ignore_index=True)
    np.testing.assert_array_equal(np.sort(got.price.to_numpy()), np.sort(ref.price.to_numpy()))
    lo, hi = pd.Timestamp("2018-01-02 15:00", tz="UTC"), pd.Timestamp("2018-01-02 16:00", tz="UTC")
    assert len(store.read_trades("XXX", start=lo, end=hi)) == int(((trades.ts >= lo) & (trades.ts <= hi)).sum())


def test_symbols_with_a_slash_and_series_names_are_safe(data_dir):
    store = BarStore()
    ts = session_closes(["2024-01-02", "2024-01-03"])
    bars = pd.DataFrame({"symbol": "EUR/USD", "ts": ts, "open": 1.1, "high": 1.2, "low": 1.0, "close": 1.1, "volume": 1.0})
    store.write_bars(bars, validate=False)
    assert store.symbols() == ["EUR/USD"] and len(store.read_bars("EUR/USD")) == 2
    assert (data_dir / "bars" / "symbol=EUR%2FUSD").is_dir()
    with pytest.raises(UsageError, match="series name"):
        store.write_series("../x", pd.DataFrame({"ts": ts, "v": [1.0, 2.0]}), ["v"])


def test_raw_bars_are_refused_for_a_symbol_stored_vendor_adjusted(data_dir, shared_data):
    "pmdarima's MSFT is split- and dividend-adjusted; Quandl's MSFT is raw: one symbol cannot hold both."
    from quantlab.data.loaders import load_file
    from quantlab.data.samples import ingest_samples
    store = BarStore(data_dir)
    ingest_samples(store, ["msft"], progress=False)
    before = {p.relative_to(data_dir): p.read_bytes() for p in data_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    wiki = load_file(shared_data / "zipline" / "QUANDL_SAMPLE_TABLE.csv", preset="quandl_wiki")
    with pytest.raises(DataError, match="MSFT is stored as total-return-adjusted prices") as err:
        store.write_bars(wiki.bars, source={**wiki.source, "adjusted": wiki.adjusted}, actions=wiki.actions)
    assert "QUANDL_SAMPLE_TABLE.csv" in str(err.value) and "column 'symbol'" in str(err.value)
    after = {p.relative_to(data_dir): p.read_bytes() for p in data_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    # the same basis is accepted: the raw Quandl file goes into a store of its own, twice, without change
    other = BarStore(data_dir.parent / "wiki")
    other.write_bars(wiki.bars, source={**wiki.source, "adjusted": wiki.adjusted}, actions=wiki.actions)
    assert not other.write_bars(wiki.bars, source={**wiki.source, "adjusted": wiki.adjusted}, actions=wiki.actions).changed
