"""Reading the YAML files users write (recipes, search spaces, train configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wattwise.errors import ConfigError


def read_yaml(path: str | Path, what: str, missing_fix: str = "check the path") -> Any:
    """Parse a YAML file; a missing file or bad syntax raises a one-line ConfigError.

    `what` names the file in messages ("recipe file"); `missing_fix` is the fix offered when
    the file does not exist. Returns whatever the file holds (None for an empty file).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found; {missing_fix}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0]
        raise ConfigError(
            f"{what} {path} is not valid YAML ({first_line}); fix the syntax"
        ) from None
