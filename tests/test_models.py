"""quantlab.research.models: purged splitters against their definition and scikit-learn, out-of-sample walk-forward,
PCA against numpy, and model records reproduced bit for bit in a fresh process."""
import json
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, TimeSeriesSplit, cross_val_score, cross_validate
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from quantlab.core import StateError, UsageError
from quantlab.research.factors import reversal
from quantlab.research.guard import check_no_lookahead
from quantlab.research.labels import forward_returns, label_end, triple_barrier
from quantlab.research.models import (PurgedKFold, WalkForwardSplit, load_model, return_pca, save_model, stack_panels,
                             walk_forward_predict)


@pytest.fixture(scope="module")
def stocks(pypfopt_closes):
    return pypfopt_closes.copy()


@pytest.fixture(scope="module")
def events(stocks):
    "Triple-barrier events on three real stocks, stacked: X (two reversal features), y (label), t1 (touch time)."
    panel = stocks[["AAPL", "JPM", "XOM"]].loc["2010":"2014"]
    tb = triple_barrier(panel, pt=1, sl=1, max_hold=10, span=50)
    feats = {"rev5": reversal(panel, 5), "rev21": reversal(panel, 21)}
    X = pd.concat({k: v.stack() for k, v in feats.items()}, axis=1)
    X.index = X.index.set_names(["ts", "symbol"])
    tb = tb.set_index(["ts", "symbol"]).join(X, how="inner").dropna().sort_index()
    t1 = pd.Series(tb["t_end"].to_numpy(), index=pd.DatetimeIndex(tb.index.get_level_values("ts")))
    return tb[["rev5", "rev21"]], tb["label"], t1


def _brute_purged(start, end, n_splits, embargo):
    "PurgedKFold written from its definition, one sample at a time."
    times = sorted(set(start))
    blocks = np.array_split(np.array(times, dtype=object), n_splits)
    out = []
    for block in blocks:
        lo, hi = block[0], block[-1]
        test = [i for i, t in enumerate(start) if lo <= t <= hi]
        test_end = max(max(end[i] for i in test), hi)
        embargoed = set([t for t in times if t >= test_end][:embargo])
        train = [i for i in range(len(start)) if i not in set(test)
                 and not (start[i] < test_end and end[i] > lo)   # (t, t_end] overlaps (lo, test_end]
                 and start[i] not in embargoed]
        out.append((train, test))
    return out


@pytest.mark.parametrize("n_splits,embargo", [(5, 0), (4, 3), (7, 10)])
def test_purged_kfold_matches_its_definition_on_real_events(events, n_splits, embargo):
    X, y, t1 = events
    start, end = list(t1.index), list(pd.DatetimeIndex(t1.to_numpy()))
    got = list(PurgedKFold(n_splits, t1, embargo).split(X))
    ref = _brute_purged(start, end, n_splits, embargo)
    assert len(got) == n_splits
    for (train, test), (rtrain, rtest) in zip(got, ref):
        assert list(test) == rtest and list(train) == rtrain
    # the test folds partition the samples, and a date never straddles two folds
    all_test = np.concatenate([t for _, t in got])
    assert sorted(all_test) == list(range(len(X)))
    fold_of = np.empty(len(X), int)
    for k, (_, t) in enumerate(got): fold_of[t] = k
    assert pd.Series(fold_of).groupby(t1.index.to_numpy()).nunique().max() == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 15)), min_size=12, max_size=60),
       st.integers(2, 5), st.integers(0, 4))
def test_purged_kfold_matches_its_definition_on_random_intervals(samples, n_splits, embargo):
    "Random sample times (with repeats, as in a stacked panel) and label lengths."
    steps = np.cumsum([a for a, _ in samples])
    day = pd.Timestamp("2024-01-01", tz="UTC")
    start = [day + pd.Timedelta(days=int(s)) for s in steps]
    end = [t + pd.Timedelta(days=int(h)) for t, (_, h) in zip(start, samples)]
    t1 = pd.Series(end, index=pd.DatetimeIndex(start))
    if t1.index.nunique() < n_splits: return
    got = list(PurgedKFold(n_splits, t1, embargo).split(np.zeros(len(t1))))
    ref = _brute_purged(start, end, n_splits, embargo)
    assert [(list(a), list(b)) for a, b in got] == ref


