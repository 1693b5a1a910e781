"""Every use of mutagen's private API, in one place, behind a version check.

mutagen has no public way to keep a file's bytes exact where it would rewrite them (an MP4's numeric ``gnre``
atom, the empty ``free`` atom it always adds, an ID3 tag's padding size). The tool uses its internals for
those three things only, here. They were verified on mutagen 1.47 and 1.48 (tests/tagging/test_readers.py and the
exact-bytes tests in tests/cli/test_first_contact.py); on any other version they are not used and the files are
written through the public API alone: still correct, only not byte-identical after an undo. A mutagen upgrade
therefore shows up in this module's tests, not in users' files.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import mutagen

from tagger.errors import TagWriteError

log = logging.getLogger(__name__)

TESTED = ((1, 47), (1, 48))  # mutagen (major, minor) versions whose internals these helpers were checked on
PRIVATE_OK = tuple(mutagen.version[:2]) in TESTED

T = TypeVar("T")


def mutagen_call(path: Path, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a mutagen call on ``path``; its errors (format-specific, OSError) become TagWriteError naming the
    file and what was being done, with the original error kept as ``__cause__``."""
    try:
        return fn(*args, **kwargs)
    except TagWriteError:
        raise
    except Exception as exc:  # mutagen raises its own error class per format
        raise TagWriteError(path, f"cannot {what} ({type(exc).__name__}: {exc})") from exc


def id3_padding(tags: Any) -> int:
    """The padding an ID3 tag was read with (0 when unknown or on an untested mutagen)."""
    return int(getattr(tags, "_padding", 0) or 0) if PRIVATE_OK else 0


def keep_unparsed_atom(tags: Any, name: str, data: list[bytes]) -> bool:
    """Give mutagen the data of an MP4 atom (one entry per copy) to write back byte for byte, as it does for
    atoms it could not parse."""
    if not PRIVATE_OK:
        return False
    tags._failed_atoms[name] = data
    return True


def mp4_ilst_padding(f: BinaryIO) -> Any:
    """The ``free`` atom after an MP4's ``ilst`` (None when there is none); KeyError when there is no ilst."""
    from mutagen.mp4 import Atoms, _find_padding

    return _find_padding(Atoms(f).path(b"moov", b"udta", b"meta", b"ilst")) if PRIVATE_OK else None


def mp4_drop_empty_free(f: BinaryIO) -> bool:
    """Remove an empty (8-byte) ``free`` atom after ``ilst`` with mutagen's own parent-size and chunk-offset
    updates; False when there is none or mutagen is untested. The safe write's packet comparison stands
    guard: a wrong offset changes the demuxed packets and the write is refused."""
    if not PRIVATE_OK:
        return False
    from mutagen._util import resize_bytes
    from mutagen.mp4 import Atoms, MP4Tags, _find_padding

    atoms = Atoms(f)
    ilst_path = atoms.path(b"moov", b"udta", b"meta", b"ilst")
    free = _find_padding(ilst_path)
    if free is None or free.length != 8:
        return False
    at = free.offset
    resize_bytes(f, 8, 0, at)
    helper: Any = MP4Tags()
    helper._MP4Tags__update_parents(f, ilst_path[:-1], -8)
    helper._MP4Tags__update_offsets(f, atoms, -8, at)
    return True


if not PRIVATE_OK:
    log.info("mutagen %s is not one this tool's exact-bytes helpers were checked on; files are written "
             "through its public API only", mutagen.version_string)
