"""The backtest, factor and robustness report templates run end to end through `quantlab.reports.render.run_report` on
bundled real data with small parameters: the four output files, metrics that agree with an independent
recomputation (the event engine rerun here with empyrical's metrics, Spearman ICs from scipy), a standalone HTML
that draws in headless Chromium without network, and bad parameters that stop with an error naming them."""
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import report_text

from quantlab.reports import render as reports
from quantlab.core import UsageError

BT_PARAMS = {"strategy": "sma_cross", "params": {"fast": 10, "slow": 30}, "samples": ["sp500"],
             "start": "2008-01-01", "end": "2012-12-31", "commission_bps": 2.0, "spread_bps": 4.0, "slippage_bps": 1.0}
FILES = ["metrics.json", "params.json", "report.html", "report.ipynb"]


def _run(name, params, out):
    return reports.run_report(name, params, output_dir=out, progress=False)


def _load(run):
    nb = json.loads((run.path / "report.ipynb").read_text())
    stderr = [o.get("text") for c in nb["cells"] for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert stderr == [], stderr  # no warnings or progress bars printed into the page
    return (json.loads((run.path / "metrics.json").read_text()), json.loads((run.path / "params.json").read_text()),
            (run.path / "report.html").read_text(encoding="utf-8"))


def _panels(sample, start, end):
    from quantlab.data import samples
    bars = samples.load_sample(sample).bars
    data = {f: bars.pivot(index="ts", columns="symbol", values=f).sort_index() for f in ("open", "high", "low", "close", "volume")}
    s, e = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    return {f: p.loc[s:e] for f, p in data.items()}


@pytest.fixture(scope="module")
def bt(tmp_path_factory):
    run = _run("backtest", BT_PARAMS, tmp_path_factory.mktemp("reports"))
    return run, *_load(run)


def _standalone(html):
    srcs = re.findall(r"<script\b[^>]*\bsrc\s*=\s*['\"]?([^'\" >]+)", html, flags=re.I)
    assert srcs == [], srcs
    assert reports.external_scripts(html) == []
    assert re.search(r"plotly\.js v\d+\.\d+\.\d+ (cartesian|full)", html) and 'new DecompressionStream("gzip")' in html  # plotly.js inlined, gzipped
    assert "Plotly.newPlot" not in html and 'type="text/x-quantlab-plotly" data-gz=' in html  # the figures wait for it


def test_backtest_writes_four_files_and_params(bt):
    run, metrics, params, html = bt
    assert sorted(p.name for p in run.path.iterdir()) == FILES
    assert {k: params[k] for k in BT_PARAMS} == BT_PARAMS
    assert metrics["run"]["report"] == "backtest" and metrics["symbols"] == ["SP500"] and metrics["intraday"] is False
    _standalone(html)
    assert re.search(r"plotly\.js v[\d.]+ cartesian", html) and len(html) < 1_500_000  # standalone and light (it was 7 MB)
    assert run.notebook.stat().st_size < 2_000_000 and "plotly.js v" not in run.notebook.read_text()  # the notebook too (it was 9.5 MB)
    assert "Daily bars: no time-of-day profile" in html
    for heading in ("Equity and drawdown", "Underwater", "Monthly returns", "Rolling Sharpe", "Exposure", "Trades",
                    "Costs by kind", "Worst drawdowns", "Metrics", "Run card"):
        assert f">{heading}" in html, heading
    assert "parameter validation" not in html  # code hidden


def test_backtest_metrics_agree_with_a_rerun_and_empyrical(bt):
    "Rerun the same backtest here and measure it with empyrical, not quantlab.research.metrics."
    import empyrical
    from quantlab import strategies
    from quantlab.backtest.driver import run_backtest
    from quantlab.trading.brokers.sim import BasisPoints, FixedSlippage, FixedSpread, SimBroker
    from quantlab.core import Instrument
    _, m, _, _ = bt
    data = _panels("sp500", BT_PARAMS["start"], BT_PARAMS["end"])
    broker = SimBroker(cash=1e6, commission=BasisPoints(2.0), spread=FixedSpread(4.0), slippage=FixedSlippage(1.0))
    res = run_backtest(strategies.get_strategy("sma_cross", fast=10, slow=30), data, cash=1e6, broker=broker,
                       instruments=[Instrument("SP500", lot_size=1.0)])
    eq = res.equity
    r = eq.pct_change().fillna(0.0)
    assert m["bars"] == len(eq) and m["start"] == eq.index[0].isoformat()
    assert m["final_equity"] == pytest.approx(eq.iloc[-1], rel=1e-12)
    assert m["total_return"] == pytest.approx(eq.iloc[-1] / 1e6 - 1, rel=1e-9)
    assert m["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r.to_numpy(), annualization=252), rel=1e-9)
    assert m["max_drawdown"] == pytest.approx(empyrical.max_drawdown(r.to_numpy()), rel=1e-9)
    assert m["annual_volatility"] == pytest.approx(empyrical.annual_volatility(r.to_numpy(), annualization=252), rel=1e-9)
    # costs by kind are the sums over the fills; with 2 bp commission, 4 bp spread (2 bp per fill) they are equal
    assert m["costs"]["commission"] == pytest.approx(res.fills["commission"].sum(), rel=1e-9)
    assert m["costs"]["spread"] == pytest.approx(res.fills["spread"].sum(), rel=1e-9)
    assert m["costs"]["slippage"] == pytest.approx(res.fills["slippage"].sum(), rel=1e-9)
    assert m["costs"]["commission"] == pytest.approx(m["costs"]["spread"], rel=1e-3) and m["total_costs"] > 0
    assert m["round_trips"] == len(res.trades) > 5 and m["fills"] == len(res.fills)
    # the benchmark (one symbol: buy and hold of the index) from the raw closes
    c = data["close"]["SP500"]
    assert m["benchmark_total_return"] == pytest.approx(c.iloc[-1] / c.iloc[0] - 1, rel=1e-9)
    beta = np.polyfit(c.pct_change().fillna(0.0).to_numpy(), r.to_numpy(), 1)[0]
    assert m["beta"] == pytest.approx(beta, rel=1e-6)


def test_backtest_intraday_sample_shows_time_of_day(tmp_path):
    run = _run("backtest", {"samples": ["eurusd"], "start": "2017-06-01", "end": "2017-08-31", "params": {"fast": 12, "slow": 48},
                            "lot_size": 1000.0, "benchmark": "EURUSD", "time_zone": "UTC", "rolling_window": 120}, tmp_path)
    m, _, html = _load(run)
    from quantlab.data import samples
    ts = samples.load_sample("eurusd").bars["ts"]
    ts = ts[(ts >= pd.Timestamp("2017-06-01", tz="UTC")) & (ts <= pd.Timestamp("2017-08-31", tz="UTC"))]
    years = (ts.iloc[-1] - ts.iloc[0]).total_seconds() / (365.25 * 86400)
    assert m["intraday"] is True and m["bars"] == len(ts)
    assert m["periods_per_year"] == pytest.approx(len(ts) / years, rel=1e-9)  # ~6,000 hourly bars a year, not 252
    assert 5000 < m["periods_per_year"] < 7000
    assert "Mean return by hour (UTC) and weekday" in report_text(html) and "no time-of-day profile" not in html
    _standalone(html)


def test_factor_report_ic_matches_scipy_spearman(tmp_path, monkeypatch):
    "A wide CSV of real closes; the recorded mean IC equals per-date scipy Spearman correlations."
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as on many headless servers: the figures must still be in the page
    from scipy import stats
    from quantlab.data import samples
    close = pd.concat({s.upper(): samples.load_sample(s).bars.set_index("ts")["close"] for s in ("sp500", "nasdaq", "goog", "msft")},
                      axis=1, sort=True).loc["2006-01-01":"2010-12-31"]
    csv = tmp_path / "prices.csv"
    close.rename_axis("date").to_csv(csv)
    run = _run("factor", {"prices": str(csv), "factor_params": {"lookback": 126, "skip": 5}, "horizon": 5,
                          "horizons": [1, 5], "quantiles": 2, "min_assets": 4}, tmp_path / "reports")
    m, params, html = _load(run)
    assert sorted(p.name for p in run.path.iterdir()) == FILES and params["prices"] == str(csv)
    _standalone(html)
    assert re.search(r'<img [^>]*src="data:image/png;base64,', html)  # matplotlib figures inline
    px = pd.read_csv(csv, index_col=0)
    mom, fwd = px.shift(5) / px.shift(126) - 1, px.shift(-5) / px - 1
    ics = [stats.spearmanr(a, b).statistic for a, b in zip(mom.to_numpy(), fwd.to_numpy()) if np.isfinite(a).all() and np.isfinite(b).all()]
    assert m["ic"]["n_dates"] == len(ics) > 1000
    assert m["ic"]["mean_ic"] == pytest.approx(np.mean(ics), abs=1e-12)
    assert m["ic_decay"]["5"] == pytest.approx(np.mean(ics), abs=1e-12)
    assert m["lookahead_ok"] is True and m["symbols"] == list(px.columns)
    assert m["ic_dates"] == m["quantile_dates"] == m["ic"]["n_dates"]  # one sample for the IC and the quantile returns
    assert m["names_per_date"] == 4 and "Warning: a small cross-section." in html  # 4 names: the IC of a date takes few values
    # the IC's distribution, its monthly calendar and the cumulative quantile returns (#17 item 17), checked by hand
    text = report_text(html)
    for section in ("How the IC is distributed", "IC against the normal", "Monthly IC", "Cumulative quantile returns",
                    "Cumulative return by momentum quantile"):
        assert section in text, section
    ok = np.isfinite(mom.to_numpy()).all(axis=1) & np.isfinite(fwd.to_numpy()).all(axis=1)
    ic = pd.Series(ics, index=pd.to_datetime(px.index[ok]))
    assert m["ic_skew"] == pytest.approx(stats.skew(ics, bias=False), abs=1e-9)
    assert m["ic_excess_kurtosis"] == pytest.approx(stats.kurtosis(ics, bias=False), abs=1e-9)
    months = ic.groupby([ic.index.year, ic.index.month]).mean()
    assert m["monthly_ic_months"] == len(months) and m["monthly_ic_positive"] == pytest.approx((months > 0).mean(), abs=1e-12)
    r1 = px.shift(-1) / px - 1  # each date, the top two names by momentum, held one bar
    top = [r1.iloc[i][mom.iloc[i].nlargest(2).index].mean() for i in range(len(px)) if ok[i]]
    growth = np.prod(1 + np.nan_to_num(np.asarray(top[:-1])))  # from the first IC date's close to the last one's
    assert m["cumulative_quantile_growth"]["2"] == pytest.approx(growth, rel=1e-9)


def test_robustness_report_best_set_agrees_with_the_event_engine(tmp_path):
    "The report sweeps in the vector engine; rerunning every set in the event engine picks the same best Sharpe."
    import empyrical
    from quantlab import strategies
    p = {"grid": {"fast": [10, 20], "slow": [50, 100]}, "start": "2005-01-01", "end": "2011-12-31", "commission_bps": 1.0,
         "spread_bps": 0.0, "slippage_bps": 0.0, "train": 504, "test": 252, "bootstrap_reps": 20, "pbo_splits": 4, "cost_multipliers": [1.0, 2.0]}
    run = _run("robustness", p, tmp_path)
    m, _, html = _load(run)
    _standalone(html)
    data = _panels("sp500", p["start"], p["end"])
    sharpe = {}
    for f in (10, 20):
        for s in (50, 100):
            eq = strategies.event_backtest("sma_cross", data, {"fast": f, "slow": s}, commission_bps=1.0).equity
            r = eq.pct_change().iloc[1:].to_numpy()
            sharpe[(f, s)] = empyrical.sharpe_ratio(r, annualization=252)
    best = max(sharpe, key=sharpe.get)
    assert m["trials"] == 4 and m["best_params"] == {"fast": best[0], "slow": best[1]}
    assert m["best_sharpe"] == pytest.approx(sharpe[best], rel=1e-6)
    assert m["walk_forward"]["folds"] == len(m["walk_forward_params"]) >= 4
    assert 0 <= m["pbo"] <= 1 and 0 <= m["deflated_sharpe"] <= 1
    assert m["sharpe_ci"][0] < m["best_sharpe"] < m["sharpe_ci"][1]
    assert m["stress"]["delay=0 cost=2.0"] < m["stress"]["delay=0 cost=1.0"]  # more cost, lower Sharpe


@pytest.mark.parametrize("name,params,named", [
    ("backtest", {"strategy": "no_such_strategy"}, "parameter strategy"),
    ("factor", {"horizon": 0}, "parameter horizon"),
    ("robustness", {"pbo_splits": 3}, "parameter pbo_splits"),
    ("portfolio", {"method": "max_drawdown"}, "parameter method"),
    ("portfolio", {"params": {"max_weight": 0.1, "lookback": 5}}, "parameter params"),
])
def test_bad_parameter_is_a_usage_error_naming_it(tmp_path, name, params, named):
    with pytest.raises(UsageError, match=named):
        _run(name, params, tmp_path)
    assert reports.list_runs(name, tmp_path) == []  # no finished run directory


def test_backtest_html_draws_in_headless_chromium_without_network(bt, tmp_path):
    "Screenshot the report with networking off; the picture is not blank and has the charts' coloured pixels."
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        if os.environ.get("CI") == "true": pytest.fail("chromium is not installed on CI: the report HTML cannot be checked")
        pytest.skip("chromium is not installed (needed to screenshot the report HTML)")
    from PIL import Image
    run, _, _, html = bt
    png = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
                        "--window-size=1400,4000", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                        "--virtual-time-budget=15000", f"--screenshot={png}", run.html.as_uri()],
                       capture_output=True, timeout=180, check=False)
    assert png.is_file(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert img.shape[:2] == (4000, 1400)
    assert img.std() > 20  # not a blank page
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    saturated = (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)) > 80
    # plotly drew: the red drawdown fill, blue equity line, RdYlGn heatmap cells are saturated colours that the
    # text and tables of the page (black, grey, white) do not have
    assert saturated.sum() > 20_000, saturated.sum()
    # and the plotly chart background (#E5ECF6) fills large areas
    plot_bg = (abs(r - 0xE5) < 3) & (abs(g - 0xEC) < 3) & (abs(b - 0xF6) < 3)
    assert plot_bg.sum() > 100_000, plot_bg.sum()


