"""papermill runs of the report templates: the four output files, a standalone HTML (plotly.js inline, nothing
loaded from the network), metrics that agree with validating the same stored data, and clear parameter errors
that leave no half-written run."""
import json
import base64
import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest

from quantlab.reports import render as reports
from quantlab.core import UsageError

SMALL = ["goog", "eurusd", "ff3"]  # two bars samples on two calendars, one series: a few seconds of work


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    "The data_quality report run through the console entry point into a tmp reports dir and a kept store."
    tmp = tmp_path_factory.mktemp("report")
    store, out = tmp / "store", tmp / "reports"
    p = subprocess.run([sys.executable, "-m", "quantlab.cli", "--data-dir", str(store), "report", "data_quality",
                        "-p", "samples", json.dumps(SMALL), "-p", "max_findings", "5", "--output-dir", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return {"stdout": p.stdout, "stderr": p.stderr, "store": store, "out": out}


def test_report_prints_the_html_path_last_and_writes_four_files(cli_run):
    html = Path(cli_run["stdout"].strip().splitlines()[-1])
    assert html.name == "report.html" and html.is_file()
    run_dir = html.parent
    assert run_dir.parent == cli_run["out"] / "data_quality"
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.json", "params.json", "report.html", "report.ipynb"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", run_dir.name)
    assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]  # no temp dir or failure note left
    params = json.loads((run_dir / "params.json").read_text())
    assert params["samples"] == SMALL and params["max_findings"] == 5
    assert params["data_dir"] == str(cli_run["store"].resolve())  # --data-dir reached the template
    assert "Executing" in cli_run["stderr"]  # papermill's progress bar


def test_html_is_standalone_with_plotly_inline(cli_run):
    html = Path(cli_run["stdout"].strip().splitlines()[-1]).read_text(encoding="utf-8")
    srcs = re.findall(r"<script\b[^>]*\bsrc\s*=\s*['\"]?([^'\" >]+)", html, flags=re.I)
    assert srcs == [], srcs  # no script loaded from anywhere: not plotly's CDN, not MathJax, not require.js
    assert not re.search(r"<link\b[^>]*href=['\"]https?://", html)
    figures = [gzip.decompress(base64.b64decode(g)).decode() for g in re.findall(r'data-gz="([^"]+)"', html)]
    assert figures and all("Plotly.newPlot" in f for f in figures)  # each figure's script, gzipped, run once plotly.js is there
    loader = re.search(r'atob\(b64\).*?gunzip\("([^"]+)"\)\);\s*// plotly\.js (v[\d.]+ \w+)', html, re.S)
    plotly_js = gzip.decompress(base64.b64decode(loader.group(1))).decode()
    assert re.match(r"/\*\*\s*\* plotly\.js \(cartesian - minified\) v[\d.]+", plotly_js) and "window.Plotly = Plotly" in plotly_js  # the library itself is inlined
    # nothing points at a CDN: no dynamic loaders (e.g. a BokehJS loader that `import backtesting` displays in a kernel)
    assert re.findall(r"https?://cdn[^\s\"'<>]*", html) == []
    assert re.search(r'<img [^>]*src="data:image/png;base64,', html)  # matplotlib as inline PNG
    assert "bar_samples = [n for n in names" not in html  # template code hidden; report.ipynb keeps it


