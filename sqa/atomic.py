"""Atomic file writes: write to a temporary name in the same folder, then rename.

A reader never sees a half-written file, and an interrupted job leaves either the old file or
nothing, never a truncated one. Only a regular file (or nothing) is ever replaced: a symlink, a
device, a FIFO or a folder at the destination is refused (:class:`DestinationError`), so writing
``/dev/null`` or a link never turns it into a regular file. :func:`check_destination` runs the same
checks (and proves the folder writable) before a long job starts, so no work is lost to an
unwritable output.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator


def remove_stale(folder: Path | str) -> int:
    """Delete the temporary files (``.<name>.*.tmp*``) that writes into ``folder`` and its
    subfolders left behind when their process was killed; returns how many. Call it only while
    no other process writes there."""
    stale = [p for p in Path(folder).rglob(".*.tmp*") if p.is_file()]
    for p in stale:
        p.unlink()
    return len(stale)


class DestinationError(OSError):
    """An output path that must not or cannot be written; the message names it and why."""


def _refuse_non_regular(path: Path) -> None:
    """Raise unless ``path`` is missing or a regular file (a symlink is refused, not followed)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError as err:
        raise DestinationError(f"{path}: cannot write there (a parent is not a folder)") from err
    except OSError as err:
        raise DestinationError(f"{path}: cannot inspect the output path ({err.strerror})") from err
    if stat.S_ISREG(mode):
        return
    kind = ("a symlink" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise DestinationError(f"{path} is {kind}; refusing to replace it (only a regular file or a new path "
                           "can be written)")


def check_destination(path: Path | str) -> Path:
    """Fail now, before any work, if ``path`` could not be written atomically: it exists and is not
    a regular file, its folder is not a folder, or a file cannot be created there (tried for real,
    so read-only file systems and missing permissions are caught, also for root). Creates missing
    parent folders, as the write would."""
    path = Path(path)
    _refuse_non_regular(path)
    os.unlink(_temp_beside(path, ".tmp-probe"))
    return path


def _temp_beside(path: Path, suffix: str) -> Path:
    """A new empty file in ``path``'s folder (created if missing), or a :class:`DestinationError`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        why = "a parent is not a folder" if err.errno in (errno.ENOTDIR, errno.EEXIST) else err.strerror
        raise DestinationError(f"{path}: cannot write there ({why})") from err
    os.close(fd)
    return Path(tmp)


def partial_path(path: Path | str) -> Path:
    """Where :func:`atomic_path` with ``keep_partial`` leaves what was written when the block
    failed: ``scores.csv`` -> ``scores.partial.csv``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: Path | str, keep_partial: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    Refuses (:class:`DestinationError`) a destination that exists and is not a regular file, before
    and again right before the rename. ``keep_partial``: if the block fails, whatever it wrote is
    kept at :func:`partial_path` (``path`` itself is left as it was) instead of being deleted.
    """
    path = Path(path)
    _refuse_non_regular(path)
    tmp_path = _temp_beside(path, ".tmp" + path.suffix)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        _refuse_non_regular(path)
        os.replace(tmp_path, path)
    except BaseException:
        if keep_partial and tmp_path.is_file() and tmp_path.stat().st_size:
            os.chmod(tmp_path, 0o666 & ~_umask())
            with contextlib.suppress(OSError):
                _refuse_non_regular(partial_path(path))
                os.replace(tmp_path, partial_path(path))
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path | str, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path | str, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_line(path: Path | str, line: str) -> None:
    """Append one line with a single ``write`` on an ``O_APPEND`` descriptor (no torn lines)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: Path | str) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; rename it onto ``path`` if the block succeeds
    (``path`` must not exist yet)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
