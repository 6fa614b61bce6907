"""Walk-forward analysis on real data: folds, stitching, efficiency, and identical results across executors."""
import numpy as np
import pandas as pd
import pytest

from quantlab.research import metrics
from quantlab.evaluate.walkforward import walk_forward, walk_forward_folds, walk_forward_runs, param_grid


@pytest.fixture(scope="module")
def spx():
    from arch.data import sp500
    close = sp500.load()["Adj Close"]
    close.index = pd.DatetimeIndex(close.index).tz_localize("UTC")
    return close


def trend_run(close):
    daily = close.pct_change()
    def run(params, start, end):
        c = close.loc[:end]
        pos = (c > c.rolling(params["window"]).mean()).astype(float).shift(1)
        return (pos * daily.loc[:end]).loc[start:end]
    return run


class TrendRun:
    "Picklable run for process and Dask executors."
    def __init__(self, close): self.close = close
    def __call__(self, params, start, end): return trend_run(self.close)(params, start, end)


@pytest.mark.parametrize("anchored", [False, True])
def test_folds_tile_the_history_without_overlap(anchored):
    folds = walk_forward_folds(5031, train=756, test=252, anchored=anchored, embargo=5)
    tests = np.concatenate([np.arange(f.test_start, f.test_end) for f in folds])
    assert len(tests) == len(np.unique(tests))                 # no period traded twice
    assert all(f.train_end + 5 == f.test_start for f in folds)  # embargo respected
    assert folds[-1].test_end == 5031
    if anchored: assert {f.train_start for f in folds} == {0}
    else: assert all(f.train_end - f.train_start == 756 for f in folds)


def test_fast_path_chooses_the_in_sample_best_and_stitches_its_oos_returns(spx):
    run = trend_run(spx)
    windows = [10, 20, 50, 100, 150, 200]
    sweep = pd.DataFrame({w: run({"window": w}, spx.index[250], spx.index[-1]) for w in windows})
    wf = walk_forward(sweep, train=504, test=252)
    for k, row in wf.folds.iterrows():
        ins = sweep.loc[row["train_start"]:row["train_end"]]
        best = metrics.sharpe_ratio(ins).idxmax()                   # independent recomputation
        assert row["params"] == best
        oos = sweep.loc[row["test_start"]:row["test_end"], best]
        np.testing.assert_allclose(wf.returns.loc[row["test_start"]:row["test_end"]], oos)
        assert row["wfe"] == pytest.approx(metrics.annual_return(oos) / metrics.annual_return(ins[best])) or row["is_annual_return"] <= 0
    assert wf.returns.index.is_unique and wf.returns.index.is_monotonic_increasing
    assert np.isfinite(wf.efficiency)


def test_general_path_matches_fast_path_for_a_stateless_rule(spx):
    run = trend_run(spx)
    grid = {"window": [20, 50, 200]}
    wf = walk_forward_runs(run, grid, spx.index[250:], train=756, test=252, anchored=True)
    sweep = pd.DataFrame({w: run({"window": w}, spx.index[250], spx.index[-1]) for w in grid["window"]})
    fast = walk_forward(sweep, train=756, test=252, anchored=True)
    assert [p["window"] for p in wf.folds["params"]] == list(fast.folds["params"])
    np.testing.assert_allclose(wf.returns.to_numpy(), fast.returns.to_numpy(), rtol=0, atol=1e-14)


def test_executors_give_identical_walk_forward_results(spx):
    from distributed import Client, LocalCluster
    close = spx.loc["2008":]
    grid = param_grid({"window": [20, 50, 100]})
    kw = dict(train=252, test=126)
    serial = walk_forward_runs(TrendRun(close), grid, close.index[120:], **kw)
    local = walk_forward_runs(TrendRun(close), grid, close.index[120:], executor="local:2", **kw)
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0", processes=True) as cluster, Client(cluster) as client:
        dask = walk_forward_runs(TrendRun(close), grid, close.index[120:], executor=client, **kw)
    for other in (local, dask):
        pd.testing.assert_series_equal(serial.returns, other.returns)
        pd.testing.assert_frame_equal(serial.folds, other.folds)


def test_objective_may_be_any_callable_and_bad_names_fail(spx):
    run = trend_run(spx)
    sweep = pd.DataFrame({w: run({"window": w}, spx.index[250], spx.index[-1]) for w in (20, 200)})
    wf = walk_forward(sweep, train=504, test=252, objective=lambda r: -metrics.max_drawdown(r).abs())
    assert len(wf.folds) > 10
    from quantlab.core import UsageError
    with pytest.raises(UsageError, match="unknown objective"):
        walk_forward(sweep, train=504, test=252, objective="no_such_metric")
