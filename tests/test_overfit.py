"""quantlab.evaluate.overfit: bootstrap intervals (against arch), trade-order reshuffles, the trial ledger, the deflated
Sharpe ratio (against the paper's worked example and a hand computation), PBO by CSCV (against a plain-loop
reference and synthetic cases with known answers) and Hansen's SPA test."""
import itertools
import json
from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from quantlab.research import metrics
from quantlab.core import UsageError
from quantlab.evaluate.executor import LocalExecutor, values
from quantlab.evaluate.overfit import (TrialLedger, bootstrap_ci, bootstrap_returns, deflated_sharpe, deflated_sharpe_ratio,
                              expected_max_sharpe, max_drawdown_ci, probability_of_backtest_overfitting, sharpe_ci,
                              spa_test, trade_order_drawdowns)


@pytest.fixture(scope="module")
def spx():
    from arch.data import sp500
    return sp500.load()["Adj Close"].pct_change().dropna()


def _noise(seed, t=1000, n=100, vol=0.01):
    return pd.DataFrame(np.random.default_rng(seed).normal(0, vol, (t, n)))


def _with_edge(seed, sharpe=2.5, t=1000, n=100, vol=0.01):
    df = _noise(seed, t, n, vol)
    df[n] = np.random.default_rng(seed + 1000).normal(sharpe / np.sqrt(252) * vol, vol, t)
    return df


# ---------------------------------------------------------------- deflated Sharpe ratio

def test_deflated_sharpe_reproduces_the_papers_numerical_example():
    # Bailey & Lopez de Prado (2014), section 5: N=100, V[SR annual]=0.5, SR annual 2.5, T=1250, skew -3, kurt 10
    assert expected_max_sharpe(100, 0.5 / 250) == pytest.approx(0.1132, abs=5e-5)
    assert deflated_sharpe(2.5 / np.sqrt(250), 1250, 100, 0.5 / 250, skew=-3, kurtosis=10) == pytest.approx(0.9004, abs=5e-4)


def test_expected_max_sharpe_approximates_the_simulated_maximum_of_normals():
    rng = np.random.default_rng(0)
    for n in (10, 100, 1000):
        sim = rng.standard_normal((4000, n)).max(axis=1).mean()
        assert expected_max_sharpe(n, 1.0) == pytest.approx(sim, rel=0.03)


def test_deflated_sharpe_ratio_of_returns_matches_a_hand_computation(spx):
    r = spx.iloc[-1250:]
    n_trials, v = 50, 0.0004
    sr = r.mean() / r.std(ddof=1)
    g = 0.5772156649015329
    sr0 = np.sqrt(v) * ((1 - g) * stats.norm.ppf(1 - 1 / n_trials) + g * stats.norm.ppf(1 - 1 / (n_trials * np.e)))
    g3, g4 = stats.skew(r), stats.kurtosis(r, fisher=False)
    z = (sr - sr0) * np.sqrt(len(r) - 1) / np.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr ** 2)
    assert deflated_sharpe_ratio(r, n_trials=n_trials, sr_variance=v) == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    # one trial: nothing to deflate, DSR is the PSR against zero
    assert deflated_sharpe_ratio(r, n_trials=1, sr_variance=v) == pytest.approx(metrics.probabilistic_sharpe_ratio(r), rel=1e-12)


def test_best_of_many_noise_strategies_is_not_significant_after_deflation(tmp_path):
    ledger = TrialLedger(tmp_path)
    psr, dsr = [], []
    for seed in range(5):
        noise = _noise(seed, n=200)
        ledger.record_many(f"noise{seed}", [{"i": i} for i in noise.columns], noise)
        best = noise[metrics.sharpe_ratio(noise).idxmax()]
        psr.append(metrics.probabilistic_sharpe_ratio(best))
        dsr.append(deflated_sharpe_ratio(best, f"noise{seed}", ledger))
    assert min(psr) > 0.95  # alone, every winner looks like skill
    assert max(dsr) < 0.95 and np.mean(dsr) < 0.75  # the search explains it: DSR is about a coin flip


