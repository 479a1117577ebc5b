"""The run's event log: one JSON object per line in `<run_dir>/events.jsonl`.

Primary and standby append to the same file (each line is one `write` on an O_APPEND file, so
lines from two processes never interleave). Every line carries the wall-clock time, pid, role and
lease epoch; steps carry loss, seconds and energy with its source; checkpoints carry the stall and
the replication lag. Tests and benches read it back; a person can `tail -f` it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class Journal:
    """Appends events to a JSONL file; lines are flushed at once (a SIGKILL loses none)."""

    def __init__(self, path: Path, role: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.role = role
        self.epoch = 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, event: str, **fields: Any) -> None:
        """Append one event."""
        record = {
            "event": event,
            "unix": time.time(),
            "pid": os.getpid(),
            "role": self.role,
            "epoch": self.epoch,
            **fields,
        }
        os.write(self._fd, (json.dumps(record, default=str) + "\n").encode())

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


class JournalReader:
    """Reads a growing journal incrementally: each `events()` call parses only the new lines."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._events: list[dict[str, Any]] = []

    def events(self) -> list[dict[str, Any]]:
        """Every complete event so far (a line cut by a crash is ignored)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return self._events
        complete = data[: data.rfind(b"\n") + 1]  # a half-written last line waits for its end
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                self._events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return self._events


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete event line of a journal (a line cut by a crash is ignored)."""
    return list(JournalReader(path).events())
