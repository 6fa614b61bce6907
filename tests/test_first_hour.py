"""What a newcomer meets in the first hour (issue #17): the store's bundled samples read as one bar size, stored
warnings that can be seen, one calendar per symbol, one meaning of "trades", one default cost model, symbols in
any case, checked strategy parameters, and ingest edge cases refused with the file's line, column and text.
Each test failed before its fix."""
import json
import time

import numpy as np
import pandas as pd
import pytest

from quantlab import cli
from quantlab.core import DEFAULT_COSTS, DataError, UsageError
from quantlab.data.store import BarStore

from test_cli import run


@pytest.fixture(scope="module")
def samples_store(tmp_path_factory):
    "Every installed bundled sample, ingested the way the README's tour does it."
    root = tmp_path_factory.mktemp("tour") / "data"
    code, out, err = run("--data-dir", root, "data", "samples", "--ingest")
    assert code == 0, err
    return root


def _needs_eurusd(store: BarStore):
    if "EURUSD" not in store.symbols(): pytest.skip("the EUR/USD sample needs the samples extra (pip install 'quantlab[samples]')")


# --- 1. read_bars() does not mix bar sizes -----------------------------------------------------------------

def test_reading_daily_and_hourly_bars_together_is_refused_and_freq_selects(samples_store):
    store = BarStore(samples_store)
    _needs_eurusd(store)
    with pytest.raises(UsageError, match=r"different frequencies \(1D: .*SP500.*; 1h: EURUSD\)"):
        store.read_bars(adjusted="total")
    daily = store.read_bars(freq="1D", adjusted="total")
    assert "EURUSD" not in set(daily["symbol"]) and {"SP500", "NASDAQ"} <= set(daily["symbol"])
    assert set(store.read_bars(freq="1h")["symbol"]) == {"EURUSD"}
    assert set(store.read_bars(freq="mixed")["symbol"]) == set(store.symbols())
    with pytest.raises(UsageError, match="freq='1D': EURUSD is 1h"):
        store.read_bars(["SP500", "EURUSD"], freq="1D")


def test_momentum_from_the_store_equals_momentum_of_the_sample_alone(samples_store):
    "The 12-1 momentum of SP500 read with the other daily sets equals it computed on the S&P 500 sample by itself."
    from quantlab.data.samples import load_sample
    from quantlab.research import factors, indicators, labels
    store = BarStore(samples_store)
    close = indicators.panels_from_bars(store.read_bars(freq="1D", adjusted="total"))["close"]
    alone = load_sample("sp500").bars.set_index("ts")["close"]
    mom = factors.momentum(close)["SP500"].dropna()
    ref = (alone.shift(21) / alone.shift(252) - 1).reindex(mom.index)
    assert len(mom) > 4000 and np.allclose(mom.to_numpy(), ref.to_numpy(), rtol=0, atol=1e-12)
    fwd = labels.forward_returns(close, 21)["SP500"].dropna()
    assert np.allclose(fwd.to_numpy(), (alone.shift(-21) / alone - 1).reindex(fwd.index).to_numpy(), rtol=0, atol=1e-12)


# --- 5, 6, 9. stored warnings, the recorded calendar, symbols in any case --------------------------------

