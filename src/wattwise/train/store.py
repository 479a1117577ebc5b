"""Where checkpoints live: one replica per store, a local directory or any fsspec URL.

Layout of a replica: `<root>/step-000000120/{model.safetensors, state.safetensors, state.json,
manifest.json}` plus `<root>/FENCE` (the newest lease epoch that has written here).

Durability: `LocalStore` writes each file under a temporary name, fsyncs it, renames it into
place and fsyncs the directory, so a crash leaves either the old file or the new one.
`FsspecStore` relies on the store's own atomic put (S3-compatible stores make an object visible
only once it is complete). In both, the manifest is written last: a checkpoint without a valid
manifest never counts.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Protocol

from wattwise.errors import WattwiseError

MANIFEST = "manifest.json"
FENCE = "FENCE"
NAME_PATTERN = re.compile(r"^step-(\d{9})$")


class CheckpointError(WattwiseError):
    """A checkpoint that cannot be written or read (disk full, replica unreachable, corrupt)."""


class ReplicaUnreachableError(CheckpointError):
    """A replica that cannot be written or read."""


class DiskFullError(CheckpointError):
    """A replica whose disk is full; the previous checkpoint is left intact."""


def checkpoint_name(step: int) -> str:
    """The directory name of the checkpoint for `step`."""
    return f"step-{step:09d}"


def step_of(name: str) -> int | None:
    """The step encoded in a checkpoint directory name, or None for other names."""
    match = NAME_PATTERN.match(name)
    return int(match.group(1)) if match else None


class CheckpointStore(Protocol):
    """One replica. Every method raises ReplicaUnreachableError or DiskFullError on failure."""

    url: str

    def write_file(self, name: str, filename: str, data: bytes) -> None:
        """Write one file of checkpoint `name` durably (temp name, fsync, rename)."""

    def remove_file(self, name: str, filename: str) -> None:
        """Remove one file if present (used to un-commit a checkpoint before rewriting it)."""

    def read_file(self, name: str, filename: str) -> bytes:
        """Read one file of checkpoint `name`."""

    def exists(self, name: str, filename: str) -> bool:
        """Whether checkpoint `name` has `filename` (a manifest present means committed)."""

    def list_checkpoints(self) -> list[str]:
        """Checkpoint directory names, newest step first."""

    def remove_checkpoint(self, name: str) -> None:
        """Delete a whole checkpoint directory."""

    def read_fence(self) -> int:
        """The newest lease epoch recorded here (0 when none)."""

    def write_fence(self, epoch: int) -> None:
        """Record a lease epoch; writers with an older epoch must stop."""


def _wrap_os_error(url: str, action: str, error: OSError) -> CheckpointError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"disk full on replica {url} while {action}; the previous committed checkpoint is "
            "intact; free space or lower checkpoint.keep_last"
        )
    return ReplicaUnreachableError(
        f"replica {url} failed while {action}: {error.strerror or error}; check that it is "
        "mounted/reachable and writable"
    )


class LocalStore:
    """A replica in a local directory, with fsync'd temp-then-rename writes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _dir(self, name: str) -> Path:
        return self.root / name

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_file(self, name: str, filename: str, data: bytes) -> None:
        directory = self._dir(name)
        tmp = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{filename}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                self._write_bytes(handle, data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, directory / filename)
            tmp = None
            self._fsync_dir(directory)
            self._fsync_dir(self.root)
        except OSError as error:
            raise _wrap_os_error(self.url, f"writing {name}/{filename}", error) from error
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def _write_bytes(self, handle, data: bytes) -> None:
        """The one raw write (a seam where tests make the disk run out of space)."""
        handle.write(data)

    def remove_file(self, name: str, filename: str) -> None:
        try:
            (self._dir(name) / filename).unlink(missing_ok=True)
        except OSError as error:
            raise _wrap_os_error(self.url, f"removing {name}/{filename}", error) from error

    def read_file(self, name: str, filename: str) -> bytes:
        try:
            return (self._dir(name) / filename).read_bytes()
        except OSError as error:
            raise _wrap_os_error(self.url, f"reading {name}/{filename}", error) from error

    def exists(self, name: str, filename: str) -> bool:
        return (self._dir(name) / filename).is_file()

    def list_checkpoints(self) -> list[str]:
        if not self.root.is_dir():
            return []
        try:
            names = [p.name for p in self.root.iterdir() if step_of(p.name) is not None]
        except OSError as error:
            raise _wrap_os_error(self.url, "listing checkpoints", error) from error
        return sorted(names, reverse=True)

    def remove_checkpoint(self, name: str) -> None:
        shutil.rmtree(self._dir(name), ignore_errors=True)

    def local_path(self, name: str) -> Path:
        """The directory of checkpoint `name` (for torch.distributed.checkpoint writers)."""
        return self._dir(name)

    def read_fence(self) -> int:
        try:
            return int((self.root / FENCE).read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as error:
            raise ReplicaUnreachableError(
                f"replica {self.url}: cannot read its FENCE file ({error}); check the replica"
            ) from error

    def write_fence(self, epoch: int) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _wrap_os_error(self.url, "creating the replica directory", error) from error
        self.write_file(".", FENCE, str(epoch).encode())


class FsspecStore:
    """A replica behind any fsspec URL (s3://, gcs://, ftp://, memory://, ...).

    Objects are written whole with `pipe_file`; object stores publish an object atomically, so
    the manifest-last rule alone decides what counts. S3 needs `s3fs` installed (not a hard
    dependency of wattwise).
    """

    def __init__(self, url: str, **storage_options) -> None:
        self.url = url.rstrip("/")
        self._storage_options = storage_options
        self._fs = None  # connected on first use: an unreachable replica fails a step, not start-up
        self.root = ""

    @property
    def fs(self):
        """The fsspec filesystem, connecting on first use."""
        if self._fs is None:
            import fsspec

            try:
                self._fs, self.root = fsspec.core.url_to_fs(self.url, **self._storage_options)
            except ImportError as error:
                raise ReplicaUnreachableError(
                    f"replica {self.url} needs an fsspec backend that is not installed "
                    f"({error}); e.g. `pip install s3fs` for s3://"
                ) from error
            except OSError as error:
                raise _wrap_os_error(self.url, "connecting", error) from error
        return self._fs

    def _path(self, *parts: str) -> str:
        self.fs  # noqa: B018 - resolves self.root on first use
        return "/".join([self.root.rstrip("/"), *[p for p in parts if p != "."]])

    def _call(self, action: str, method: str, *args):
        function = getattr(self.fs, method)  # connects (or raises ReplicaUnreachableError)
        try:
            return function(*args)
        except FileNotFoundError:
            raise
        except OSError as error:
            raise _wrap_os_error(self.url, action, error) from error
        except Exception as error:  # network clients raise their own types; re-raised as ours
            raise ReplicaUnreachableError(
                f"replica {self.url} failed while {action}: {error}; check that it is reachable"
            ) from error

    def write_file(self, name: str, filename: str, data: bytes) -> None:
        self._call(f"writing {name}/{filename}", "pipe_file", self._path(name, filename), data)

    def remove_file(self, name: str, filename: str) -> None:
        path = self._path(name, filename)
        if self._call("checking a file", "exists", path):
            self._call(f"removing {name}/{filename}", "rm_file", path)

    def read_file(self, name: str, filename: str) -> bytes:
        try:
            return self._call(f"reading {name}/{filename}", "cat_file", self._path(name, filename))
        except FileNotFoundError as error:
            raise ReplicaUnreachableError(
                f"replica {self.url}: {name}/{filename} missing"
            ) from error

    def exists(self, name: str, filename: str) -> bool:
        return bool(self._call("checking a file", "exists", self._path(name, filename)))

    def list_checkpoints(self) -> list[str]:
        try:
            entries = self._call("listing checkpoints", "ls", self.root, False)
        except FileNotFoundError:
            return []
        names = [str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries]
        return sorted((n for n in names if step_of(n) is not None), reverse=True)

    def remove_checkpoint(self, name: str) -> None:
        # Pruning is best effort: a leftover old checkpoint is harmless.
        with suppress(Exception):
            self.fs.rm(self._path(name), recursive=True)

    def read_fence(self) -> int:
        try:
            return int(self._call("reading FENCE", "cat_file", self._path(FENCE)).strip() or 0)
        except FileNotFoundError:
            return 0

    def write_fence(self, epoch: int) -> None:
        self.write_file(".", FENCE, str(epoch).encode())


def open_store(url: str) -> CheckpointStore:
    """A local directory (plain path or file://) or any other fsspec URL."""
    if "://" not in url:
        return LocalStore(url)
    if url.startswith("file://"):
        return LocalStore(url[len("file://") :])
    return FsspecStore(url)