def test_planted_edge_survives_deflation(tmp_path):
    ledger = TrialLedger(tmp_path)
    study = _with_edge(12, n=200)
    ledger.record_many("edge", [{"i": i} for i in study.columns], study)
    best = metrics.sharpe_ratio(study).idxmax()
    assert best == 200
    assert deflated_sharpe_ratio(study[best], "edge", ledger) > 0.95


def test_deflated_sharpe_ratio_needs_a_study_or_both_numbers(spx):
    with pytest.raises(UsageError, match="n_trials and sr_variance"):
        deflated_sharpe_ratio(spx, n_trials=10)


# ---------------------------------------------------------------- trial ledger

def test_ledger_defaults_to_the_data_dir_and_survives_a_new_instance(data_dir, spx):
    trial = TrialLedger().record("study-1", {"window": 20, "asset": "SPX"}, spx)
    assert list((data_dir / "trials" / "study-1").glob("*.parquet"))
    again = TrialLedger().trials("study-1")
    row = again.iloc[0]
    assert row["trial_id"] == trial and json.loads(row["params"]) == {"asset": "SPX", "window": 20}
    assert row["sharpe"] == pytest.approx(metrics.sharpe_ratio(spx), rel=1e-12)
    assert row["sr"] == pytest.approx(metrics.sharpe_ratio(spx) / np.sqrt(252), rel=1e-12)
    assert row["kurtosis"] == pytest.approx(stats.kurtosis(spx, fisher=False), rel=1e-10)
    assert row["n_obs"] == len(spx) and str(row["recorded_at"].tz) == "UTC"  # normalised from DuckDB's Etc/UTC
    assert not list((data_dir / "trials").rglob("*.tmp"))


def test_ledger_counts_a_repeated_configuration_once_but_a_changed_one_twice(tmp_path, spx):
    ledger = TrialLedger(tmp_path)
    ledger.record("s", {"w": 1}, spx)
    ledger.record("s", {"w": 1}, spx)  # exact repeat
    ledger.record("s", {"w": 1}, spx * 2)  # same params, different returns: a different trial
    assert ledger.n_trials("s") == 2
    assert len(ledger.trials("s", distinct=False)) == 3


def test_ledger_sharpe_variance_is_the_variance_of_per_period_trial_sharpes(tmp_path):
    ledger = TrialLedger(tmp_path)
    noise = _noise(3, n=40)
    ledger.record_many("v", [{"i": i} for i in noise.columns], noise)
    want = (noise.mean() / noise.std()).var(ddof=1)
    assert ledger.sharpe_variance("v") == pytest.approx(want, rel=1e-10)


def _record_one(args):
    root, i = args
    r = pd.Series(np.random.default_rng(i).normal(0, 0.01, 300))
    return TrialLedger(root).record("parallel", {"i": i}, r)


def test_parallel_workers_record_into_one_study_without_losing_trials(tmp_path):
    ids = values(LocalExecutor(2, chunksize=1).map(_record_one, [(tmp_path, i) for i in range(12)], progress=False))
    got = TrialLedger(tmp_path).trials("parallel")
    assert sorted(got["trial_id"]) == sorted(ids) and len(got) == 12


def test_a_failed_write_leaves_no_file(tmp_path, spx, monkeypatch):
    ledger = TrialLedger(tmp_path)
    def broken(self, path, **kw):
        with open(path, "wb") as f: f.write(b"PAR1 half")
        raise OSError("disk full")
    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        ledger.record("s", {"w": 1}, spx)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    monkeypatch.undo()
    assert ledger.n_trials("s") == 0


