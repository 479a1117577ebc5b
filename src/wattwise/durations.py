"""Durations written by people: '30s', '2m', '500ms', '2h' or a bare number of seconds."""

from __future__ import annotations

import re

from wattwise.errors import ConfigError

DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")


def parse_duration(text: str | float, option: str = "duration") -> float:
    """'30s', '2m', '500ms', '2h' or a number of seconds → seconds (> 0); errors name `option`."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = DURATION_PATTERN.match(text)
        if not match:
            raise ConfigError(f"bad {option} {text!r}: use e.g. 30s, 2m, 2h or 500ms")
        value, unit = float(match.group(1)), match.group(2) or "s"
        seconds = value * {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[unit]
    if seconds <= 0:
        raise ConfigError(f"{option} must be > 0, got {text!r}")
    return seconds
