"""The look-ahead guard: every registered indicator and factor passes it on real data; known leaks are caught."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from quantlab.core import QuantlabError, UsageError
from quantlab.research.factors import FACTORS, FEATURES, demean, momentum, neutralize, market_beta
from quantlab.research.guard import LookaheadError, check_no_lookahead, truncate
from quantlab.research.indicators import INDICATORS, ema, macd, panels_from_bars

from quantlab.data.loaders import load_file
from quantlab.data.store import BarStore

REGISTRY = {**{f"indicator:{k}": v for k, v in INDICATORS.items()}, **{f"factor:{k}": v for k, v in FACTORS.items()}}
assert len(REGISTRY) == len(FEATURES) and set(FEATURES.values()) == set(REGISTRY.values())
BACKTRADER = {"YHOO": "backtrader/yhoo-1996-2015.txt", "ORCL": "backtrader/orcl-1995-2014.txt",
              "NVDA": "backtrader/nvda-1999-2014.txt"}
CSVDIR = {s: f"zipline/csvdir_daily/{s}.csv.gz" for s in ("AAPL", "IBM", "KO", "MSFT")}


@pytest.fixture(scope="module")
def bars7(shared_data, tmp_path_factory) -> pd.DataFrame:
    "Real daily OHLCV of 7 stocks, 2012-2014 (backtrader + zipline csvdir files), loaded into a store and read back."
    store = BarStore(tmp_path_factory.mktemp("store"))
    for symbol, rel in BACKTRADER.items():
        loaded = load_file(shared_data / rel, preset="backtrader", symbol=symbol)
        store.write_bars(loaded.bars, source=loaded.source)
    for symbol, rel in CSVDIR.items():        # bars only: these files' OHLC are already split-adjusted
        loaded = load_file(shared_data / rel, preset="zipline_csvdir", symbol=symbol)
        store.write_bars(loaded.bars, source=loaded.source)
    return store.read_bars(start="2012-01-01", end="2014-12-31 23:59")


@pytest.fixture(scope="module")
def fields7(bars7) -> dict:
    return panels_from_bars(bars7)


@pytest.fixture(scope="module")
def closes20(pypfopt_closes) -> dict:
    "pypfopt's 20 adjusted closes, 1990-2018, with late listings (GOOG 2004, FB 2012, BABA 2014, ...)."
    return {"close": pypfopt_closes.copy()}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_feature_has_no_lookahead_on_real_ohlcv(fields7, name):
    report = check_no_lookahead(REGISTRY[name], fields7, n_dates=5, name=name)
    assert report.ok and len(report.cuts) == 5
    assert report.n_values > 0, f"{name}: every compared value was warm-up NaN, the check proved nothing"


def _needs_only_close(fn) -> bool:
    probe = pd.DataFrame({"A": [1.0, 2.0]}, index=pd.date_range("2020-01-01", periods=2, tz="UTC"))
    try:
        fn({"close": probe})
    except KeyError:
        return False
    return True


CLOSE_ONLY = sorted(k for k, v in REGISTRY.items() if _needs_only_close(v))


@pytest.mark.parametrize("name", CLOSE_ONLY)
def test_close_only_feature_has_no_lookahead_with_late_listings(closes20, name):
    close = closes20["close"]
    cuts = [close["FB"].first_valid_index() - pd.Timedelta(days=1), close["FB"].first_valid_index(),
            close.index[6000], close.index[7000], close.index[-2]]
    report = check_no_lookahead(REGISTRY[name], closes20, dates=cuts, name=name)
    assert report.ok and report.n_values > 0


def test_close_only_list_covers_the_price_features():
    assert {"factor:momentum_12_1", "factor:composite_mom_lowvol_trend", "indicator:macd_12_26_9"} <= set(CLOSE_ONLY)
    assert "factor:amihud_1y" not in CLOSE_ONLY


def test_guard_takes_the_long_bars_frame(bars7):
    report = check_no_lookahead(lambda b: FACTORS["momentum_beta_neutral"](panels_from_bars(b)), bars7, n_dates=3)
    assert report.ok and report.n_values > 0
    leaky = lambda b: panels_from_bars(b)["close"].pct_change().shift(-1)     # tomorrow's return as a feature
    with pytest.raises(LookaheadError):
        check_no_lookahead(leaky, bars7, n_dates=3)


def test_group_neutralization_with_a_static_sector_map_passes(fields7):
    data = {**fields7, "sector": pd.Series({"YHOO": "tech", "ORCL": "tech", "NVDA": "tech", "MSFT": "tech",
                                            "IBM": "tech", "AAPL": "hw", "KO": "staples"})}
    fn = lambda f: {"demeaned": demean(momentum(f["close"], 126), f["sector"], min_assets=3),
                    "neutral": neutralize(momentum(f["close"], 126), {"beta": market_beta(f["close"], window=126)},
                                          groups=f["sector"], min_assets=3)}
    report = check_no_lookahead(fn, data)
    assert report.ok and set(report.checks["output"]) == {"demeaned", "neutral"}
    assert (report.checks.groupby("output")["compared"].sum() > 0).all()


# ---------------------------------------------------------------- leaks are caught

LEAKS = {
    "shift(-1)": lambda f: f["close"].shift(-1),
    "centred rolling mean": lambda f: f["close"].rolling(21, center=True).mean(),
    "full-sample z-score": lambda f: (f["close"] - f["close"].mean()) / f["close"].std(),
    "back-filled warm-up": lambda f: ema(f["close"], 50).bfill(),
    "forward return label": lambda f: f["close"].shift(-5) / f["close"] - 1,
    "min-max scaled on the whole sample": lambda f: (f["volume"] - f["volume"].min()) / (f["volume"].max() - f["volume"].min()),
    "percentile rank over the whole history": lambda f: f["close"].rank(axis=0, pct=True),
}


@pytest.mark.parametrize("name", sorted(LEAKS))
def test_leaky_feature_is_caught(fields7, name):
    with pytest.raises(LookaheadError, match="look-ahead") as info:
        check_no_lookahead(LEAKS[name], fields7, name=name)
    err = info.value
    assert isinstance(err, QuantlabError)
    assert err.feature == name and err.ts <= err.cut and err.column in fields7["close"].columns


def test_error_names_the_first_leaking_date_and_column(fields7):
    close = fields7["close"]
    cut = close.index[400]
    with pytest.raises(LookaheadError) as info:
        check_no_lookahead(lambda f: f["close"].shift(-1), fields7, dates=[cut])
    err = info.value
    assert err.ts == cut and err.cut == cut and err.column == close.columns[0]   # only the last kept row needs tomorrow
    assert err.full == close.iloc[401, 0] and np.isnan(err.truncated)
    assert str(cut) in str(err) and repr(close.columns[0]) in str(err)


def test_leak_in_one_output_of_a_dict_is_named(fields7):
    def half_leaky(f):
        out = macd(f["close"])
        out["signal"] = out["signal"].shift(-2)
        return out
    with pytest.raises(LookaheadError, match="'signal'") as info:
        check_no_lookahead(half_leaky, fields7)
    assert info.value.output == "signal"


def test_report_without_raising_lists_leaks_earliest_first(fields7):
    report = check_no_lookahead(LEAKS["full-sample z-score"], fields7, raise_on_leak=False)
    assert not report.ok and len(report.leaks) > 0
    assert report.leaks["ts"].is_monotonic_increasing
    assert report.leaks["ts"].iloc[0] == fields7["close"].index[0]      # a full-sample statistic leaks into day 1
    assert (report.checks["differ"] > 0).all()


def test_explicit_naive_dates_are_taken_as_utc_and_cuts_are_inclusive(fields7):
    report = check_no_lookahead(INDICATORS["sma_20"], fields7, dates=["2013-06-03", "2014-01-02"])
    assert [c.tz is not None for c in report.cuts] == [True, True]
    kept = truncate(fields7, report.cuts[0])["close"]
    assert kept.index[-1] <= report.cuts[0] and len(kept) == (fields7["close"].index <= report.cuts[0]).sum()


def test_all_warmup_output_is_reported_as_vacuous(fields7):
    report = check_no_lookahead(lambda f: f["close"] * np.nan, fields7)
    assert report.ok and report.n_values == 0


# ---------------------------------------------------------------- properties and misuse

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lag=st.integers(-5, 5), window=st.integers(1, 30))
def test_a_shift_passes_exactly_when_it_looks_backwards(fields7, lag, window):
    fn = lambda f: f["close"].rolling(window).mean().shift(lag)
    if lag >= 0:
        assert check_no_lookahead(fn, fields7, n_dates=3).ok
    else:
        with pytest.raises(LookaheadError):
            check_no_lookahead(fn, fields7, n_dates=3)


def test_misuse_is_a_usage_error(fields7):
    with pytest.raises(UsageError, match="expected Series, DataFrame"):
        check_no_lookahead(lambda f: 1.0, fields7)
    with pytest.raises(UsageError, match="no time axis"):
        check_no_lookahead(lambda d: d, {"x": [1, 2, 3]})
