"""The import direction of ../shared/ARCHITECTURE.md, checked by parsing the exported modules with ast.

The package is laid out by layer, one subpackage each. A module may import only from its own layer or a lower
one; `backtest` and `live` never import each other (both drive the same `trading` step); a broker SDK is
imported only inside its adapter module. A new subpackage or top-level module must be given its layer here,
so a wrong arrow (or an unplaced module) fails CI. Imports inside functions count as much as those at the top.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "quantlab"

# layer rank by the module's first name under quantlab (a subpackage or a top-level module)
LAYERS = {
    "core": 0,
    "data": 1,
    "research": 2,  # indicators, factors, guard, labels, factor evaluation, models, return metrics
    "trading": 3,  # the pipeline backtest and live share: orders, portfolio, strategy, risk, OMS, step, brokers
    "backtest": 4, "live": 4,  # the two drivers of the trading step: siblings that never import each other
    "strategies": 5,  # example strategies (their vectorised twins use backtest.vector)
    "evaluate": 6,
    "reports": 7,
    "docs": 8, "cli": 8,
}
SIBLINGS = {("backtest", "live"), ("live", "backtest")}
GENERATED = {"_modidx", "__init__"}
BROKER_SDKS = {"ib_async", "ib_insync"}
ADAPTERS = {"trading/brokers/ib.py"}  # the only modules that may import a broker SDK


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if p.stem not in GENERATED)


def _layer_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    "The dotted module a relative `from` import names, resolved against the module's package."
    package = ["quantlab", *path.relative_to(PKG).parent.parts]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _quantlab_imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names: yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(path, node) if node.level else node.module
            if module == "quantlab":  # from quantlab import cli: the names are modules
                for alias in node.names: yield node.lineno, f"quantlab.{alias.name}"
            elif module: yield node.lineno, module


def _violations(path: Path) -> list[str]:
    mine = _layer_of(path)
    rank = LAYERS.get(mine)
    bad = []
    for line, name in _quantlab_imports(path):
        parts = name.split(".")
        if parts[0] == "quantlab" and len(parts) > 1 and parts[1] not in GENERATED:
            theirs = parts[1]
            if LAYERS.get(theirs) is None or LAYERS[theirs] > rank or (mine, theirs) in SIBLINGS:
                bad.append(f"line {line}: {mine} (layer {rank}) imports {name} ({theirs}, layer {LAYERS.get(theirs)})")
        if parts[0] in BROKER_SDKS and path.relative_to(PKG).as_posix() not in ADAPTERS:
            bad.append(f"line {line}: broker SDK {name} imported outside its adapter module {sorted(ADAPTERS)}")
    return bad


def test_every_module_has_a_layer():
    unplaced = sorted({_layer_of(p) for p in _modules()} - set(LAYERS))
    assert not unplaced, f"give these subpackages or modules a layer in tests/test_architecture.py: {unplaced}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PKG).as_posix())
def test_imports_point_down(path):
    bad = _violations(path)
    assert not bad, "\n".join(bad)


def test_layer_check_catches_a_wrong_arrow(tmp_path, monkeypatch):
    # the checker itself must see each kind of violation when one is there
    fake_pkg = tmp_path / "quantlab"
    (fake_pkg / "trading").mkdir(parents=True)
    (fake_pkg / "backtest").mkdir()
    up = fake_pkg / "trading" / "step.py"
    up.write_text("from ..backtest.driver import run_backtest\nfrom .orders import Order\nimport ib_async\n"
                  "def later():\n    from quantlab.evaluate import sweep\n")
    sideways = fake_pkg / "backtest" / "driver.py"
    sideways.write_text("from ..live.runner import Runner\nfrom ..trading.engine import Engine\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake_pkg)
    assert [n for _, n in _quantlab_imports(up)] == ["quantlab.backtest.driver", "quantlab.trading.orders", "ib_async",
                                                     "quantlab.evaluate"]
    found = _violations(up)
    assert len(found) == 3 and "backtest" in found[0] and "ib_async" in found[1] and "evaluate" in found[2]
    found = _violations(sideways)
    assert len(found) == 1 and "quantlab.live.runner" in found[0]


def test_the_layers_are_the_package_folders():
    # every layer named here exists as a subpackage or module (a stale entry would hide an unplaced module)
    present = {_layer_of(p) for p in _modules()}
    assert present <= set(LAYERS) and {"core", "data", "research", "trading", "backtest", "evaluate", "reports"} <= present


def test_package_import_is_light():
    code = "import sys, quantlab; heavy = {'pandas', 'numpy', 'duckdb', 'ib_async', 'ib_insync'} & set(sys.modules); print(sorted(heavy))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing quantlab pulled in heavy modules: {out}"
