"""Durable file helpers: content hashes, fsync and atomic writes.

Every artifact writer (the Dagster IO manager, the serving manifest, training checkpoints, the
real-data runs' output files) goes through these, so "a reader sees the old file or the new
one, never part of one" is implemented once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

CHUNK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's content, read in chunks (artifacts can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Flush every file under `directory`, and the directory itself, to disk (before a rename)."""
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fsync_directory(directory)


TEMP_SUFFIX = ".tmp"
READABLE_BY_ALL = 0o644  # outputs other users and processes read (rankings, reports)


def write_atomically(path: Path, data: bytes, prefix: str = ".tmp-", mode: int | None = None) -> Path:
    """Write `data` to `path` so readers see the old file or the new one, never part of one.

    The file is created owner-only (mkstemp's 0600) unless `mode` says otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TEMP_SUFFIX)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def write_text_atomically(path: Path, text: str, prefix: str = ".tmp-", mode: int | None = None) -> Path:
    """`write_atomically` for text (UTF-8)."""
    return write_atomically(path, text.encode("utf-8"), prefix=prefix, mode=mode)
