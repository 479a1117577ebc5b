"""Run the installed `wattwise` console script as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WATTWISE = Path(sys.executable).parent / "wattwise"


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `wattwise ARGS` from the repo root; returns the completed process (text mode)."""
    return subprocess.run(
        [str(WATTWISE), *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )


def run_json(*args: str, timeout: float = 600):
    """Run a command with --json and parse stdout."""
    done = run_cli(*args, "--json", timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, one 'error:' line containing every fragment."""
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
