"""Portfolio construction (quantlab.research.construct, #16) against PyPortfolioOpt on its own 20-stock panel:
minimum variance, maximum Sharpe, mean-variance and HRP on the same inputs, to 1e-6 in weights (HRP to 1e-12),
unconstrained and with bounds, sector caps, long/short leverage and a turnover penalty. PyPortfolioOpt states its
problems in its own code (EfficientFrontier, HRPOpt); both are solved by Clarabel at the same tolerances."""
import cvxpy as cp
import numpy as np
import pandas as pd
import pytest

pypfopt = pytest.importorskip("pypfopt", reason="PyPortfolioOpt (the dev extra) is the reference")
from pypfopt import EfficientFrontier, HRPOpt, objective_functions, risk_models

from quantlab.core import UsageError
from quantlab.research import construct as C
from quantlab.research.covariance import covariance, risk_contributions

TOL = 1e-6
SECTORS = {"GOOG": "tech", "AAPL": "tech", "FB": "tech", "BABA": "tech", "AMZN": "tech", "AMD": "tech", "MA": "fin",
           "BAC": "fin", "JPM": "fin", "GE": "ind", "GM": "ind", "XOM": "energy", "RRC": "energy", "WMT": "retail",
           "BBY": "retail", "SBUX": "retail", "UAA": "retail", "SHLD": "retail", "T": "telecom", "PFE": "health"}


@pytest.fixture(scope="module")
def prices(pypfopt_closes):
    "The 20 stocks over the dates they all trade: 2014-09-19 (BABA's listing) to 2018-04-11."
    p = pypfopt_closes.dropna(how="any")
    assert p.shape[1] == 20 and len(p) > 850
    return p


@pytest.fixture(scope="module")
def inputs(prices):
    rets = prices.pct_change(fill_method=None).iloc[1:]
    return rets, rets.mean() * 252, covariance(rets, "ledoit_wolf")


def _frontier(mu, S, bounds=(0, 1)):
    return EfficientFrontier(mu, S, weight_bounds=bounds, solver="CLARABEL", solver_options=C.SOLVER_OPTIONS)


def _same(ours: pd.Series, theirs, tol=TOL):
    theirs = pd.Series(theirs, dtype=float).reindex(ours.index)
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), atol=tol, rtol=0)


def test_ledoit_wolf_is_pypfopts(prices, inputs):
    _, _, S = inputs
    theirs = risk_models.CovarianceShrinkage(prices, frequency=252).ledoit_wolf()
    np.testing.assert_allclose(S.to_numpy(), theirs.to_numpy(), rtol=1e-10)


def test_min_variance_and_max_sharpe_match(inputs):
    _, mu, S = inputs
    _same(C.min_variance(S), _frontier(mu, S).min_volatility())
    _same(C.max_sharpe(mu, S), _frontier(mu, S).max_sharpe(risk_free_rate=0.0))
    _same(C.max_sharpe(mu, S, rf=0.02), _frontier(mu, S).max_sharpe(risk_free_rate=0.02))
    _same(C.mean_variance(mu, S, risk_aversion=3), _frontier(mu, S).max_quadratic_utility(risk_aversion=3))
    assert (C.max_sharpe(mu, S) > 1e-4).sum() < 12  # a concentrated book: the comparison is not of two near-uniform vectors


def test_constrained_books_match(inputs):
    _, mu, S = inputs
    c = C.Constraints(max_weight=0.1, groups=SECTORS, group_max={"tech": 0.25, "retail": 0.1}, group_min={"energy": 0.05})
    ef = _frontier(mu, S, (0, 0.1))
    ef.add_sector_constraints(SECTORS, {"energy": 0.05}, {"tech": 0.25, "retail": 0.1})
    ours = C.min_variance(S, c)
    _same(ours, ef.min_volatility())
    assert ours[[a for a, g in SECTORS.items() if g == "tech"]].sum() <= 0.25 + 1e-9
    ef = _frontier(mu, S, (0, 0.1))
    ef.add_sector_constraints(SECTORS, {"energy": 0.05}, {"tech": 0.25, "retail": 0.1})
    _same(C.max_sharpe(mu, S, constraints=c), ef.max_sharpe())


def test_long_short_with_leverage_and_turnover_match(inputs):
    _, mu, S = inputs
    ef = _frontier(mu, S, (-0.3, 0.3))
    ef.add_constraint(lambda w: cp.norm1(w) <= 1.8)
    ours = C.mean_variance(mu, S, 2.0, C.Constraints(min_weight=-0.3, max_weight=0.3, max_leverage=1.8))
    _same(ours, ef.max_quadratic_utility(risk_aversion=2.0))
    assert (ours < -0.01).any() and abs(ours.abs().sum() - 1.8) < 1e-6  # shorts taken, the gross cap binds
    held = pd.Series(1 / 20, index=S.index)
    ef = _frontier(mu, S)
    ef.add_objective(objective_functions.transaction_cost, w_prev=held.to_numpy(), k=0.002)
    _same(C.min_variance(S, current=held, turnover_penalty=0.002), ef.min_volatility())


def test_hrp_is_pypfopts(inputs):
    rets, _, _ = inputs
    theirs = HRPOpt(rets).optimize("single")
    _same(C.hrp(covariance(rets, "sample")), theirs, tol=1e-12)
    _same(C.hrp(covariance(rets, "sample"), "ward"), HRPOpt(rets).optimize("ward"), tol=1e-12)


def test_risk_parity_equalises_risk_on_the_panel(inputs):
    _, _, S = inputs
    w = C.risk_parity(S)
    rc = risk_contributions(w, S)
    np.testing.assert_allclose(rc / rc.sum(), np.full(20, 1 / 20), atol=1e-12)
    # the first-order condition of Spinu's problem, checked without cvxpy: S y = b / y for y = w / sqrt(w'Sw / n)
    y = w.to_numpy() * np.sqrt(20 / (w.to_numpy() @ S.to_numpy() @ w.to_numpy()))
    np.testing.assert_allclose(S.to_numpy() @ y, 1 / y, rtol=1e-8)


def test_walk_forward_recipe_leaves_out_late_listings(pypfopt_closes):
    rets = pypfopt_closes.loc["2013-06":"2014-12"].pct_change(fill_method=None).iloc[1:]
    book = C.Construction("max_sharpe", constraints=C.Constraints(max_weight=0.2)).solve(rets.iloc[-252:])
    assert book.weights["BABA"] == 0.0 and "BABA" not in book.cov.index  # listed 2014-09-19: no full window
    assert abs(book.weights.sum() - 1) < 1e-9 and book.weights.max() <= 0.2 + 1e-12
    with pytest.raises(UsageError, match="cannot sum to the budget"):
        C.min_variance(covariance(rets.iloc[-252:].dropna(axis=1)), C.Constraints(max_weight=0.01))