def test_ledger_rejects_unsafe_study_ids_and_mismatched_params(tmp_path, spx):
    ledger = TrialLedger(tmp_path)
    for bad in ("../up", "a/b", "", ".hidden"):
        with pytest.raises(UsageError, match="study id"):
            ledger.record(bad, {}, spx)
    with pytest.raises(UsageError, match="2 parameter sets for 1 return columns"):
        ledger.record_many("s", [{}, {}], spx.to_frame())


# ---------------------------------------------------------------- PBO (CSCV)

def _pbo_by_loops(x, s):
    "Reference CSCV written the slow, obvious way from the paper's steps."
    t, n = x.shape
    m = t // s
    x = x[t - m * s:]
    blocks = [x[i * m:(i + 1) * m] for i in range(s)]
    logits = []
    for combo in itertools.combinations(range(s), s // 2):
        train = np.vstack([blocks[i] for i in combo])
        test = np.vstack([blocks[i] for i in range(s) if i not in combo])
        sr_in = train.mean(axis=0) / train.std(axis=0, ddof=1)
        sr_out = test.mean(axis=0) / test.std(axis=0, ddof=1)
        best = int(np.argmax(sr_in))
        rank = stats.rankdata(sr_out)[best]  # average rank, 1 = worst
        w = rank / (n + 1)
        logits.append(np.log(w / (1 - w)))
    logits = np.array(logits)
    return float(np.mean(logits <= 0)), logits


def test_pbo_matches_a_plain_loop_implementation_on_real_returns(spx):
    rng = np.random.default_rng(5)
    # 9 "strategies": the index scaled and lagged differently, so they are correlated like a real sweep
    x = np.column_stack([spx.to_numpy()[lag:lag + 2000] * (1 + 0.1 * k) + rng.normal(0, 0.002, 2000)
                         for k, lag in enumerate(range(0, 90, 10))])
    got = probability_of_backtest_overfitting(x, n_splits=8, chunk=13)  # odd chunk: exercises the chunking
    want_pbo, want_logits = _pbo_by_loops(x, 8)
    assert len(got.logits) == comb(8, 4)
    np.testing.assert_allclose(got.logits, want_logits, rtol=1e-9)
    assert got.pbo == want_pbo


def test_pbo_of_pure_noise_is_a_coin_flip():
    pbos = [probability_of_backtest_overfitting(_noise(seed, n=50), n_splits=10).pbo for seed in range(6)]
    assert 0.35 < np.mean(pbos) < 0.65


def test_pbo_is_near_one_when_in_sample_winners_are_out_of_sample_losers():
    # every trial has exactly zero mean over the whole sample: a good IS half forces a bad OOS half
    noise = _noise(8, n=50)
    demeaned = noise - noise.mean()
    res = probability_of_backtest_overfitting(demeaned, n_splits=10)
    assert res.pbo > 0.95 and res.degradation_slope < 0 and res.prob_oos_loss > 0.95


def test_pbo_of_a_planted_edge_is_low():
    res = probability_of_backtest_overfitting(_with_edge(9, sharpe=3.0, n=100), n_splits=10)
    assert res.pbo < 0.05 and res.prob_oos_loss < 0.05


def test_pbo_rejects_bad_input():
    with pytest.raises(UsageError, match="even"):
        probability_of_backtest_overfitting(_noise(0, n=5), n_splits=7)
    with pytest.raises(UsageError, match="NaN"):
        probability_of_backtest_overfitting(_noise(0, n=5).where(lambda d: d > -0.03), n_splits=4)


# ---------------------------------------------------------------- SPA

def test_spa_does_not_reject_for_noise_but_does_for_a_planted_edge():
    # under the null the test rejects about 5% of the time at the 5% level, so look at several studies
    p_noise = np.array([spa_test(_noise(seed, n=40), reps=300)["consistent"] for seed in range(8)])
    assert (p_noise < 0.05).sum() <= 2 and p_noise.mean() > 0.3
    for seed in range(3):
        assert spa_test(_with_edge(seed, sharpe=3.0, n=40), reps=300)["consistent"] < 0.05


def test_spa_against_a_benchmark_uses_excess_performance(spx):
    # strategies that are the benchmark minus a daily fee cannot beat it
    fees = pd.DataFrame({f"fee{k}": spx - k * 1e-4 for k in range(1, 6)})
    assert spa_test(fees, benchmark=spx, reps=300)["consistent"] > 0.5
    # the same strategies against cash: the S&P 500 beat cash, but not significantly over 20 years
    assert spa_test(fees, reps=300).between(0, 1).all()


# ---------------------------------------------------------------- bootstrap and reshuffles

def test_sharpe_interval_equals_arch_conf_int_with_the_same_seed(spx):
    from arch.bootstrap import StationaryBootstrap
    r = spx.iloc[-2000:]
    ours = sharpe_ci(r, reps=200, seed=3, block_size=10)
    bs = StationaryBootstrap(10, r.to_numpy(), seed=3)
    lo, hi = bs.conf_int(lambda x: np.array([x.mean() / x.std(ddof=1) * np.sqrt(252)]), reps=200, method="percentile")
    assert ours["lower"] == pytest.approx(lo[0], rel=1e-10) and ours["upper"] == pytest.approx(hi[0], rel=1e-10)


def test_max_drawdown_interval_contains_the_estimate_and_widens_with_level(spx):
    narrow = max_drawdown_ci(spx, reps=300, level=0.5, seed=1)
    wide = max_drawdown_ci(spx, reps=300, level=0.95, seed=1)
    assert narrow["estimate"] == pytest.approx(metrics.max_drawdown(spx))
    assert wide["lower"] <= narrow["lower"] <= narrow["upper"] <= wide["upper"] < 0


def test_stationary_bootstrap_keeps_blocks_and_circular_keeps_fixed_blocks(spx):
    r = pd.Series(np.arange(len(spx), dtype=float), index=spx.index)  # values = positions
    st = bootstrap_returns(r, reps=20, kind="stationary", block_size=20, seed=0).to_numpy()
    steps = np.diff(st, axis=0)
    assert np.mean((steps == 1) | (steps == -(len(r) - 1))) == pytest.approx(1 - 1 / 20, abs=0.01)
    cb = bootstrap_returns(r, reps=5, kind="circular", block_size=25, seed=0).to_numpy()
    starts = cb[::25]
    for k in range(25):
        assert np.array_equal(cb[k::25][: len(starts) - 1], (starts[: len(starts) - 1] + k) % len(r))
    with pytest.raises(UsageError, match="kind"):
        bootstrap_returns(r, 2, kind="moving")


def test_trade_order_shuffles_match_a_loop_and_keep_final_wealth(shared_data):
    prices = pd.read_csv(shared_data / "pypfopt" / "stock_prices.csv", index_col="date")["AAPL"].dropna()
    monthly = prices.iloc[::21].pct_change().dropna().to_numpy()  # 21-day "trades" on real AAPL prices
    got = trade_order_drawdowns(monthly, reps=50, seed=4)
    orders = np.random.default_rng(4).permuted(np.tile(monthly, (50, 1)), axis=1)
    for k in range(50):
        wealth = np.cumprod(1 + orders[k])
        peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
        assert got[k] == pytest.approx(min(0.0, (wealth / peak - 1).min()), rel=1e-12)
        assert wealth[-1] == pytest.approx(np.prod(1 + monthly), rel=1e-10)
    worst = np.prod(1 + monthly[monthly < 0]) - 1
    assert (got >= worst - 1e-12).all()


def test_trade_order_drawdowns_read_a_trades_table():
    trades = pd.DataFrame({"pnl": [5.0, -3.0], "return": [0.05, -0.03]})
    assert trade_order_drawdowns(trades, reps=10).min() == pytest.approx(-0.03)
    with pytest.raises(UsageError, match="'return'"):
        trade_order_drawdowns(trades[["pnl"]])
