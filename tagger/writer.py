"""The one way this tool changes an audio file: copy, tag the copy, verify it, atomically replace.

Steps: refuse if the file changed since it was analysed or is read-only; copy it to a hidden temp file
in the same folder; write the tags to the copy; re-read them; decode the copy and the original and
require identical samples; keep mode and owner; check once more that the original did not change
meanwhile; fsync; rename over the original. Any failure leaves the original untouched.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from .decode import native_digest
from .errors import DecodeError, TagWriteError
from .store import fsync_dir
from .tagio import open_tags
from .tags import ALL_FIELDS, Change

TEMP_MARK = ".tagger-"


INFO_FIELDS = ("ARTIST", "ALBUM", "TITLE")


def read_fields(path: Path, *, id3_version: int = 4, v23_sep: str = "; ",
                names: tuple[str, ...] = ALL_FIELDS) -> dict[str, list[str]]:
    tf = open_tags(path, id3_version=id3_version, v23_sep=v23_sep)
    return {name: tf.get(name) for name in names}


def _expected(values: list[str], joined: bool, sep: str) -> list[str]:
    return [sep.join(values)] if joined and values else list(values)


def write_changes(path: Path, changes: list[Change], *, expect: tuple[int, int] | None,
                  id3_version: int = 4, v23_sep: str = "; ", audio_digest: str | None = None) -> os.stat_result:
    """Apply ``changes`` safely; returns the new stat.

    ``expect`` = (size, mtime_ns) seen at analysis; ``audio_digest`` = the native-audio digest taken
    during that analysis (saves decoding the original again; only valid together with ``expect``).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TagWriteError(path, f"cannot stat: {exc.strerror}") from None
    if expect is not None and (st.st_size, st.st_mtime_ns) != tuple(expect):
        raise TagWriteError(path, "file changed since it was analysed; left alone (the next scan picks it up)")
    if not changes:
        return st
    # Mode bits are checked too: as root os.access says yes to everything, but a file its owner marked
    # read-only is a clear "do not touch".
    if not os.access(path, os.W_OK) or not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise TagWriteError(path, "file is read-only; left alone")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise TagWriteError(path, "folder is not writable, so no safe temp copy can be made; left alone")
    try:
        before_audio = audio_digest if (audio_digest and expect is not None) else native_digest(path)
    except DecodeError as exc:
        raise TagWriteError(path, f"cannot verify audio before writing: {exc.reason}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:100]}{TEMP_MARK}", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(path, tmp)
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        if (st.st_uid, st.st_gid) != (os.stat(tmp).st_uid, os.stat(tmp).st_gid):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                raise TagWriteError(path, "cannot keep the file's owner on the rewritten copy; left alone") from None
        tf = open_tags(tmp, id3_version=id3_version, v23_sep=v23_sep)
        for ch in changes:
            tf.set(ch.field, ch.after)
        try:
            tf.save()
        except Exception as exc:
            raise TagWriteError(path, f"mutagen could not save tags ({type(exc).__name__}: {exc}); left alone") from None
        joined = tf.family == "id3" and id3_version == 3
        check = open_tags(tmp, id3_version=id3_version, v23_sep=v23_sep)
        for ch in changes:
            got = check.get(ch.field)
            if got != _expected(ch.after, joined, v23_sep):
                raise TagWriteError(path, f"verification failed: {ch.field} reads back {got!r}, expected {ch.after!r}; left alone")
        try:
            after_audio = native_digest(tmp)
        except DecodeError as exc:
            raise TagWriteError(path, f"tagged copy does not decode ({exc.reason}); left alone") from None
        if after_audio != before_audio:
            raise TagWriteError(path, "tagged copy decodes to different audio; left alone")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        now = os.stat(path)
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise TagWriteError(path, "file changed while its tags were being written; left alone")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return os.stat(path)
