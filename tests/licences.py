"""Licence checks on installed metadata (importlib.metadata), shared by tests/test_licences.py and run as a script inside
another environment by tests/test_lock.py (so it imports nothing outside the standard library and `packaging`)."""
import re
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

_COPYLEFT = re.compile(r"\bA?GPL|GNU (Affero )?General Public|Affero|\bSSPL|\bEUPL|\bOSL-", re.I)
_LESSER = re.compile(r"\bLGPL|Lesser General Public|Library General Public", re.I)
_EXCEPTION = re.compile(r"\bWITH\b.*exception|linking exception", re.I)  # e.g. GPL-2.0 WITH Classpath-exception-2.0: linking is free
WHERE = {"backtesting": "samples", "backtrader": "backtrader"}  # the extra each known copyleft package belongs in


def licence(dist) -> str:
    "The licence a distribution declares: License-Expression, else License (first line), else its classifiers."
    m = dist.metadata
    classifiers = [c.split(" :: ")[-1] for c in (m.get_all("Classifier") or []) if c.startswith("License ::")]
    text = m.get("License-Expression") or (m.get("License") or "").strip().splitlines()[0:1]
    text = text if isinstance(text, str) else (text[0] if text else "")
    return "; ".join(x for x in [text[:120], *classifiers] if x) or "UNKNOWN"


def copyleft(text: str) -> bool:
    "GPL, AGPL, SSPL, EUPL, OSL, but not LGPL or a GPL with a linking exception."
    return not _EXCEPTION.search(text) and bool(_COPYLEFT.search(_LESSER.sub("", text)))


def closure(root: str, extras: tuple = ()) -> dict[str, list[str]]:
    "Every distribution `root` (with `extras`) requires, transitively, on this interpreter: name -> the path that pulls it in."
    seen, todo = {}, [(root, tuple(extras), [root])]
    while todo:
        name, ex, path = todo.pop()
        try: dist = metadata.distribution(name)
        except metadata.PackageNotFoundError: continue
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (ex or ("",))): continue
            key = canonicalize_name(req.name)
            if key in seen: continue
            seen[key] = path + [req.name]
            todo.append((req.name, tuple(req.extras), path + [req.name]))
    return seen


def _installed(name):
    try: metadata.distribution(name); return True
    except metadata.PackageNotFoundError: return False



if __name__ == "__main__":  # the runtime closure of the environment this runs in
    bad = {n: licence(metadata.distribution(n)) for n in closure("quantlab") if _installed(n) and copyleft(licence(metadata.distribution(n)))}
    print("no copyleft" if not bad else repr(bad))
    sys.exit(1 if bad else 0)