def test_purging_removes_every_overlap(events):
    X, y, t1 = events
    start, end = t1.index.to_numpy(), pd.DatetimeIndex(t1.to_numpy()).to_numpy()
    for train, test in PurgedKFold(5, t1, embargo=5).split(X):
        lo, test_end = start[test].min(), max(end[test].max(), start[test].max())
        overlap = (start[train] < test_end) & (end[train] > lo)
        assert not overlap.any()
        # and it removed something: without purging the neighbours of the test block would be there
        assert len(train) + len(test) < len(X)


def test_splitters_work_in_cross_val_score_and_grid_search(events):
    X, y, t1 = events
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    for cv in (PurgedKFold(4, t1, embargo=5), WalkForwardSplit(3, t1, embargo=2)):
        scores = cross_val_score(pipe, X, y, cv=cv, scoring="accuracy")
        assert len(scores) == cv.get_n_splits() and np.isfinite(scores).all()
        search = GridSearchCV(pipe, {"logisticregression__C": [0.01, 1.0]}, cv=cv, scoring="accuracy").fit(X, y)
        assert search.n_splits_ == cv.get_n_splits()
        assert search.best_params_["logisticregression__C"] in (0.01, 1.0)
        res = cross_validate(pipe, X, y, cv=cv, return_indices=True)
        for train, test in zip(res["indices"]["train"], res["indices"]["test"]):
            assert len(np.intersect1d(train, test)) == 0


def test_shuffled_kfold_finds_skill_in_noise_that_purged_kfold_does_not(stocks):
    "Overlapping 20-bar labels of a random walk: a memorising model 'predicts' them under shuffled k-fold only."
    rng = np.random.default_rng(3)
    n = 1500
    ix = stocks.index[-n:]
    close = pd.DataFrame({"N": 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))}, index=ix)
    y = forward_returns(close, 20)["N"].dropna()
    X = pd.DataFrame({"time": np.arange(len(y), dtype=float)}, index=y.index)
    t1 = label_end(ix, 20).loc[y.index]
    knn = KNeighborsRegressor(n_neighbors=5)
    leaky = cross_val_score(knn, X, y, cv=KFold(5, shuffle=True, random_state=0), scoring="r2").mean()
    purged = cross_val_score(knn, X, y, cv=PurgedKFold(5, t1, embargo=20), scoring="r2").mean()
    assert leaky > 0.5 and purged < 0


def test_walk_forward_split_equals_time_series_split_for_instant_labels():
    ix = pd.date_range("2020-01-01", periods=120, freq="D", tz="UTC")
    t1 = pd.Series(ix, index=ix)
    X = np.zeros((120, 1))
    ours = list(WalkForwardSplit(4, t1, test_size=15).split(X))
    ref = list(TimeSeriesSplit(4, test_size=15).split(X))
    for (a, b), (c, d) in zip(ours, ref):
        np.testing.assert_array_equal(a, c); np.testing.assert_array_equal(b, d)


def test_walk_forward_split_trains_only_on_known_labels(events):
    X, y, t1 = events
    start, end = t1.index.to_numpy(), pd.DatetimeIndex(t1.to_numpy()).to_numpy()
    for train, test in WalkForwardSplit(4, t1, embargo=3, train_size=300).split(X):
        assert end[train].max() <= start[test].min()
        assert start[train].max() < start[test].min()
        assert len(np.unique(start[train])) <= 300