def test_backtest_tear_sheet_has_what_pyfolio_and_quantstats_show(bt):
    "Years, the best and worst periods, the return distribution, rolling beta, shaded drawdowns, stress periods, the strategy in the title, a whole run card (#17 item 17)."
    run, metrics, params, html = bt
    page = report_text(html)
    assert "<title>sma_cross: backtest " in html
    for figure in ("returns by calendar year", "Distribution of bar returns", "Rolling beta to the", "worst drawdowns shaded"):
        assert figure in page, figure
    for row in ("best bar", "worst bar", "best month", "worst month", "best year", "worst year"):
        assert f">{row}</th>" in html, row
    assert "Stress periods" in html and "year 2008" in html and "COVID crash 2020" not in html  # only the episodes inside 2008-2012
    assert "bars (about" in html and "days)" in html  # the longest drawdown in bars and calendar days
    assert "slippage=FixedSlippage(bps=1.0" in html and "Converting to PeriodArray" not in html  # the run card whole, no warnings


PF_PARAMS = {"method": "min_variance", "params": {"lookback": 126, "max_weight": 0.6}, "compare": ["equal_weight"],
             "samples": ["sp500", "nasdaq", "goog", "msft"], "start": "2005-01-01", "end": "2012-12-31"}


def test_portfolio_report_against_an_independent_recomputation(tmp_path):
    "Ex-ante volatility from scikit-learn's Ledoit-Wolf on each window, realised volatility and turnover from the fills, equal weight rerun."
    from sklearn.covariance import LedoitWolf
    from quantlab.strategies import Optimized, event_backtest
    m, p, html = _load(_run("portfolio", PF_PARAMS, tmp_path))
    _standalone(html)
    assert p["method"] == "min_variance" and m["method"] == "min_variance"
    close = pd.concat([_panels(s, "2005-01-01", "2013-01-01")["close"] for s in PF_PARAMS["samples"]], axis=1, sort=True)  # end: the whole of 2012-12-31
    strat = Optimized(method="min_variance", lookback=126, max_weight=0.6)
    starts = np.flatnonzero(strat.rebalances(close.index))
    assert m["rebalances"] == len(starts) and m["bars"] == len(close)
    vols, weights = [], None
    for i in starts:  # the window, estimated here without quantlab's covariance
        win = close.iloc[i - 126:i + 1].ffill(limit=5).pct_change(fill_method=None).iloc[1:]
        win = win.loc[:, win.notna().all()]
        S = LedoitWolf().fit(win.to_numpy()).covariance_ * 252
        weights = strat.decide(close.iloc[:i + 1]).weights if weights is None else strat.decide(close.iloc[:i + 1], weights).weights
        w = weights[win.columns].to_numpy()
        vols.append(np.sqrt(w @ S @ w))
    assert abs(m["ex_ante_volatility"] - np.mean(vols)) < 1e-12
    assert m["last_weights"] == pytest.approx(weights.to_dict(), abs=1e-12)
    assert max(m["last_weights"].values()) <= 0.6 + 1e-9
    assert 0.5 < m["bias_statistic"] < 2.0 and m["annual_turnover"] > 0 and m["total_costs"] > 0
    ew = event_backtest("portfolio", {"close": close}, {"method": "equal_weight", "lookback": 126, "max_weight": 0.6},
                        commission_bps=1.0, spread_bps=2.0, slippage_bps=1.0)
    assert m["compare"]["equal_weight"]["total_return"] == pytest.approx(float(ew.equity.iloc[-1] / ew.equity.iloc[0] - 1), rel=1e-9)
