"""The docs site builds offline, every notebook has a page, internal links resolve, and a browser draws it."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from quantlab.docs import build_docs, check_site

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs") / "_docs"
    # render without re-running the notebooks: nbdev_test runs them; show_doc pages are still generated
    return build_docs(out, REPO / "nbs", execute=False, engine="sphinx")


def test_every_notebook_has_a_page_and_links_resolve(site):
    problems = check_site(site, REPO / "nbs")
    assert problems == []
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    for nb in (REPO / "nbs").rglob("*.ipynb"):
        rel = nb.relative_to(REPO / "nbs")
        if any(part.startswith((".", "_")) for part in rel.parts): continue
        expected = "index.html" if rel.as_posix() == "index.ipynb" else rel.with_suffix(".html").as_posix()
        assert expected in pages


def test_api_pages_show_docs_for_exports(site):
    core = (site / "core.html").read_text(encoding="utf-8")
    # show_doc entries for exported names, with their documented arguments
    for name in ("DataError", "atomic_path", "session_closes", "Instrument", "fingerprint"):
        assert f"id=\"{name.lower()}\"" in core or f">{name}<" in core, name
    assert "the file the data came from" in core  # a docments comment rendered
    assert "#| export" not in core and "#| hide" not in core  # directives never leak into pages


def test_check_site_reports_broken_links(site, tmp_path):
    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    (broken / "core.html").write_text('<a href="nowhere.html">x</a><a href="index.html#no-such-anchor">y</a>', encoding="utf-8")
    problems = check_site(broken, REPO / "nbs")
    assert any("broken link nowhere.html" in p for p in problems)
    assert any("missing anchor index.html#no-such-anchor" in p for p in problems)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path: return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is required in CI for the rendered-page checks (.ci/run installs it)")
    pytest.skip("chromium not installed (apt-get install chromium); CI installs it and runs this check")


def screenshot(url: str, png: Path, height: int = 1200) -> Path:
    "Headless Chromium screenshot of `url` with the network switched off."
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
           f"--user-data-dir={tempfile.mkdtemp()}", "--hide-scrollbars", f"--window-size=1280,{height}",
           f"--screenshot={png}", url]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    return png


def test_index_renders_in_a_browser(site, tmp_path):
    from PIL import Image
    import numpy as np
    png = screenshot((site / "index.html").as_uri(), tmp_path / "index.png")
    img = np.asarray(Image.open(png).convert("L"))
    assert img.shape[0] >= 1000 and img.shape[1] == 1280
    dark = (img < 128).mean()  # text pixels
    assert 0.005 < dark < 0.5, f"page looks blank or broken: dark fraction {dark:.4f}"


def test_pages_leave_out_test_cells_and_let_wide_content_scroll(site):
    "nbdev_test runs the notebooks' test cells; the pages show the API and its examples, not assertions (#17 item 18)."
    page = (site / "data" / "05_store.html").read_text(encoding="utf-8")
    assert "BarStore" in page and "read_bars" in page
    assert "test_eq(" not in page and "test_fail(" not in page
    assert "quantlab.css" in page and "overflow-x: auto" in (site / "_static" / "quantlab.css").read_text()


def test_plotly_outputs_on_pages_are_thinned():
    "A 5,000-bar figure, as an executed notebook stores it, is redrawn from its thinned figure."
    import json
    import numpy as np
    import pandas as pd
    import plotly.graph_objects as go
    import plotly.io as pio
    from quantlab.docs import _clean_output
    x = pd.date_range("2000-01-03 21:00", periods=5000, freq="B", tz="UTC")
    fig = go.Figure([go.Scatter(x=x, y=np.random.default_rng(0).normal(size=5000).cumsum(), name=n) for n in "ab"])
    data = {"application/vnd.plotly.v1+json": json.loads(fig.to_json()), "text/html": pio.to_html(fig, include_plotlyjs=False, full_html=False)}
    out = _clean_output({"output_type": "display_data", "data": data, "metadata": {}})["data"]
    assert "Plotly.newPlot" in out["text/html"] and len(out["text/html"]) < len(data["text/html"]) / 2


def test_the_executed_walk_forward_page_is_light_and_its_chart_draws(tmp_path):
    """The executed walk-forward page was 4.9 MB: plotly's notebook mode stored plotly.js in an output, and the page
    carried it on top of the site's own copy (#17 item 18). Built executed, alone with the index, it is now light."""
    from PIL import Image
    import numpy as np
    nbs = tmp_path / "nbs"
    (nbs / "evaluate").mkdir(parents=True)
    shutil.copy(REPO / "nbs" / "index.ipynb", nbs)
    shutil.copy(REPO / "nbs" / "evaluate" / "01_walkforward.ipynb", nbs / "evaluate")
    shutil.copy(REPO / "settings.ini", tmp_path)
    site = build_docs(tmp_path / "_docs", nbs, execute=True, engine="sphinx")
    page = site / "evaluate" / "01_walkforward.html"
    html = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 500_000, page.stat().st_size
    assert "* plotly.js v" not in html and "_static/plotly.min.js" in html and "Plotly.newPlot" in html
    png = screenshot(page.as_uri(), tmp_path / "wf.png", height=6000)
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    colored = (np.abs(img[..., 0] - img[..., 2]) > 60).mean()  # the chart's coloured lines and bars (text is grey)
    assert colored > 0.0005, f"no chart drawn: coloured fraction {colored:.5f}"
