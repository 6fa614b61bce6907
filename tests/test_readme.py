"""The README's tour, run as a newcomer runs it: every shell command and Python block between "## A five-minute tour"
and the next section, in order, in a fresh temporary directory (its ./data is the store, its ./reports the reports).
The commands are read from README.md itself, so the two cannot drift. What the test changes, and why:

- lines that read `../shared/data` (or the store they fill, `data/wiki`) run in a test of their own, which skips with
  the reason when that data is absent;
- `quantlab live fake-tws` is started in the background and shut down at the end; the control port it prints
  replaces `CONTROL_PORT`;
- the fixed ports (7497 for the fake TWS, 8765 for the dashboard) become free ones, and /tmp/fake-tws a temporary
  directory, so that parallel tests cannot collide;
- a TOML block whose first line is `# NAME: ...` is written to NAME.

Every command must exit 0 (`quantlab promote` may exit 1: a gate not passed is a result, printed gate by gate) and
print no traceback, BrokenPipeError included (`| head`)."""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, shared_data_dir

README = REPO / "README.md"
MAY_EXIT_1 = ("quantlab promote ",)


def tour_steps() -> list[tuple[str, str]]:
    "(kind, text) in README order: kind 'sh' (one command: continuations joined, comments dropped), 'python' or 'toml'."
    tour = README.read_text(encoding="utf-8").split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    steps = []
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", tour, re.S):
        if lang != "sh":
            steps.append((lang, body)); continue
        for line in re.sub(r"\\\n\s*", "", body).splitlines():
            cmd = re.split(r"\s{2,}#", line)[0].strip()
            if cmd and not cmd.startswith("#"): steps.append(("sh", cmd))
    return steps


def _shared(text: str) -> bool: return "../shared/data" in text or "data/wiki" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


class Tour:
    "Runs the steps in one directory, with the substitutions above."

    def __init__(self, root: Path):
        self.root, self.fake, self.subs = root, None, {"7497": str(_free_port()), "8765": str(_free_port()),
                                                      "/tmp/fake-tws": str(root / "fake-tws"), "../shared/data": str(shared_data_dir())}
        self.env = {k: v for k, v in os.environ.items() if k not in ("QUANTLAB_DATA_DIR", "QUANTLAB_REPORTS_DIR")}
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    def text(self, s: str) -> str:
        for a, b in self.subs.items(): s = s.replace(a, b)
        return s

    def run(self, kind: str, body: str) -> None:
        if kind == "toml":
            name = re.match(r"#\s*([\w.-]+\.toml):", body).group(1)
            (self.root / name).write_text(body, encoding="utf-8"); return
        if kind == "python":
            self._check(body[:60], subprocess.run([sys.executable, "-c", body], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=600))
            return
        cmd = self.text(body)
        if cmd.startswith("quantlab live fake-tws"):
            self.fake = subprocess.Popen(cmd.split(), cwd=self.root, env=self.env, stdout=subprocess.PIPE, text=True)
            self.subs["CONTROL_PORT"] = str(json.loads(self.fake.stdout.readline())["control_port"]); return
        done = subprocess.run(["bash", "-c", cmd], cwd=self.root, env=self.env, capture_output=True, text=True, timeout=900)
        self._check(body, done, allowed=(0, 1) if body.startswith(MAY_EXIT_1) else (0,))

    @staticmethod
    def _check(what: str, done, allowed=(0,)) -> None:
        assert done.returncode in allowed, f"{what}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        for bad in ("Traceback", "BrokenPipeError"):
            assert bad not in done.stderr, f"{what}\n{done.stderr[-3000:]}"

    def close(self) -> None:
        if self.fake is None: return
        from quantlab.live.fake_tws import FakeControl
        with FakeControl(int(self.subs["CONTROL_PORT"])) as ctl: ctl.call("shutdown")
        self.fake.wait(30); self.fake.stdout.close()


def test_the_tour_has_the_steps_a_newcomer_reads():
    steps = tour_steps()
    kinds = [k for k, _ in steps]
    assert kinds.count("python") == 1 and kinds.count("toml") == 1 and kinds.count("sh") >= 25
    cmds = [t for k, t in steps if k == "sh"]
    assert cmds[0] == "quantlab data samples --ingest" and any(c.startswith("quantlab live fake-tws") for c in cmds)
    assert all(c.startswith("quantlab ") for c in cmds), [c for c in cmds if not c.startswith("quantlab ")]


def test_the_readme_tour_runs(tmp_path):
    tour = Tour(tmp_path)
    try:
        for kind, body in tour_steps():
            if not _shared(body): tour.run(kind, body)
    finally:
        tour.close()
    assert (tmp_path / "data" / "manifest.json").exists() and list((tmp_path / "reports" / "backtest").glob("*/report.html"))
    assert (tmp_path / "data" / "live" / "spx-paper" / "journal.sqlite").exists()


def test_the_readme_lines_on_the_shared_vendor_files(tmp_path, shared_data):
    "The Quandl WIKI lines: AAPL's 7:1 split, adjusted, and not yet known the day before it was announced."
    tour = Tour(tmp_path)
    lines = [b for k, b in tour_steps() if k == "sh" and _shared(b)]
    assert len(lines) == 3
    for line in lines: tour.run("sh", line)
    out = subprocess.run(["bash", "-c", tour.text(lines[1]) + " --json"], cwd=tmp_path, env=tour.env, capture_output=True, text=True)
    closes = [r["close"] for r in json.loads(out.stdout)]
    assert len(closes) == 3 and all(85 < c < 95 for c in closes)  # ~92: split-adjusted
    out = subprocess.run(["bash", "-c", tour.text(lines[2]) + " --json"], cwd=tmp_path, env=tour.env, capture_output=True, text=True)
    assert all(600 < r["close"] < 660 for r in json.loads(out.stdout))  # ~645: the split was not known yet
