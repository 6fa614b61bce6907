"""Batches of reports through the executor interface: same outputs in-process and in local processes."""
import json

import nbformat
import pytest

from quantlab.evaluate.executor import failures
from quantlab.reports.render import list_runs, run_reports


@pytest.fixture
def template(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("k = 1  # multiplier\nmetrics_path = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from quantlab.core import UsageError\nif k < 0: raise UsageError(f'parameter k must be >= 0, got {k}')"),
        nbformat.v4.new_code_cell("import numpy as np\nfrom arch.data import sp500\nfrom quantlab.reports import render as reports\nfrom quantlab.research import metrics\n"
                                  "r = sp500.load()['Adj Close'].pct_change().dropna() * k\n"
                                  "reports.record_metrics({'k': k, 'sharpe': float(metrics.sharpe_ratio(r))}, metrics_path)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    path = tmp_path / "scaled.ipynb"
    nbformat.write(nb, path)
    return path


def test_batch_in_processes_matches_in_process_and_reports_the_failing_set(template, tmp_path):
    sets = [{"k": 1}, {"k": -1}, {"k": 2}]
    serial = run_reports(template, sets, output_dir=tmp_path / "a")
    local = run_reports(template, sets, output_dir=tmp_path / "b", executor="local:2")
    for batch in (serial, local):
        assert [r.ok for r in batch] == [True, False, True]
        assert failures(batch)[0].task == {"k": -1} and "k must be >= 0" in failures(batch)[0].error.message
    for a, b in zip(serial, local):
        if a.ok:
            ma = json.loads((a.value.path / "metrics.json").read_text()); mb = json.loads((b.value.path / "metrics.json").read_text())
            assert ma["sharpe"] == mb["sharpe"] and ma["k"] == mb["k"]
    # a Sharpe ratio is scale-free: k=2 gives the same as k=1, computed independently in each kernel
    ok = [r.value.metrics for r in serial if r.ok]
    assert ok[0]["sharpe"] == pytest.approx(ok[1]["sharpe"], rel=1e-12)
    assert len(list_runs("scaled", tmp_path / "a")) == 2 == len(list_runs("scaled", tmp_path / "b"))
