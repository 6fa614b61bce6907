"""Bundled samples: each loads by name with its documented quirk handled, and ingests into the store."""
import numpy as np
import pandas as pd
import pytest

from quantlab.data import loaders
from quantlab.core import UsageError, session_closes
from quantlab.data.samples import SAMPLES, ingest_samples, list_samples, load_sample
from quantlab.data.store import BarStore


def test_list_samples_names_every_set_and_its_package():
    df = list_samples()
    assert set(df.name) == {"sp500", "nasdaq", "vix", "wti", "ff3", "goog", "eurusd", "msft"}
    assert df.installed.all()
    assert set(df.columns) >= {"name", "kind", "symbol", "package", "freq", "adjusted", "description", "quirks"}


def test_sp500_is_the_arch_data_stamped_at_the_nyse_close():
    import arch.data.sp500
    raw = arch.data.sp500.load()
    got = load_sample("sp500")
    assert isinstance(got, loaders.Loaded) and got.adjusted is None
    b = got.bars
    assert len(b) == len(raw) == 5031
    np.testing.assert_array_equal(b.close.to_numpy(), raw["Close"].to_numpy())
    np.testing.assert_array_equal(b.volume.to_numpy(), raw["Volume"].to_numpy(float))
    assert (b.ts == session_closes(raw.index)).all()
    # an early close (1:00 pm New York on 3 July 2018) is stamped at 17:00 UTC, a normal winter day at 21:00
    assert b.set_index(b.ts.dt.date).ts.loc[pd.Timestamp("2018-07-03").date()] == pd.Timestamp("2018-07-03 17:00", tz="UTC")
    assert got.source["sha256"] and got.source["file"].endswith("sp500.csv.gz")


def test_fama_french_index_is_repaired_and_values_are_decimal():
    import arch.data.frenchdata
    raw = arch.data.frenchdata.load()
    ff = load_sample("ff3")
    assert len(ff) == 1109
    assert ff.ts.iloc[0] == pd.Timestamp("1926-07-01", tz="UTC") and ff.ts.iloc[-1] == pd.Timestamp("2018-11-01", tz="UTC")
    month_index = ff.ts.dt.year * 12 + ff.ts.dt.month
    assert (month_index.diff().iloc[1:] == 1).all()                     # consecutive months, no gap
    assert (ff.ts.dt.day == 1).all()
    np.testing.assert_allclose(ff.mkt_rf.to_numpy() * 100, raw["Mkt-RF"].to_numpy())
    np.testing.assert_allclose(ff.rf.to_numpy() * 100, raw["RF"].to_numpy())
    # available once the month is over
    assert (ff.available_at == ff.ts + pd.DateOffset(months=1)).all()


def test_vix_and_wti_drop_the_nan_holidays():
    import arch.data.vix, arch.data.wti
    vix, wti = load_sample("vix"), load_sample("wti")
    assert len(vix) == 1305 - 46 and vix.vix.notna().all()
    assert len(wti) == 8611 - 290 and wti.wti.notna().all()
    # the VIX NaN rows were exactly the NYSE holidays: every kept date is a session
    assert session_closes(vix.ts.dt.tz_localize(None)).notna().all()
    assert (vix.available_at > vix.ts).all() and (wti.available_at > wti.ts).all()


def test_goog_msft_eurusd_quirks():
    goog = load_sample("goog")
    assert len(goog.bars) == 2148 and goog.bars.close.iloc[0] == 100.34 and goog.adjusted is None
    msft = load_sample("msft")
    assert len(msft.bars) == 7983 and msft.adjusted == "total"
    assert msft.bars.close.iloc[0] < 0.1                                   # vendor-adjusted 1986 price
    eur = load_sample("eurusd")
    import backtesting.test as bt
    assert len(eur.bars) == 5000
    # UTC, labelled at the bar start in the vendor file: our ts is the bar end
    assert (eur.bars.ts.dt.tz_localize(None) == bt.EURUSD.index + pd.Timedelta("1h")).all()
    sunday_open = eur.bars[eur.bars.ts.dt.day_of_week == 6].groupby(eur.bars.ts.dt.date).ts.min()
    opens_ny = (sunday_open - pd.Timedelta("1h")).dt.tz_convert("America/New_York").dt.hour
    assert (opens_ny == 17).all()                                         # the FX week opens 17:00 New York


def test_unknown_sample_is_a_usage_error():
    with pytest.raises(UsageError, match="known: sp500"):
        load_sample("sp501")
    with pytest.raises(UsageError):
        ingest_samples(BarStore("/nonexistent/never-written"), ["goog", "nope"], progress=False)


def test_ingest_samples_is_idempotent_and_keeps_warnings(data_dir):
    store = BarStore()
    names = ["nasdaq", "goog", "vix", "ff3"]
    first = ingest_samples(store, names, progress=False)
    assert first.name.tolist() == names and (first.new == first.rows).all()
    before = store.manifest()
    again = ingest_samples(store, names, progress=False)
    assert again.new.sum() == 0 and again.corrected.sum() == 0
    assert store.manifest() == before
    assert set(store.symbols()) == {"NASDAQ", "GOOG"} and set(store.series_names()) == {"vix", "ff3"}
    zero = store.warnings("NASDAQ").query("check == 'zero_volume'")
    assert len(zero) == 2                                                # README: 2 zero-volume days
    assert store.manifest()["datasets"]["bars"]["GOOG"]["source"]["preset"] == "sample:goog"
    joined = store.asof_join(store.read_bars("GOOG"), "vix")
    first_vix = load_sample("vix").available_at.min()
    assert joined[joined.ts >= first_vix].vix.notna().all() and joined[joined.ts < first_vix].vix.isna().all()