def test_validate_shows_the_warnings_stored_at_ingest_and_rechecks_on_request(tmp_path, shared_data):
    "An unsorted file stores its warnings (the raw file's); `validate` shows those, `--recheck` checks the cleaned bars."
    src = pd.read_csv(shared_data / "backtrader" / "yhoo-1996-2015.txt")
    path = tmp_path / "yhoo-unsorted.csv"
    src.iloc[::-1].to_csv(path, index=False)
    root = tmp_path / "store"
    code, out, err = run("--data-dir", root, "data", "ingest", path, "--format", "yahoo", "--symbol", "YHOO")
    assert code == 0, err
    stored = len(BarStore(root).warnings("YHOO"))
    assert stored > 0 and f"{stored} validation warnings stored" in out
    code, out, err = run("--data-dir", root, "data", "validate", "yhoo", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["stored"] and shown["warnings"] == stored == len(shown["findings"])
    assert shown["counts"].get("unsorted", 0) > 0
    code, out, err = run("--data-dir", root, "data", "validate", "YHOO", "--json", "--recheck")
    assert code == 0 and json.loads(out)["counts"]["unsorted"] == 0  # the stored bars are sorted


def test_the_calendar_of_each_sample_is_recorded_and_used(samples_store):
    store = BarStore(samples_store)
    _needs_eurusd(store)
    code, out, err = run("--data-dir", samples_store, "data", "list", "--json")
    listed = {r["symbol"]: r for r in json.loads(out)}
    assert (listed["EURUSD"]["calendar"], listed["EURUSD"]["freq"]) == ("24/5", "1h")
    assert (listed["SP500"]["calendar"], listed["SP500"]["freq"]) == ("XNYS", "1D")
    code, out, err = run("--data-dir", samples_store, "data", "validate", "EURUSD", "--json", "--recheck")
    rechecked = json.loads(out)
    assert rechecked["calendar"] == "24/5" and rechecked["warnings"] < 500  # against NYSE it was 3,590
    assert rechecked["warnings"] == len(store.warnings("EURUSD"))


def test_symbols_and_series_are_found_in_any_letter_case(samples_store):
    code, out, err = run("--data-dir", samples_store, "data", "show", "vix", "--start", "2018-01-02", "--end", "2018-01-03", "--json")
    assert code == 0, err
    assert [r["vix"] for r in json.loads(out)] == pytest.approx([9.77, 9.15])
    code, out, err = run("--data-dir", samples_store, "data", "show", "sp500", "--start", "2018-12-31", "--json")
    assert code == 0 and json.loads(out)[0]["symbol"] == "SP500"
    assert BarStore(samples_store).resolve(["nasdaq", "Sp500"]) == ["NASDAQ", "SP500"]
    code, out, err = run("--data-dir", samples_store, "data", "show", "nope")
    assert code == 2 and "no bars stored for ['nope']" in err


# --- 7, 8. one meaning of "trades", one cost model ----------------------------------------------------------

def test_backtest_and_sweep_count_the_same_fills_with_the_same_costs(tmp_path):
    code, out, err = run("backtest", "sma_cross", "-p", "fast", "20", "-p", "slow", "100", "--start", "2004-01-01", "--json")
    bt = json.loads(out)
    assert code == 0 and bt["cost_model"] == DEFAULT_COSTS and bt["round_trips"] * 2 >= bt["fills"] > bt["round_trips"] > 0
    code, out, err = run("sweep", "sma_cross", "--grid", "fast=20", "slow=100", "--start", "2004-01-01", "--json")
    sw = json.loads(out)
    best = sw["best"][0]
    assert "trades" not in best and best["fills"] == bt["fills"]
    assert best["final_value"] == pytest.approx(bt["final_equity"], rel=1e-12)  # the vector engine, at the same costs
    assert sw["cost_model"] == DEFAULT_COSTS


def test_the_report_templates_default_to_the_same_costs():
    from quantlab.reports.render import template_parameters
    for name in ("backtest", "robustness"):
        declared = template_parameters(name)
        assert {k: declared[k]["default"] for k in DEFAULT_COSTS} == DEFAULT_COSTS, name


# --- 12. strategy parameters are checked everywhere, before any work ---------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["backtest", "sma_cross", "-p", "fast", "abc"], "parameter fast: must be a whole number, got 'abc'"),
    (["backtest", "sma_cross", "-p", "fast", "2.5"], "parameter fast: must be a whole number, got 2.5"),
    (["backtest", "rsi_reversion", "-p", "lower", "80"], "lower must be below upper (got lower=80.0, upper=70.0)"),
    (["sweep", "sma_cross", "--grid", "fast=200", "slow=50"], "no set of the grid passes its checks (fast must be below slow)"),
    (["sweep", "sma_cross", "--grid", "fast=a,b"], "grid parameter fast: must be a whole number, got 'a'"),
    (["walkforward", "sma_cross", "--grid", "fast=0,5", "slow=50"], "grid parameter fast: must be between 1 and 5000"),
    (["report", "backtest", "-p", "strategy", "foo"], "unknown strategy 'foo'"),
    (["report", "backtest", "-p", "params", '{"fast": 200, "slow": 50}'], "fast must be below slow"),
    (["report", "robustness", "-p", "grid", '{"fast": [300], "slow": [50]}'], "no set passes strategy 'sma_cross'"),
    (["live", "run", "xs_momentum", "-p", "freq", "D", "--name", "x"], "parameter freq: must be one of ['W', 'M', 'Q', 'Y']"),
])
def test_bad_strategy_parameters_exit_2_with_one_line_naming_them(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run("--data-dir", tmp_path / "data", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "reports").exists()  # a report fails before papermill: no _failed/ run left behind


def test_a_sweep_says_which_sets_it_left_out_and_how_many_it_shows():
    code, out, err = run("sweep", "sma_cross", "--grid", "fast=5,10,60", "slow=50,100", "--top", "2")
    assert code == 0 and "left out 1 set(s) of the grid: fast must be below slow" in err
    assert "the 2 best of 5 sets by Sharpe ratio" in out


# --- 14. ingest edge cases ---------------------------------------------------------------------------------

def _bars_csv(path, n=60, patch=None):
    from conftest import reference_calendar
    days = reference_calendar("XNYS", start="2020-01-01", end="2020-12-31").sessions_in_range("2020-01-02", "2020-12-31")[:n]
    lines = ["Date,Open,High,Low,Close,Volume"] + [f"{d.date()},10,11,9.5,10.5,1000" for d in days]
    if patch: lines[patch[0] - 1] = lines[patch[0] - 1].replace(",10.5,", f",{patch[1]},")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("case, expected", [
    ("header", "line 2: no data rows: the file has a header and nothing else"),
    ("binary", "not a text CSV file"),
    ("long", "column 'symbol': not a symbol"),
    ("traversal", "(value '../../etc/x')"),
    ("n/a", "line 57, column 'Close': nan [X]: price is missing or infinite (1 error(s) in total, first shown) (value 'n/a')"),
    ("text", "line 57, column 'Close': cannot parse a number (1 bad value(s) in this column) (value 'abc')"),
])
def test_ingest_edge_cases_exit_2_naming_the_file_line_and_text(case, expected, tmp_path):
    path, symbol = tmp_path / "bars.csv", "X"
    if case == "header": path.write_text("Date,Open,High,Low,Close,Volume\n")
    elif case == "binary": path.write_bytes(bytes(range(256)) * 10)
    elif case in ("n/a", "text"): _bars_csv(path, patch=(57, "n/a" if case == "n/a" else "abc"))
    else:
        _bars_csv(path)
        symbol = "A" * 300 if case == "long" else "../../etc/x"
    root = tmp_path / "store"
    code, out, err = run("--data-dir", root, "data", "ingest", path, "--symbol", symbol)
    assert code == 2 and "bars.csv" in err and expected in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and str(tmp_path / "store") not in err
    assert not root.exists() or not any(root.rglob("*.parquet"))  # nothing written


# --- 15. a killed write leaves garbage that verify counts and gc removes -----------------------------------

KILLED_WRITE = """
import os, signal, sys
import quantlab.data.store as store
from quantlab.data.samples import load_sample
real = store.atomic_write_json
def killed(*a, **k):  # kill -9 at the worst moment: before the manifest names the new files, or just after
    if sys.argv[2] == "after": real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
store.atomic_write_json = killed
bars = load_sample("sp500").bars
bars.loc[bars.index[-1], "close"] = bars["low"].iloc[-1]  # a correction: a new version of SP500's partition, the old file superseded
store.BarStore(sys.argv[1]).write_bars(bars, source="corrected.csv")
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_killed_ingest_leaves_garbage_that_verify_counts_and_gc_removes(tmp_path, when):
    import signal
    import subprocess
    import sys
    root = tmp_path / "store"
    assert run("--data-dir", root, "data", "samples", "--ingest")[0] == 0
    before = BarStore(root).read_bars("SP500")
    done = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(root), when], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    after = BarStore(root).read_bars("SP500")  # consistent: the manifest names the old files, or the new ones
    assert before["close"].iloc[-1] != before["low"].iloc[-1]
    assert after["close"].iloc[-1] == (before["low"].iloc[-1] if when == "after" else before["close"].iloc[-1])
    code, out, err = run("--data-dir", root, "data", "verify", "--json")
    found = json.loads(out)
    assert code == 0 and found["orphan_files"] >= 1 and found["orphan_bytes"] > 0
    code, out, err = run("--data-dir", root, "data", "gc")
    assert code == 0 and f"removed {found['orphan_files']} files ({found['orphan_bytes']:,} bytes)" in out
    found = json.loads(run("--data-dir", root, "data", "verify", "--json")[1])
    assert found["orphan_files"] == found["empty_dirs"] == 0 and found["files"] > 0
    pd.testing.assert_frame_equal(BarStore(root).read_bars("SP500"), after)


# --- 19. cold start: a short backtest loads no heavy machinery it does not use ---------------------------

def test_a_short_cli_backtest_starts_neither_numba_nor_exchange_calendars_nor_scipy(tmp_path):
    """The README's first backtest (42 fills) used to import numba and start its CPU target (0.7 s) for FIFO round
    trips, build exchange_calendars' XNYS (0.5 s) to stamp session closes, and import scipy.special (0.15 s) for one
    normal CDF. With the session table on disk it needs none of them (timed in bench/bench_cold_start.py)."""
    import os, subprocess, sys
    env = {**os.environ, "QUANTLAB_CACHE_DIR": str(tmp_path / "cache")}
    script = ("import sys\nfrom quantlab.cli import main\n"
              "try: main(['backtest', 'sma_cross', '-p', 'fast', '20', '-p', 'slow', '100'])\n"
              "except SystemExit as e: assert not e.code, e.code\n"
              "print('LOADED', sorted(m for m in ('numba', 'exchange_calendars', 'scipy') if m in sys.modules))\n")
    runs = [subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
            for _ in range(2)]
    for r in runs: assert r.returncode == 0, r.stderr[-2000:]
    loaded = [eval(r.stdout.rsplit("LOADED ", 1)[1]) for r in runs]
    assert "exchange_calendars" in loaded[0]  # the first run builds the session table and caches it
    assert loaded[1] == []                    # every later run reads it from disk
    assert "round_trips" in runs[1].stdout
    assert list((tmp_path / "cache" / "sessions").glob("XNYS-*.npz"))


def test_round_trips_are_the_same_from_the_plain_and_the_compiled_fifo():
    "Below PLAIN_FIFO_FILLS round_trips runs `_fifo.py`, above it the numba kernel: the same rows either way."
    from quantlab.backtest import driver
    rng = np.random.default_rng(7)
    n = 3_000
    fills = pd.DataFrame({"symbol": rng.choice(["A", "B", "C"], n), "ts": pd.date_range("2020-01-01", periods=n, freq="h", tz="UTC"),
                          "bar": np.arange(n), "quantity": rng.choice([-300.0, -100.0, 50.0, 100.0, 200.0], n),
                          "price": rng.uniform(50, 150, n), "commission": rng.uniform(0, 2, n)})
    plain = driver.round_trips(fills, {"B": 50.0})
    old = driver.PLAIN_FIFO_FILLS
    try:
        driver.PLAIN_FIFO_FILLS = 0
        compiled = driver.round_trips(fills, {"B": 50.0})
    finally:
        driver.PLAIN_FIFO_FILLS = old
    assert len(plain) > 1000 and set(plain["direction"]) == {"long", "short"}
    pd.testing.assert_frame_equal(plain, compiled, check_exact=True)


# --- 20. ingest within 1.5x of bare pyarrow (bench/bench_ingest.py), with a progress bar on large files --------

def _minute_csv(path, symbols=("AAA", "BBB"), n=390):
    ends = pd.date_range("2024-03-04 14:31", periods=n, freq="min", tz="UTC")
    rows = [pd.DataFrame({"symbol": s, "ts": ends.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": 10.0 + k, "high": 11.0 + k,
                          "low": 9.0 + k, "close": 10.5 + k + np.arange(n) * 0.001, "volume": 100.0}) for k, s in enumerate(symbols)]
    pd.concat(rows).to_csv(path, index=False)
    return path


def test_csv_timestamps_are_parsed_by_the_reader_and_coercion_does_not_copy_prices(tmp_path):
    "The CSV reader (pyarrow's) parses ISO-8601 times itself, and coerce_bars keeps the float columns it was given."
    from quantlab.data.loaders import read_table
    from quantlab.data.schema import coerce_bars
    df = read_table(_minute_csv(tmp_path / "m.csv"))
    assert isinstance(df["ts"].dtype, pd.DatetimeTZDtype)   # was str, parsed string by string afterwards (6 s on 10M rows)
    out = coerce_bars(df)
    assert np.shares_memory(out["close"].to_numpy(), df["close"].to_numpy())  # was a copy into one float block (1.3 s)


def test_a_malformed_csv_still_names_its_line_when_the_fast_reader_refuses_it(tmp_path):
    f = _minute_csv(tmp_path / "m.csv")
    lines = f.read_text().splitlines()
    lines[57] += ",extra"
    f.write_text("\n".join(lines) + "\n")
    code, out, err = run("--data-dir", tmp_path / "d", "data", "ingest", f)
    assert code == 2 and "m.csv" in err and "line 58" in err, err


def test_validation_runs_while_the_new_files_are_written_and_a_failure_leaves_nothing(tmp_path, monkeypatch):
    """write_bars validates in a thread beside sorting and writing: the validator here waits until a partition file
    exists (it timed out when validation ran first), then fails; the store is left as it was, with no stray files."""
    import threading
    from quantlab.data import validate as V
    from quantlab.data.loaders import load_file
    from test_cli import snapshot
    store = BarStore(tmp_path / "store")
    store.write_bars(load_file(_minute_csv(tmp_path / "a.csv", symbols=("AAA",))))
    before = snapshot(store.root)
    old_files, seen = set(store.root.rglob("part-*.parquet")), threading.Event()

    def waits_for_a_file_then_fails(bars, **kw):
        for _ in range(200):
            if set(store.root.rglob("part-*.parquet")) - old_files: seen.set(); break
            time.sleep(0.05)
        raise DataError("price is missing or infinite", row=1, column="close")
    monkeypatch.setattr(V, "validate_bars", waits_for_a_file_then_fails)
    with pytest.raises(DataError, match="missing or infinite"):
        store.write_bars(load_file(_minute_csv(tmp_path / "b.csv", symbols=("AAA", "BBB"))))
    assert seen.is_set()                    # BBB's file was being written while validation ran
    assert snapshot(store.root) == before   # and the failed validation removed it: nothing half-written
    check = store.verify()
    assert check["orphan_files"] == 0 and check["empty_dirs"] == 0, check


def test_a_large_ingest_shows_a_progress_bar(tmp_path, monkeypatch):
    f = _minute_csv(tmp_path / "m.csv")
    monkeypatch.setattr(cli, "PROGRESS_BYTES", 0)  # every file counts as large
    code, out, err = run("--data-dir", tmp_path / "d", "data", "ingest", f)
    assert code == 0, err
    assert "reading m.csv" in err and "validating and writing 780 bars" in err and "100%" in err
    monkeypatch.setattr(cli, "PROGRESS_BYTES", 64 << 20)
    code, out, err = run("--data-dir", tmp_path / "d2", "data", "ingest", f)
    assert code == 0 and "reading" not in err  # small files stay quiet
