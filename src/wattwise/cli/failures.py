"""How the CLI ends on an error: one line on stderr, never a traceback on the terminal.

- A `WattwiseError` (bad input, the user's model or data failing): its message, exit 2 (3 for
  "nothing within budget").
- An OS error on a path the user named (unwritable output, missing file): one line, exit 2.
- Anything else is our bug: one line naming a log file that holds the traceback, exit 1.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import traceback
from pathlib import Path

BUG_EXIT_CODE = 1
BAD_INPUT_EXIT_CODE = 2


def os_error_line(error: OSError) -> str:
    """'cannot write /x/y: Permission denied; choose a path you can write' style line."""
    target = error.filename or "a file"
    reason = error.strerror or str(error)
    return f"{target}: {reason}; check the path exists and that you may read/write it"


def log_directory() -> Path:
    """Where tracebacks of unexpected errors go: the cache's logs/, else the temp dir."""
    try:
        from wattwise.paths import cache_dir

        directory = cache_dir() / "logs"
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    except OSError:
        return Path(tempfile.gettempdir())


def write_traceback_log(error: BaseException) -> Path:
    """Write the full traceback and the command line to a new log file; returns its path."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    fd, name = tempfile.mkstemp(prefix=f"error-{stamp}-", suffix=".log", dir=log_directory())
    with os.fdopen(fd, "w") as handle:
        handle.write("command: " + " ".join(sys.argv) + "\n\n")
        handle.write("".join(traceback.format_exception(error)))
    return Path(name)


def report_unexpected(error: BaseException) -> int:
    """Print one line for an unexpected error and return the exit code to use."""
    if isinstance(error, OSError) and error.filename:
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        return BAD_INPUT_EXIT_CODE
    summary = str(error).strip().splitlines()
    detail = f"{type(error).__name__}: {summary[0]}" if summary else type(error).__name__
    try:
        log = write_traceback_log(error)
        where = f"the traceback is in {log}"
    except OSError:
        where = "the traceback could not be written to a log file"
    print(
        f"error: internal error ({detail}); {where}; please report it with that file",
        file=sys.stderr,
    )
    return BUG_EXIT_CODE
