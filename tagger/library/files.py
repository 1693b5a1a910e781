"""What counts as library audio, and finding it: one rule for the scan, the daemon and the batch job
(hidden files and folders, partial downloads and this tool's temp copies are never audio)."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tagger.fsutil import TEMP_MARK


def is_ignored_name(name: str) -> bool:
    """Hidden files, partial downloads, sync tools' temp files and this tool's own temp copies."""
    return (name.startswith(".") or name.startswith("~syncthing~") or TEMP_MARK in name
            or name.endswith((".part", ".tmp", ".crdownload", ".partial", ".!qB")))


def is_library_audio(name: str, extensions: frozenset[str]) -> bool:
    """A file name the library counts as audio: a configured extension and not an ignored name."""
    return not is_ignored_name(name) and os.path.splitext(name)[1].lower() in extensions


def discover(roots: Iterable[Path], extensions: frozenset[str], leftovers: list[Path] | None = None,
             unreadable: list[tuple[str, str]] | None = None) -> tuple[list[Path], list[Path]]:
    """(audio files under the roots, sorted; roots that are missing or not folders).

    Temp copies this tool left behind when killed mid-write are appended to ``leftovers``; folders that
    cannot be listed are appended to ``unreadable`` with the reason (never skipped silently).
    """

    def walk_error(exc: OSError) -> None:
        if unreadable is not None:
            unreadable.append((os.fsdecode(exc.filename or ""), f"cannot read folder: {exc.strerror or exc}"))
    files: list[Path] = []
    missing: list[Path] = []
    for root in roots:
        root = Path(os.path.abspath(root))
        if root.is_file():
            files.append(root)
            continue
        if not root.is_dir():
            missing.append(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root, onerror=walk_error):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if leftovers is not None and name.startswith(".") and TEMP_MARK in name and name.endswith(".tmp"):
                    leftovers.append(Path(dirpath) / name)
                if is_library_audio(name, extensions):
                    files.append(Path(dirpath) / name)
    return sorted(set(files)), missing


def holds_audio(root: Path, extensions: frozenset[str]) -> bool:
    """Whether a folder holds at least one audio file; stops at the first (an unmount check, not a listing)."""
    for _, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(is_library_audio(n, extensions) for n in filenames):
            return True
    return False
