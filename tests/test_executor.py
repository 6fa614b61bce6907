"""quantlab.evaluate.executor: identical, ordered results in-process, on local processes and on a Dask cluster
(a LocalCluster on 127.0.0.1), failures reported with their parameters, progress shown."""
import os
import time

import numpy as np
import pandas as pd
import pytest

from quantlab.research import metrics
from quantlab.core import UsageError
from quantlab.evaluate.executor import (DaskExecutor, Executor, InProcessExecutor, LocalExecutor, TaskFailed, TaskResult,
                               failures, get_executor, values)

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    "Two small in-process Dask workers behind a real TCP scheduler on 127.0.0.1."
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as c:
        yield c


@pytest.fixture(params=["inprocess", "local:2", "dask"])
def executor(request, cluster):
    if request.param == "dask":
        ex = get_executor(cluster.scheduler_address.replace("tcp://", "dask://"))
    else:
        ex = get_executor(request.param)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def spx_close():
    from arch.data import sp500
    return sp500.load()["Adj Close"]


# module-level task functions: picklable by reference as well as by value
SPX = None


def _spx():
    global SPX
    if SPX is None:
        from arch.data import sp500
        SPX = sp500.load()["Adj Close"]
    return SPX


def crossover_metrics(params):
    "Summary metrics of a fast/slow moving-average rule on the S&P 500 (held the day after the signal)."
    fast, slow = params
    close = _spx()
    daily = close.pct_change()
    held = (close.rolling(fast).mean() > close.rolling(slow).mean()).shift(1, fill_value=False)
    r = daily.where(held, 0.0).iloc[slow:]
    row = metrics.summary(r).iloc[0]
    return {k: float(row[k]) for k in ("sharpe", "max_drawdown", "annual_return", "stability", "cvar")}


def bootstrap_sharpes(seed):
    "Sharpe ratios of 200 resampled S&P 500 histories: one vectorised metrics call per task."
    r = _spx().pct_change().dropna().to_numpy()
    idx = np.random.default_rng(seed).integers(0, len(r), size=(len(r), 200))
    return metrics.sharpe_ratio(pd.DataFrame(r[idx])).to_numpy()


def fragile(params):
    if params["slow"] <= params["fast"]:
        raise ValueError(f"slow window {params['slow']} must exceed fast window {params['fast']}")
    return params["slow"] - params["fast"]


def sleepy(i):
    time.sleep(0.02 * (5 - i % 5))  # later tasks finish first
    return i


GRID = [(f, s) for f in (5, 10, 20, 50) for s in (100, 200)]


def test_every_executor_satisfies_the_protocol(executor):
    assert isinstance(executor, Executor)


def test_parameter_grid_gives_identical_results_in_task_order(executor):
    reference = values(InProcessExecutor().map(crossover_metrics, GRID, progress=False))
    got = executor.map(crossover_metrics, GRID, desc="grid", progress=False)
    assert all(isinstance(r, TaskResult) and r.ok for r in got)
    assert [r.task for r in got] == GRID
    assert values(got) == reference  # bit-identical floats
    # and the numbers are real: the 50/200 rule's Sharpe ratio recomputed by hand
    close = _spx()
    held = (close.rolling(50).mean() > close.rolling(200).mean()).shift(1, fill_value=False)
    r = close.pct_change().where(held, 0.0).iloc[200:]
    assert got[GRID.index((50, 200))].value["sharpe"] == pytest.approx(r.mean() / r.std() * np.sqrt(252), rel=1e-12)


def test_vectorised_metrics_of_many_columns_match_across_executors(executor):
    seeds = list(range(6))
    here = values(InProcessExecutor().map(bootstrap_sharpes, seeds, progress=False))
    there = values(executor.map(bootstrap_sharpes, seeds, progress=False))
    for a, b in zip(here, there):
        np.testing.assert_array_equal(a, b)


def test_a_failing_task_is_reported_with_its_parameters_and_the_others_survive(executor):
    tasks = [{"fast": 5, "slow": 50}, {"fast": 30, "slow": 10}, {"fast": 1, "slow": 2}]
    res = executor.map(fragile, tasks, progress=False)
    assert [r.ok for r in res] == [True, False, True]
    assert [r.value for r in res if r.ok] == [45, 1]
    bad = failures(res)[0]
    assert bad.index == 1 and bad.task == {"fast": 30, "slow": 10}
    assert bad.error.type == "ValueError"
    assert bad.error.message == "slow window 10 must exceed fast window 30"
    assert "in fragile" in bad.error.traceback and "raise ValueError" in bad.error.traceback
    with pytest.raises(TaskFailed, match=r"task 1 \{'fast': 30, 'slow': 10\}: ValueError: slow window 10"):
        values(res)


def test_results_come_back_in_task_order_even_when_later_tasks_finish_first(executor):
    if isinstance(executor, LocalExecutor): executor.chunksize = 1
    if isinstance(executor, DaskExecutor): executor.chunksize = 1
    res = executor.map(sleepy, range(10), progress=False)
    assert [r.index for r in res] == list(range(10)) and values(res) == list(range(10))


def test_lambdas_and_closures_travel_to_other_processes(executor):
    offset = 7
    assert values(executor.map(lambda x: x + offset, [1, 2, 3], progress=False)) == [8, 9, 10]


def test_progress_bar_shows_the_description(executor, capsys):
    executor.map(fragile, [{"fast": 1, "slow": 2}] * 4, desc="sweep of windows")
    err = capsys.readouterr().err
    assert "sweep of windows" in err and "4/4" in err


def test_empty_task_list_returns_empty_list(executor):
    assert executor.map(fragile, [], progress=False) == []


def test_a_killed_worker_process_fails_only_its_own_chunk():
    def die_on_three(i):
        if i == 3: os._exit(3)
        return i
    res = LocalExecutor(workers=2, chunksize=1).map(die_on_three, range(6), progress=False)
    assert len(res) == 6 and all(isinstance(r, TaskResult) for r in res)
    assert not res[3].ok and res[3].error.type == "BrokenProcessPool"
    assert all(r.value == r.index for r in res if r.ok)


def test_get_executor_parses_names_and_passes_objects_through(cluster):
    assert isinstance(get_executor(None), InProcessExecutor)
    assert isinstance(get_executor("inprocess"), InProcessExecutor)
    assert get_executor("local").workers == (os.cpu_count() or 1)
    assert get_executor("local:2").workers == 2
    ex = LocalExecutor(1)
    assert get_executor(ex) is ex
    with distributed.Client(cluster) as client:
        dx = get_executor(client)
        assert isinstance(dx, DaskExecutor) and dx.workers == 2
        dx.close()
        assert client.status == "running"  # a client passed in stays the caller's
    for bad in ("local:0", "local:two", "ray://x", 42):
        with pytest.raises(UsageError):
            get_executor(bad)


def test_unreachable_scheduler_is_a_clear_usage_error():
    with pytest.raises(UsageError, match="cannot reach the Dask scheduler at dask://127.0.0.1:9"):
        DaskExecutor("dask://127.0.0.1:9", timeout=1)


def test_mapping_the_same_function_twice_in_a_row_on_dask_reuses_nothing_stale(cluster):
    # regression: with content-hashed scatter keys the second map raced the release of the first
    with get_executor(cluster.scheduler_address.replace("tcp://", "dask://")) as ex:
        for _ in range(5):
            assert values(ex.map(fragile, [{"fast": 1, "slow": 3}] * 4, progress=False)) == [2] * 4