def test_metrics_agree_with_validating_the_same_store(cli_run):
    from quantlab.data import samples
    from quantlab.core import fingerprint
    from quantlab.data.store import BarStore
    from quantlab.data.validate import validate_bars
    run_dir = Path(cli_run["stdout"].strip().splitlines()[-1]).parent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"samples", "symbols", "rows", "errors", "warnings", "counts", "fingerprints", "python", "run"} <= set(metrics)
    assert metrics["samples"] == SMALL and metrics["symbols"] == ["GOOG", "EURUSD"]
    store = BarStore(cli_run["store"])
    warnings = errors = 0
    for name in ("goog", "eurusd"):
        spec = samples.SAMPLES[name]
        bars = store.read_bars([spec.symbol])
        report = validate_bars(bars, calendar=spec.calendar, freq=spec.freq)
        assert metrics["rows"][spec.symbol] == len(bars) == samples.load_sample(name).bars.shape[0]
        assert metrics["counts"][spec.symbol] == {c: n for c, n in report.counts().items() if n}
        assert metrics["fingerprints"][spec.symbol] == fingerprint(bars)
        warnings += len(report.warnings); errors += len(report.errors)
    assert (metrics["warnings"], metrics["errors"]) == (warnings, errors)
    assert metrics["python"] == sys.executable  # the kernel ran on this interpreter (the venv's)
    assert metrics["run"]["report"] == "data_quality" and metrics["run"]["run_id"] == run_dir.name


def test_unknown_sample_and_unknown_parameter_name(tmp_path):
    with pytest.raises(UsageError, match=r"unknown sample\(s\) \['nope'\]; available: \["):
        reports.run_report("data_quality", {"samples": ["nope"]}, output_dir=tmp_path, progress=False)
    with pytest.raises(UsageError, match="has no parameter 'sample'; its parameters: samples, data_dir, max_findings"):
        reports.run_report("data_quality", {"sample": "goog"}, output_dir=tmp_path, progress=False)


def test_bad_parameter_value_exits_2_with_one_line_and_keeps_a_failure_note(tmp_path):
    p = subprocess.run([sys.executable, "-m", "quantlab.cli", "report", "data_quality", "-p", "max_findings", "many",
                        "--output-dir", str(tmp_path), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last == "quantlab: error: parameter max_findings: expected an integer >= 1, got 'many'"
    assert "Traceback" not in p.stderr and p.stdout == ""
    root = tmp_path / "data_quality"
    assert reports.list_runs("data_quality", tmp_path) == []  # no run directory
    notes = list((root / "_failed").iterdir())
    assert len(notes) == 1 and json.loads((notes[0] / "error.json").read_text())["type"] == "UsageError"
    assert json.loads((notes[0] / "params.json").read_text())["max_findings"] == "many"
    assert (notes[0] / "report.ipynb").exists()
    assert not [q for q in root.iterdir() if q.name.startswith(".")]  # no temporary directory left


def test_templates_are_clean_notebooks():
    import nbformat
    for name in reports.list_reports():
        nb = nbformat.read(reports.template_path(name), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1, name
        assert "metrics_path" in reports.template_parameters(name), name


def test_run_ids_sort_by_time_and_differ_by_parameters():
    import pandas as pd
    t = pd.Timestamp("2026-03-04 05:06:07", tz="UTC")
    a, b = reports.make_run_id({"x": 1}, t), reports.make_run_id({"x": 2}, t)
    assert a != b and a[:16] == b[:16] == "20260304T050607Z"
    assert reports.make_run_id({"x": 1}, t + pd.Timedelta("1s")) > max(a, b)
    assert reports.parse_params([("a", "1"), ("b", "1.5"), ("c", "false"), ("d", '["x"]'), ("e", "x")]) == \
        {"a": 1, "b": 1.5, "c": False, "d": ["x"], "e": "x"}


def test_a_template_crash_exits_1_with_a_failure_note(tmp_path):
    import nbformat
    from quantlab import cli
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("metrics_path = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("{}['missing']")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    path = tmp_path / "crash.ipynb"
    nbformat.write(nb, path)
    import contextlib, io
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["report", str(path), "--output-dir", str(tmp_path / "reports"), "--no-progress"])
    last = err.getvalue().strip().splitlines()[-1]
    assert code == 1 and last.startswith("quantlab: error: ReportFailed: KeyError: 'missing' (failure note: "), last
    note = Path(last.split("(failure note: ")[1].rstrip(")"))
    assert note.parent == tmp_path / "reports" / "crash" / "_failed" and (note / "report.ipynb").exists()
    assert reports.list_runs("crash", tmp_path / "reports") == []
