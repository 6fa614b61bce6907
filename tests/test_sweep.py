"""Sweeps and walk-forward studies of registered strategies: executors agree, trials are recorded, stats follow."""
import numpy as np
import pandas as pd
import pytest

from quantlab.research import metrics
from quantlab.core import UsageError
from quantlab.evaluate.executor import TaskFailed
from quantlab.evaluate.overfit import TrialLedger, deflated_sharpe_ratio
from quantlab.strategies import sweep as strategy_sweep
from quantlab.evaluate.sweep import load_panels, parse_grid, run_sweep, run_walkforward
from quantlab.backtest.vector import param_grid


@pytest.fixture(scope="module")
def spx():
    return load_panels(start="2006-01-01")


GRID = {"fast": [5, 10, 20], "slow": [50, 100, 200]}


def test_sweep_rows_equal_single_runs_of_the_vector_engine(spx):
    res = run_sweep("sma_cross", GRID, spx, commission_bps=2.0, spread_bps=0.0, slippage_bps=0.0, chunks=3)
    assert len(res.table) == 9
    for _, row in res.table.iterrows():
        one = strategy_sweep("sma_cross", spx, param_grid(fast=[row["fast"]], slow=[row["slow"]]), commission_bps=2.0)
        assert row["final_value"] == pytest.approx(one.final_value.iloc[0], rel=1e-12)
        r = one.returns().iloc[1:, 0]
        assert row["sharpe"] == pytest.approx(metrics.sharpe_ratio(r), rel=1e-10)


def test_executors_agree(spx):
    from distributed import Client, LocalCluster
    serial = run_sweep("sma_cross", GRID, spx)
    local = run_sweep("sma_cross", GRID, spx, executor="local:2")
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        dask = run_sweep("sma_cross", GRID, spx, executor=client)
    for other in (local, dask):
        pd.testing.assert_frame_equal(serial.table, other.table)
        pd.testing.assert_frame_equal(serial.returns, other.returns)


def test_trials_are_recorded_and_deflate_the_best(spx, tmp_path):
    ledger = TrialLedger(tmp_path / "trials")
    res = run_sweep("sma_cross", GRID, spx, study="spx", ledger=ledger)
    trials = ledger.trials("spx")
    assert len(trials) == 9 == res.n_trials
    best = res.returns.iloc[:, int(np.nanargmax(res.table["sharpe"]))]
    assert res.deflated_sharpe == pytest.approx(deflated_sharpe_ratio(best, n_trials=9, sr_variance=float(trials["sr"].var(ddof=1))))
    # the same sweep again adds no trial; a wider one adds only the new sets
    run_sweep("sma_cross", GRID, spx, study="spx", ledger=ledger)
    wider = run_sweep("sma_cross", {"fast": [5, 10, 20, 40], "slow": [50, 100, 200]}, spx, study="spx", ledger=ledger)
    assert wider.n_trials == 12
    assert 0.0 <= res.pbo <= 1.0


def test_a_failing_chunk_is_reported_with_its_parameters(spx, monkeypatch):
    import quantlab.evaluate.sweep as sweep_module
    real = sweep_module.strategy_sweep
    def fails_on_7(name, data, grid, **kw):
        if (grid["fast"] == 7).any(): raise ValueError("numerical trouble")
        return real(name, data, grid, **kw)
    monkeypatch.setattr(sweep_module, "strategy_sweep", fails_on_7)
    with pytest.raises(TaskFailed) as err:
        run_sweep("sma_cross", {"fast": [5, 7], "slow": [50]}, spx, chunks=2)
    assert "fast" in str(err.value) and "7" in str(err.value) and "numerical trouble" in str(err.value)


def test_a_bad_grid_is_refused_before_any_chunk_runs(spx):
    with pytest.raises(UsageError, match=r"grid parameter fast: must be between 1 and 5000, got .*0"):
        run_sweep("sma_cross", {"fast": [5, 0], "slow": [50]}, spx, chunks=2)
    with pytest.raises(UsageError, match=r"no set of the grid passes its checks \(fast must be below slow\)"):
        run_sweep("sma_cross", {"fast": [200], "slow": [50]}, spx)
    res = run_sweep("sma_cross", {"fast": [5, 60], "slow": [50, 100]}, spx)  # 60/50 is left out, and said so
    assert len(res.table) == 3 and res.dropped == {"fast must be below slow": 1}


def test_parse_grid_checks_names_and_reads_literals():
    g = parse_grid(["fast=5,10", "slow=50", "short=0.0,-1.0"], "sma_cross")
    assert g.dtypes["fast"].kind == "i" and g.dtypes["short"].kind == "f" and len(g) == 4
    with pytest.raises(UsageError, match="has no parameter"):
        parse_grid(["window=5"], "sma_cross")


def test_walkforward_study_trades_only_out_of_sample(spx):
    wf, sw = run_walkforward("sma_cross", GRID, spx, train=504, test=252)
    first_test = wf.folds["test_start"].iloc[0]
    assert wf.returns.index[0] == first_test
    assert first_test == sw.returns.index[504]
    for _, row in wf.folds.iterrows():
        col = row["params"]
        window = sw.returns.loc[row["train_start"]:row["train_end"]]
        window.columns = [f"fast={f}, slow={s}" for f, s in sw.table[["fast", "slow"]].to_numpy()]
        assert metrics.sharpe_ratio(window).idxmax() == col


def test_store_symbols_must_exist(data_dir):
    with pytest.raises(UsageError, match=r"no bars stored for \[.NOPE.\]"):
        load_panels(["NOPE"], data_dir_=str(data_dir))