def test_walk_forward_predictions_are_out_of_sample_and_reproducible_by_hand(events):
    X, y, t1 = events
    y = y.astype(float)
    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    res = walk_forward_predict(model, X, y, t1, retrain_every=60, min_train=250, progress=False)
    start, end = t1.index.to_numpy(), pd.DatetimeIndex(t1.to_numpy()).to_numpy()
    times = np.unique(start)
    assert res.predictions[start < times[250]].isna().all() and res.predictions[start >= times[250]].notna().all()
    assert (res.fits["train_end"] <= res.fits["time"]).all()
    # redo the third refit by hand: labels known at its time, samples until the next refit
    now, nxt = times[250 + 2 * 60], times[250 + 3 * 60]
    train = end <= now
    test = (start >= now) & (start < nxt)
    by_hand = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(X[train], y[train]).predict(X[test])
    np.testing.assert_array_equal(res.predictions[test].to_numpy(), by_hand)
    assert res.fits["n_train"].iloc[2] == train.sum()
    rolling = walk_forward_predict(model, X, y, t1, retrain_every=60, min_train=250, window=100, progress=False)
    # labels ending within the last 100 times only; a label spans at most max_hold=10 bars
    ns = lambda col: pd.DatetimeIndex(rolling.fits[col]).as_unit("ns").asi8
    times_ns = pd.DatetimeIndex(times).as_unit("ns").asi8
    earliest = times_ns[np.searchsorted(times_ns, ns("time")) - 110]
    assert (ns("train_start") >= earliest).all()
    assert (rolling.fits["n_train"] < res.fits["n_train"]).iloc[1:].all()


def _pipeline_predictions(close, honest=True):
    X, y, t1 = stack_panels({"rev5": reversal(close, 5), "rev21": reversal(close, 21)},
                            forward_returns(close, 5), label_end(close.index, 5))
    if not honest:  # the classic mistake: label end unknown to the loop, so every labelled row counts as known
        t1 = pd.Series(t1.index, index=t1.index)
    res = walk_forward_predict(make_pipeline(StandardScaler(), Ridge()), X, y, t1, retrain_every=42,
                               min_train=126, progress=False)
    return res.predictions.unstack("symbol")


def test_guard_flags_forward_returns_but_not_walk_forward_predictions(stocks):
    close = stocks[["AAPL", "JPM", "XOM", "WMT", "PFE", "GE"]].loc["2012":"2015"]
    # cut exactly at refit times (features start at bar 21; refits every 42 times after 126): the most
    # sensitive place, where the newest labels are unknown in the truncated data
    cuts = close.index[[21 + 126 + 42 * 4, 21 + 126 + 42 * 9, 21 + 126 + 42 * 16]]
    assert not check_no_lookahead(lambda c: forward_returns(c, 5), close, dates=cuts, raise_on_leak=False).ok
    report = check_no_lookahead(_pipeline_predictions, close, dates=cuts)
    assert report.ok and report.n_values > 2000
    # the guard has power: a loop that trains on labels it could not yet know is caught
    leaky = check_no_lookahead(lambda c: _pipeline_predictions(c, honest=False), close, dates=cuts, raise_on_leak=False)
    assert not leaky.ok


def test_pca_matches_the_eigendecomposition_of_the_covariance(stocks):
    rets = stocks.loc["2015":].pct_change(fill_method=None).iloc[1:]
    pc = return_pca(rets, n_components=5, nan_policy="drop_dates")
    kept = rets.dropna()
    assert pc.assets == list(rets.columns) and pc.dates_dropped == len(rets) - len(kept)
    vals, vecs = np.linalg.eigh(np.cov(kept.to_numpy().T))
    vals, vecs = vals[::-1][:5], vecs[:, ::-1][:, :5]
    np.testing.assert_allclose(pc.pca.explained_variance_, vals, rtol=1e-9)
    np.testing.assert_allclose(np.abs(pc.loadings.to_numpy()), np.abs(vecs), atol=1e-8)
    np.testing.assert_allclose(pc.loadings.T @ pc.loadings, np.eye(5), atol=1e-12)
    assert (pc.loadings["PC1"] > 0).all() and pc.explained_variance_ratio["PC1"] > 0.2
    corr = return_pca(rets, nan_policy="drop_dates", standardize=True)
    np.testing.assert_allclose(corr.pca.explained_variance_, np.linalg.eigvalsh(np.corrcoef(kept.to_numpy().T))[::-1], rtol=1e-9)


