"""The import direction of ../shared/ARCHITECTURE.md, checked by parsing the exported modules with ast.

Every module of quantlab/ belongs to a layer; a module may import only from lower layers or from its own
layer. A new module must be given its layer here, so a wrong arrow (or an unplaced module) fails CI.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "quantlab"

# layer rank: lower layers never import higher ones
LAYERS = {
    "core": 0,
    # data
    "schema": 1, "loaders": 1, "validate": 1, "corporate": 1, "store": 1, "aggregate": 1, "samples": 1,
    # research
    "indicators": 2, "factors": 2, "labels": 2, "guard": 2, "orders": 2, "factor_eval": 3, "models": 3,
    # trading pipeline (identical in backtest and live)
    "portfolio": 3, "strategy": 4, "risk": 4, "oms": 5, "brokers": 6, "engine": 6,
    # backtesting
    "backtest": 7, "vector": 7, "btbridge": 8, "strategies": 8,
    # evaluation
    "metrics": 7, "executor": 7, "walkforward": 9, "robustness": 9, "overfit": 9, "sweep": 10,
    # outputs and entry points
    "plots": 10, "reports": 11, "live": 11, "ibbroker": 7, "docs": 12, "cli": 12,
}
GENERATED = {"_modidx", "__init__"}
BROKER_SDKS = {"ib_async", "ib_insync"}


def _modules():
    return sorted(p for p in PKG.glob("*.py") if p.stem not in GENERATED)


def _quantlab_imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: from .store import BarStore / from . import store
                if node.module: yield node.lineno, "quantlab." + node.module
                else:
                    for alias in node.names: yield node.lineno, "quantlab." + alias.name
            elif node.module:
                if node.module == "quantlab":
                    for alias in node.names: yield node.lineno, "quantlab." + alias.name
                else:
                    yield node.lineno, node.module


def test_every_module_has_a_layer():
    unplaced = [p.stem for p in _modules() if p.stem not in LAYERS]
    assert not unplaced, f"give these modules a layer in tests/test_architecture.py: {unplaced}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.stem)
def test_imports_point_down(path):
    mine = LAYERS.get(path.stem)
    if mine is None: pytest.fail(f"{path.stem} has no layer")
    bad = []
    for line, name in _quantlab_imports(path):
        parts = name.split(".")
        if parts[0] == "quantlab" and len(parts) > 1:
            theirs = LAYERS.get(parts[1])
            if theirs is None or theirs > mine:
                bad.append(f"line {line}: {path.stem} (layer {mine}) imports {name} (layer {theirs})")
        if parts[0] in BROKER_SDKS and path.stem != "ibbroker":
            bad.append(f"line {line}: broker SDK {name} imported outside quantlab/ibbroker.py")
    assert not bad, "\n".join(bad)


def test_layer_check_catches_a_wrong_arrow(tmp_path):
    # the checker itself must see a violation when one is there
    fake = tmp_path / "core.py"
    fake.write_text("from quantlab.store import BarStore\nfrom .cli import main\nimport ib_async\n")
    found = [name for _, name in _quantlab_imports(fake)]
    assert found == ["quantlab.store", "quantlab.cli", "ib_async"]
    assert LAYERS["store"] > LAYERS["core"] and LAYERS["cli"] > LAYERS["core"]


def test_package_import_is_light():
    code = "import sys, quantlab; heavy = {'pandas', 'numpy', 'duckdb', 'ib_async', 'ib_insync'} & set(sys.modules); print(sorted(heavy))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing quantlab pulled in heavy modules: {out}"
