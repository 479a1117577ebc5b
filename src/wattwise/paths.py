"""Where wattwise keeps its cache, and atomic file writing."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from wattwise.errors import OutputPathError


def _default_mode(directory: bool) -> int:
    """Permissions a normal open()/mkdir() would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def cache_dir() -> Path:
    """`WATTWISE_CACHE`, else `$XDG_CACHE_HOME/wattwise`, else `~/.cache/wattwise` (created)."""
    root = os.environ.get("WATTWISE_CACHE")
    if root:
        path = Path(root)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "wattwise"
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode(directory=False))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed and check it can be written; raise OutputPathError otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(
            f"cannot create output directory {path}: {error.strerror}; choose a writable path"
        ) from error
    if not os.access(path, os.W_OK):
        raise OutputPathError(f"output directory {path} is not writable; choose a writable path")
    return path


def check_creatable_dir(path: Path) -> Path:
    """Raise OutputPathError unless `path` is, or can become, a writable directory.

    Creates nothing, so a command can check its output path before long work and still leave
    nothing behind when it then fails on other input.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputPathError(
            f"cannot create output directory {path}: {existing} is a file; choose another path"
        )
    # A real probe, not os.access: root passes os.access everywhere, yet cannot write /proc or
    # a read-only mount. The probe directory is removed at once.
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".wattwise-probe-"))
    except OSError as error:
        raise OutputPathError(
            f"cannot create output directory {path}: {error.strerror} in {existing}; "
            "choose a writable path"
        ) from error
    return path


@contextmanager
def atomic_directory(target: Path, overwrite: bool = True):
    """Yield a temp directory beside `target`; on success it replaces `target` by rename.

    On any error the temp directory is removed and `target` is left as it was.
    """
    target = Path(target)
    parent = ensure_writable_dir(target.parent if str(target.parent) else Path("."))
    if target.exists() and not overwrite:
        raise OutputPathError(f"{target} exists; remove it or pass a new output path")
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"{target} exists and is not a directory; choose another path")
    try:
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp"))
    except OSError as error:
        raise OutputPathError(
            f"cannot write {target}: {error.strerror}; choose a writable path"
        ) from error
    os.chmod(staging, _default_mode(directory=True))
    try:
        yield staging
        if target.exists():
            trash = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".old"))
            os.replace(target, trash / "old")
            os.replace(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
