"""Sensitivity grids, stability, cost/delay stress and stress periods on real data."""
import numpy as np
import pandas as pd
import pytest

from quantlab.research import metrics
from quantlab.evaluate.robustness import sensitivity_table, stability_score, stress_periods, stress_test, plot_sensitivity


@pytest.fixture(scope="module")
def spx():
    from arch.data import sp500
    close = sp500.load()["Adj Close"]
    close.index = pd.DatetimeIndex(close.index).tz_localize("UTC")
    return close


def sma_returns(close, fast, slow, cost_bps=5.0, cost_multiplier=1.0, delay=0):
    daily = close.pct_change()
    pos = (close.rolling(fast).mean() > close.rolling(slow).mean()).astype(float).shift(1 + delay)
    return (pos * daily - pos.diff().abs() * cost_bps * 1e-4 * cost_multiplier).iloc[250:]


def test_sensitivity_grid_and_stability_on_a_real_sweep(spx):
    rows = [{"fast": f, "slow": s, "sharpe_ratio": metrics.sharpe_ratio(sma_returns(spx, f, s))}
            for f in (5, 10, 20, 40) for s in (50, 100, 150, 200)]
    tab = sensitivity_table(pd.DataFrame(rows), "fast", "slow")
    assert tab.shape == (4, 4)
    assert tab.loc[100, 10] == pytest.approx(metrics.sharpe_ratio(sma_returns(spx, 10, 100)))
    score = stability_score(tab)
    a = tab.to_numpy(); i, j = np.unravel_index(np.nanargmax(a), a.shape)
    nb = [a[y, x] for y in range(max(i - 1, 0), min(i + 2, 4)) for x in range(max(j - 1, 0), min(j + 2, 4)) if (y, x) != (i, j)]
    assert score == pytest.approx(np.mean(nb) / a[i, j])    # the definition, computed independently
    fig = plot_sensitivity(tab)
    assert fig.data[0].z.shape == (4, 4)


def test_duplicate_cells_are_refused():
    from quantlab.core import UsageError
    res = pd.DataFrame({"fast": [1, 1], "slow": [2, 2], "sharpe_ratio": [0.1, 0.2]})
    with pytest.raises(UsageError, match="share the same"):
        sensitivity_table(res, "fast", "slow")


def test_stress_costs_and_delay(spx):
    run = lambda p, cost_multiplier=1.0, delay=0: sma_returns(spx, p["fast"], p["slow"], cost_multiplier=cost_multiplier, delay=delay)
    table = stress_test(run, {"fast": 10, "slow": 100}, cost_multipliers=(1, 2, 3), delays=(0, 1))
    assert list(table.index) == [(0, 1.0), (0, 2.0), (0, 3.0), (1, 1.0), (1, 2.0), (1, 3.0)]
    for d in (0, 1):
        tot = table.loc[d, "annual_return"]
        assert tot.is_monotonic_decreasing
        expected = metrics.sharpe_ratio(sma_returns(spx, 10, 100, cost_multiplier=3, delay=d))
        assert table.loc[(d, 3.0), "sharpe_ratio"] == pytest.approx(expected, rel=1e-12)
    assert table.loc[(0, 1.0), "sharpe_change"] == 0


def test_stress_periods_against_direct_slices(spx):
    r = spx.pct_change()
    table = stress_periods(r, benchmark=r)
    gfc = r.loc["2007-10-09":"2009-03-09"].dropna()
    assert table.loc["financial crisis 2007-09", "total_return"] == pytest.approx((1 + gfc).prod() - 1, rel=1e-12)
    # the window's returns start with 2007-10-09's, so they compound from the previous close: about -56%
    prev = spx.loc[:"2007-10-08"].iloc[-1]
    assert table.loc["financial crisis 2007-09", "total_return"] == pytest.approx(spx.loc[:"2009-03-09"].iloc[-1] / prev - 1, rel=1e-9)
    assert -0.6 < table.loc["financial crisis 2007-09", "total_return"] < -0.5
    assert "COVID crash 2020" not in table.index and "year 2008" in table.index  # the data ends in 2018: no empty rows
    asked = stress_periods(r, periods={"COVID crash 2020": ("2020-02-19", "2020-03-23")})
    assert asked.loc["COVID crash 2020", "observations"] == 0  # a window asked for by name stays, and says it is empty
    custom = stress_periods(r, periods={"2011 debt ceiling": ("2011-07-22", "2011-10-03")})
    assert custom.index.tolist() == ["2011 debt ceiling"] and custom.iloc[0]["max_drawdown"] < -0.15
