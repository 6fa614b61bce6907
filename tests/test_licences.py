"""Licences a fund can adopt: the runtime dependency closure of quantlab (what `pip install quantlab` pulls in, read
from the installed metadata with importlib.metadata) holds no copyleft licence; copyleft packages live only behind an
extra, each named in THIRD_PARTY.md."""
import re
from importlib import metadata
from pathlib import Path

import pytest

from licences import WHERE, _installed, closure, copyleft, licence

REPO = Path(__file__).resolve().parents[1]


def test_the_licence_reader_tells_copyleft_from_permissive():
    assert copyleft("GNU Affero General Public License v3") and copyleft("GPL-3.0-or-later") and copyleft("GNU General Public License v3 (GPLv3)")
    assert not copyleft("GNU Lesser General Public License v3 (LGPLv3)") and not copyleft("LGPL-2.1-or-later")
    assert not copyleft("BSD-3-Clause") and not copyleft("Apache-2.0") and not copyleft("GPL-2.0-or-later WITH Classpath-exception-2.0")
    assert copyleft(licence(metadata.distribution("backtrader"))) and copyleft(licence(metadata.distribution("backtesting")))  # (make installs both extras)


def test_the_runtime_requirements_pull_in_no_copyleft_licence():
    deps = closure("quantlab")
    assert {"numpy", "pandas", "arch", "prometheus-client"} <= set(deps), "quantlab is not installed with its requirements"
    bad = {n: (licence(metadata.distribution(n)), p) for n, p in deps.items() if _installed(n) and copyleft(licence(metadata.distribution(n)))}
    assert not bad, "; ".join(f"{n} ({lic}) is pulled in at runtime through {' -> '.join(p)}: move it behind an extra "
                              f"(it belongs in {WHERE.get(n, 'a new one')!r})" for n, (lic, p) in bad.items())


@pytest.mark.parametrize("extra", ["samples", "backtrader"])
def test_copyleft_lives_only_in_its_extra_and_is_documented(extra):
    runtime = set(closure("quantlab"))
    extra_deps = set(closure("quantlab", (extra,))) - runtime
    bad = sorted(n for n in extra_deps if _installed(n) and copyleft(licence(metadata.distribution(n))))
    assert bad and all(WHERE.get(n) == extra for n in bad), bad
    third = (REPO / "THIRD_PARTY.md").read_text()
    for n in bad: assert re.search(rf"\|\s*`?{n}`?\s*\|.*\|\s*`?{extra}`?\s*\|", third, re.I), f"THIRD_PARTY.md does not list {n} under {extra}"


def test_licence_files_exist():
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()
    assert "license = apache2" in (REPO / "settings.ini").read_text()

