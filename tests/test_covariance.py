"""Covariance estimators and book risk (quantlab.research.covariance, #16) on the 20-stock PyPortfolioOpt panel,
against references written here: Ledoit and Wolf's (2004) shrinkage formula in plain numpy, pandas'
exponentially weighted covariance, and the definition of risk contributions."""
import numpy as np
import pandas as pd
import pytest

from quantlab.research.covariance import covariance, kelly_weights, portfolio_volatility, risk_contributions, scale_to_volatility


@pytest.fixture(scope="module")
def rets(pypfopt_closes):
    return pypfopt_closes.loc["2015":"2017"].pct_change(fill_method=None).iloc[1:].dropna(axis=1, how="any")


def _ledoit_wolf(x: np.ndarray) -> np.ndarray:
    "Ledoit and Wolf (2004): shrink the n-divided sample covariance S towards mu*I by min(b2 / d2, 1)."
    n, p = x.shape
    x = x - x.mean(axis=0)
    s = x.T @ x / n
    mu = np.trace(s) / p
    d2 = np.sum((s - mu * np.eye(p)) ** 2)
    b2 = min(sum(np.sum((np.outer(r, r) - s) ** 2) for r in x) / n ** 2, d2)
    delta = b2 / d2
    return delta * mu * np.eye(p) + (1 - delta) * s


def test_ledoit_wolf_is_the_papers_formula(rets):
    assert rets.shape[1] >= 18 and len(rets) > 700
    ours = covariance(rets, "ledoit_wolf", periods=1)
    np.testing.assert_allclose(ours.to_numpy(), _ledoit_wolf(rets.to_numpy()), rtol=1e-10, atol=1e-15)
    assert list(ours.index) == list(rets.columns)


def test_sample_and_exponentially_weighted_are_pandas(rets):
    np.testing.assert_allclose(covariance(rets, "sample").to_numpy(), rets.cov().to_numpy() * 252, rtol=1e-12)
    ew = rets.ewm(halflife=21).cov().loc[rets.index[-1]].to_numpy() * 252
    np.testing.assert_allclose(covariance(rets, "ewma", halflife=21).to_numpy(), ew, rtol=1e-10)


def test_a_volatility_targeted_book_realises_about_its_target_out_of_sample(rets):
    "Equal weights scaled to 10% on 2015-2016's shrunk covariance; 2017's realised volatility is near it (within 40%)."
    est, later = rets.loc[:"2016"], rets.loc["2017"]
    cov = covariance(est)
    book = scale_to_volatility(dict.fromkeys(rets.columns, 1.0 / rets.shape[1]), cov, target=0.10, max_leverage=5)
    assert portfolio_volatility(book, cov) == pytest.approx(0.10, rel=1e-12)
    realised = (later @ book).std() * np.sqrt(252)
    assert 0.06 < realised < 0.14
    rc = risk_contributions(book, cov)
    w = book.reindex(cov.index).to_numpy()
    assert rc.sum() == pytest.approx(0.10, rel=1e-12)
    np.testing.assert_allclose(rc.to_numpy(), w * (cov.to_numpy() @ w) / np.sqrt(w @ cov.to_numpy() @ w), rtol=1e-12)


def test_kelly_weights_solve_the_growth_first_order_condition(rets):
    cov = covariance(rets)
    mu = rets.mean() * 252
    full = kelly_weights(mu, cov, fraction=1.0, max_leverage=1e12)
    np.testing.assert_allclose(cov.to_numpy() @ full.to_numpy(), mu.to_numpy(), rtol=1e-9)
    half = kelly_weights(mu, cov, fraction=0.5, max_leverage=2.0)
    assert half.abs().sum() == pytest.approx(min(2.0, 0.5 * full.abs().sum()), rel=1e-12)
