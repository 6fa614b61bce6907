"""The `quantlab` command line on real vendor files: exit codes, JSON output checked against the source files,
point-in-time reads, and bad input that exits 2 with a located one-line message and leaves the store as it was."""
import argparse
import contextlib
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantlab import cli


def run(*argv):
    "Run `quantlab argv...` in process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def run_subprocess(*argv, env=None):
    "Run `python -m quantlab.cli argv...` in a child process."
    return subprocess.run([sys.executable, "-m", "quantlab.cli", *map(str, argv)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def snapshot(root: Path) -> dict:
    "Every file under `root` with its bytes: equal snapshots mean an unchanged store."
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def new_york_dates(ts: pd.Series) -> pd.Series:
    "The New York calendar date of each UTC bar end (a daily bar ends at the session close)."
    return pd.to_datetime(ts).dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def quandl(shared_data) -> Path:
    return shared_data / "zipline" / "QUANDL_SAMPLE_TABLE.csv"


@pytest.fixture(scope="module")
def yhoo(shared_data) -> Path:
    return shared_data / "backtrader" / "yhoo-1996-2015.txt"


@pytest.fixture(scope="module")
def store(tmp_path_factory, quandl, yhoo) -> Path:
    "A store with the Quandl sample (4 symbols) and YHOO, ingested through the CLI."
    root = tmp_path_factory.mktemp("cli") / "store"
    code, out, err = run("--data-dir", root, "data", "ingest", quandl, "--format", "quandl_wiki")
    assert code == 0, err
    code, out, err = run("--data-dir", root, "data", "ingest", yhoo, "--format", "yahoo", "--symbol", "YHOO")
    assert code == 0, err
    return root


# --- help and usage -------------------------------------------------------------------------------------------

def _subcommand_paths(parser, prefix=()):
    "Every (sub)command path of the parser, e.g. ('data', 'show')."
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _subcommand_paths(sub, prefix + (name,))


@pytest.mark.parametrize("path", [(), *_subcommand_paths(cli.build_parser())], ids=lambda p: " ".join(p) or "quantlab")
def test_help_on_every_subcommand_exits_0(path):
    code, out, err = run(*path, "--help")
    assert code == 0 and out.startswith("usage: quantlab" + "".join(" " + p for p in path)), (out, err)


def test_expected_subcommands_are_registered():
    paths = set(_subcommand_paths(cli.build_parser()))
    assert {("data",), ("data", "ingest"), ("data", "list"), ("data", "show"), ("data", "validate"),
            ("data", "samples"), ("report",)} <= paths


def test_usage_errors_exit_2_with_one_line_and_no_traceback():
    for argv in (["data", "frobnicate"], ["data", "show"], ["data", "show", "AAPL", "--adjusted", "half"],
                 ["data", "show", "AAPL", "--start", "not-a-date"], ["--no-such-option"]):
        code, out, err = run(*argv)
        assert code == 2, argv
        assert "Traceback" not in err and err.strip().count("\n") == 0 and "error:" in err, (argv, err)


def test_unexpected_exception_exits_1_and_a_registered_command_runs(tmp_path):
    def build(parser):
        parser.set_defaults(run=lambda args: 1 / 0)
    cli.register(cli.Command("explode", "a command that fails unexpectedly", build))
    try:
        code, out, err = run("explode")
        assert code == 1 and "ZeroDivisionError" in err and "Traceback" not in err
        code, out, err = run("--traceback", "explode")
        assert code == 1 and "Traceback" in err
    finally:
        cli.COMMANDS.pop("explode")


# --- ingest, list, show ---------------------------------------------------------------------------------------

def test_list_json_counts_match_the_source_files(store, quandl, yhoo):
    code, out, err = run("--data-dir", store, "data", "list", "--json")
    assert code == 0, err
    listed = {r["symbol"]: r for r in json.loads(out) if r["symbol"] != "YHOOGAP"}  # another test adds YHOOGAP
    source = pd.read_csv(quandl)
    expected = source.groupby("ticker").size().to_dict()
    expected["YHOO"] = len(pd.read_csv(yhoo))
    assert {s: r["bars"] for s, r in listed.items()} == expected
    assert listed["ZEN"]["start"].startswith("2014-05-15")


def test_show_json_equals_the_vendor_rows(store, quandl):
    code, out, err = run("--data-dir", store, "data", "show", "AAPL", "--json")
    assert code == 0, err
    shown = pd.DataFrame(json.loads(out))
    src = pd.read_csv(quandl).query("ticker == 'AAPL'").reset_index(drop=True)
    assert len(shown) == len(src) == 252
    assert list(new_york_dates(shown["ts"])) == list(src["date"])
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(shown[col].to_numpy(float), src[col].to_numpy(float), rtol=1e-12, err_msg=col)
    # daily bars end at the New York close: 16:00 local
    assert set(pd.to_datetime(shown["ts"]).dt.tz_convert("America/New_York").dt.strftime("%H:%M")) <= {"16:00", "13:00"}


def test_show_start_end_and_table_output(store):
    code, out, err = run("--data-dir", store, "data", "show", "MSFT", "--start", "2014-06-01", "--end", "2014-06-30", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 21  # NYSE sessions in June 2014
    code, out, err = run("--data-dir", store, "data", "show", "MSFT", "--start", "2014-06-01", "--end", "2014-06-30")
    assert code == 0 and "close" in out and len(out.strip().splitlines()) == 21 + 2  # header lines + 21 bars


def test_show_total_adjusted_tracks_the_vendor_adjusted_close(store, quandl):
    # Quandl's adj_close also folds in dividends paid after 2014, so compare ratios: ours/vendor is constant
    code, out, err = run("--data-dir", store, "data", "show", "AAPL", "--adjusted", "total", "--json")
    assert code == 0, err
    ours = pd.DataFrame(json.loads(out))["close"].to_numpy(float)
    vendor = pd.read_csv(quandl).query("ticker == 'AAPL'")["adj_close"].to_numpy(float)
    ratio = ours / vendor
    assert np.max(np.abs(ratio / ratio[-1] - 1)) < 5e-4
    raw = pd.read_csv(quandl).query("ticker == 'AAPL'")["close"].to_numpy(float)
    assert ours[0] < raw[0] / 6.5  # the 7:1 split of 2014-06-09 is applied backwards


def test_as_of_returns_what_was_known_then(store, yhoo, tmp_path):
    # first ingest: each bar known at its own end, so --as-of cuts the history
    code, out, err = run("--data-dir", store, "data", "show", "YHOO", "--as-of", "2015-06-30T21:00:00Z", "--json")
    assert code == 0, err
    rows = pd.DataFrame(json.loads(out))
    assert new_york_dates(rows["ts"]).iloc[-1] == "2015-06-30"
    # a vendor correction of one close, ingested now, becomes a new version; earlier as-of reads keep the old value
    src = pd.read_csv(yhoo)
    corrected = src.copy()
    i = corrected.index[corrected["Date"] == "2015-12-30"][0]
    corrected.loc[i, "Close"] = round(src.loc[i, "Close"] * 1.01, 6)
    corrected.loc[i, "High"] = max(corrected.loc[i, "High"], corrected.loc[i, "Close"])
    path = tmp_path / "yhoo-corrected.csv"
    corrected.to_csv(path, index=False)
    code, out, err = run("--data-dir", store, "data", "ingest", path, "--format", "yahoo", "--symbol", "YHOO")
    assert code == 0, err
    def close_on(day, *extra):
        code, out, err = run("--data-dir", store, "data", "show", "YHOO", "--start", day, "--end", day + "T23:59", *extra, "--json")
        assert code == 0, err
        return json.loads(out)[0]["close"]
    assert close_on("2015-12-30") == pytest.approx(corrected.loc[i, "Close"])
    assert close_on("2015-12-30", "--as-of", "2020-01-01") == pytest.approx(src.loc[i, "Close"])
    code, out, err = run("--data-dir", store, "data", "list", "--json")
    assert {r["symbol"]: r["versions"] for r in json.loads(out)}["YHOO"] == 1


# --- validate -------------------------------------------------------------------------------------------------

def test_validate_json_gaps_match_the_exchange_calendar(store, yhoo, tmp_path):
    code, out, err = run("--data-dir", store, "data", "validate", "MSFT", "--json", "--recheck")
    assert code == 0, err
    report = json.loads(out)
    assert report["rows"] == 252 and report["errors"] == 0
    # YHOO with sessions cut out (one run of 3 days, two single days); reference: exchange_calendars' NYSE
    # sessions between the first and last date that the file lacks
    from conftest import reference_calendar
    src = pd.read_csv(yhoo)
    thinned = src.drop(index=[100, 101, 102, 2000, 4000])
    path = tmp_path / "yhoo-thinned.csv"
    thinned.to_csv(path, index=False)
    assert run("--data-dir", store, "data", "ingest", path, "--format", "yahoo", "--symbol", "YHOOGAP")[0] == 0
    sessions = reference_calendar("XNYS", start="1996-01-01", end="2016-12-31").sessions_in_range(
        thinned["Date"].iloc[0], thinned["Date"].iloc[-1])
    missing = set(pd.DatetimeIndex(sessions).strftime("%Y-%m-%d")) - set(thinned["Date"])
    assert len(missing) >= 5
    code, out, err = run("--data-dir", store, "data", "validate", "YHOOGAP", "--json", "--recheck")
    assert code == 0, err
    report = json.loads(out)
    assert not report["truncated"]
    gaps = [f for f in report["findings"] if f["check"] == "gap"]
    assert report["counts"]["gap"] == len(gaps) >= 3
    assert sum(f["value"] for f in gaps) == len(missing)  # each gap's value: sessions missing
    first_missing = {new_york_dates(pd.Series([f["ts"]])).iloc[0] for f in gaps}
    assert {src["Date"][100], src["Date"][2000], src["Date"][4000]} <= first_missing


def test_validate_text_output(store):
    code, out, err = run("--data-dir", store, "data", "validate", "AAPL", "--recheck")
    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("0 errors, ")


# --- bad input: exit 2, a located message, the store unchanged -----------------------------------------------

@pytest.fixture
def fresh_store(tmp_path, quandl) -> Path:
    root = tmp_path / "store"
    assert run("--data-dir", root, "data", "ingest", quandl, "--format", "quandl_wiki")[0] == 0
    return root


def test_missing_file_exits_2_naming_it(fresh_store, tmp_path):
    before = snapshot(fresh_store)
    code, out, err = run("--data-dir", fresh_store, "data", "ingest", tmp_path / "nope.csv", "--symbol", "X")
    assert code == 2 and "nope.csv" in err and err.count("\n") == 1
    assert snapshot(fresh_store) == before


def test_bad_preset_exits_2(fresh_store, yhoo):
    before = snapshot(fresh_store)
    code, out, err = run("--data-dir", fresh_store, "data", "ingest", yhoo, "--format", "bloomberg", "--symbol", "YHOO")
    assert code == 2 and "bloomberg" in err and "Traceback" not in err
    assert snapshot(fresh_store) == before


def test_unknown_symbol_exits_2(fresh_store):
    code, out, err = run("--data-dir", fresh_store, "data", "show", "NOPE")
    assert code == 2 and "NOPE" in err


def test_corrupt_csv_exits_2_naming_file_row_column_and_writes_nothing(fresh_store, yhoo, tmp_path):
    lines = yhoo.read_text().splitlines()
    fields = lines[10].split(",")  # data row 10 (the header is line 0)
    fields[4] = "12.3O"  # Close, a letter O typed for a zero
    lines[10] = ",".join(fields)
    bad = tmp_path / "yhoo-corrupt.csv"
    bad.write_text("\n".join(lines) + "\n")
    before = snapshot(fresh_store)
    code, out, err = run("--data-dir", fresh_store, "data", "ingest", bad, "--format", "yahoo", "--symbol", "YHOO")
    assert code == 2, err
    assert "yhoo-corrupt.csv" in err and "line 11" in err and "close" in err.lower(), err
    assert snapshot(fresh_store) == before


def test_invalid_prices_exit_2_and_write_nothing(fresh_store, quandl, tmp_path):
    src = pd.read_csv(quandl)
    src.loc[5, "low"] = -1.0  # AAPL data row 6: a negative low
    bad = tmp_path / "quandl-negative.csv"
    src.to_csv(bad, index=False)
    before = snapshot(fresh_store)
    code, out, err = run("--data-dir", fresh_store, "data", "ingest", bad, "--format", "quandl_wiki")
    assert code == 2 and "quandl-negative.csv" in err and "line 7" in err and "low" in err, err
    assert snapshot(fresh_store) == before


# --- data dir precedence, samples, subprocess -----------------------------------------------------------------

def test_data_dir_option_wins_over_the_environment(data_dir, tmp_path, quandl):
    other = tmp_path / "other"
    assert run("data", "ingest", quandl, "--format", "quandl_wiki")[0] == 0  # $QUANTLAB_DATA_DIR (fixture)
    assert (data_dir / "manifest.json").exists()
    assert run("data", "list", "--data-dir", other)[1].startswith("no symbols")
    assert json.loads(run("data", "list", "--json")[1])[0]["symbol"] == "AAPL"


def test_samples_lists_the_bundled_samples():
    code, out, err = run("data", "samples", "--json")
    assert code == 0, err
    from quantlab.data import samples
    assert [r["name"] for r in json.loads(out)] == list(samples.list_samples()["name"])


def test_subprocess_ingest_list_and_bad_input(tmp_path, shared_data):
    root = tmp_path / "store"
    aapl = shared_data / "zipline" / "csvdir_daily" / "AAPL.csv.gz"
    p = run_subprocess("--data-dir", root, "data", "ingest", aapl, "--format", "zipline_csvdir", "--symbol", "AAPL")
    assert p.returncode == 0, p.stderr
    p = run_subprocess("data", "list", "--json", env={"QUANTLAB_DATA_DIR": str(root)})
    assert p.returncode == 0, p.stderr
    with gzip.open(aapl, "rt") as f: n = len(pd.read_csv(f))
    assert [(r["symbol"], r["bars"]) for r in json.loads(p.stdout)] == [("AAPL", n)]
    p = run_subprocess("--data-dir", root, "data", "ingest", tmp_path / "missing.csv", "--symbol", "X")
    assert p.returncode == 2 and "missing.csv" in p.stderr and "Traceback" not in p.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "quantlab"
    if not script.exists(): pytest.skip(f"console script not installed beside {sys.executable}")
    p = subprocess.run([str(script), "data", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "ingest" in p.stdout


def test_backtest_json_writes_null_for_metrics_that_are_not_numbers():
    "SMA(20/200) inside 2008 never trades (the slow average needs 200 bars): Sharpe and Sortino are undefined, JSON says null."
    code, out, err = run("backtest", "sma_cross", "-p", "fast", "20", "-p", "slow", "200", "--start", "2008-01-01", "--end", "2008-12-31", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["sharpe"] is None and got["fills"] == 0


@pytest.mark.parametrize("args,needle", [(["--cash", "0"], "--cash must be above 0"), (["--cash", "-5"], "--cash must be above 0"),
                                         (["--commission-bps", "-1"], "--commission-bps must be at least 0"),
                                         (["--cash", "lots"], "--cash must be a number")])
def test_backtest_refuses_nonsense_money_naming_the_option(args, needle):
    code, out, err = run("backtest", "sma_cross", *args)
    assert code == 2 and needle in err and "Traceback" not in err
