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


def run_json(*args: str, timeout: float = 600, in_process: bool = False):
    """Run a command with --json and parse stdout (`in_process`: through `run_in_process`)."""
    done = (
        run_in_process(*args, "--json") if in_process else run_cli(*args, "--json", timeout=timeout)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, no traceback, one 'error:' line containing every fragment."""
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_in_process(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run `wattwise ARGS` through `wattwise.cli.main` in this process (no 3-5 s start-up).

    Same code path as the console script; stdout/stderr captured; returns a CompletedProcess.
    """
    import contextlib
    import io
    import os

    from wattwise.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, cwd_before = sys.argv, os.getcwd()
    quiet_before = os.environ.get("WATTWISE_QUIET")
    code = 0
    try:
        os.chdir(cwd)
        sys.argv = ["wattwise", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as done:
                code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(cwd_before)
        if quiet_before is None:
            os.environ.pop("WATTWISE_QUIET", None)
        else:
            os.environ["WATTWISE_QUIET"] = quiet_before
    return subprocess.CompletedProcess(["wattwise", *args], code, out.getvalue(), err.getvalue())