def test_pca_missing_value_rules_are_explicit(stocks):
    rets = stocks.loc["2012":"2016"].pct_change(fill_method=None).iloc[1:]   # FB lists 2012-05, BABA 2014-09
    drop_assets = return_pca(rets, nan_policy="drop_assets", max_missing=0.10)
    assert "BABA" not in drop_assets.assets and "FB" in drop_assets.assets
    zero = return_pca(rets, nan_policy="zero")
    assert set(zero.assets) == set(rets.columns) and zero.dates_dropped == 0
    assert return_pca(rets, nan_policy="drop_dates").dates_dropped > 400
    with pytest.raises(UsageError, match="nan_policy"):
        return_pca(rets, nan_policy="interpolate")


def test_model_record_reproduces_predictions_bit_for_bit_in_a_new_process(events, tmp_path):
    X, y, t1 = events
    train = t1.index < pd.Timestamp("2013-06-01", tz="UTC")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.5)).fit(X[train], y[train])
    X_test = X[~train]
    proba = model.predict_proba(X_test)[:, 1]
    path = save_model(tmp_path / "run", model, X_test, proba, X_train=X[train], y_train=y[train],
                      train_window=(t1.index[train].min(), t1[train].max()), scores={"auc": 0.5}, method="predict_proba",
                      params={"pt": 1, "sl": 1})
    record = json.loads((path / "record.json").read_text())
    assert record["model_class"].endswith("Pipeline") and record["model_params"]["logisticregression__C"] == 0.5
    assert record["versions"]["scikit-learn"] and record["n_train"] == int(train.sum())
    X_test.to_parquet(tmp_path / "x.parquet")
    code = ("import sys, numpy as np, pandas as pd\n"
            "from quantlab.research.models import load_model\n"
            f"rec = load_model({str(path)!r})\n"
            f"X = pd.read_parquet({str(tmp_path / 'x.parquet')!r})\n"
            "again = rec.reproduce(X)['prediction'].to_numpy()\n"
            "np.save(sys.argv[1], again)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "again.npy")], check=True, capture_output=True, text=True)
    again = np.load(tmp_path / "again.npy")
    assert np.array_equal(again, proba) and again.dtype == proba.dtype


def test_model_record_refuses_tampering_and_other_data(events, tmp_path):
    X, y, t1 = events
    model = Ridge().fit(X, y)
    path = save_model(tmp_path / "r", model, X, model.predict(X))
    rec = load_model(path)
    with pytest.raises(StateError, match="not the data"):
        rec.reproduce(X.iloc[:-1])
    rec.model.coef_ = rec.model.coef_ * 1.0000001   # a model that drifted after reload
    with pytest.raises(StateError, match="does not reproduce"):
        rec.reproduce(X)
    (path / "model.joblib").write_bytes(b"not a model")
    with pytest.raises(StateError, match="SHA-256"):
        load_model(path)


def test_a_failed_save_leaves_no_record(events, tmp_path):
    X, y, _ = events
    unpicklable = Ridge().fit(X, y)
    unpicklable.lock = threading.Lock()
    with pytest.raises(Exception):
        save_model(tmp_path / "bad", unpicklable, X, unpicklable.predict(X))
    assert not (tmp_path / "bad" / "record.json").exists() and not (tmp_path / "bad" / "model.joblib").exists()
    assert [p.name for p in (tmp_path / "bad").iterdir()] == []
    with pytest.raises(StateError, match="record.json"):
        load_model(tmp_path / "bad")


def test_splitters_reject_bad_input(events):
    X, y, t1 = events
    with pytest.raises(UsageError, match="rows"):
        list(PurgedKFold(3, t1).split(X.iloc[:10]))
    with pytest.raises(UsageError, match="sorted"):
        list(PurgedKFold(3, t1.iloc[::-1]).split(X))
    with pytest.raises(UsageError, match="t1"):
        list(WalkForwardSplit(3).split(X))
    unknown = t1.copy(); unknown.iloc[-1] = pd.NaT
    with pytest.raises(UsageError, match="NaT"):
        list(PurgedKFold(3, unknown).split(X))
