"""Leaf file-system helpers every stage may use: one path key, atomic writes that survive a crash."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers and crashes see the old or the new content, nothing else."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def path_key(path: Path | str) -> str:
    """Records store paths as text; undecodable bytes survive via surrogateescape (os.fsdecode)."""
    return os.fsdecode(os.path.abspath(path))


TEMP_MARK = ".tagger-"
