"""The one way this tool changes an audio file: copy, tag the copy, verify it, atomically replace.

Steps: refuse if the file changed since it was analysed or is read-only; copy it to a hidden temp file
in the same folder; write the tags to the copy; re-read them; require the copy's audio to be the
original's: the demuxed audio packets (codec parameters, every packet's bytes and timestamps) must be
identical, which proves the decoder gets the same input without decoding anything; where a file cannot
be demuxed, both are decoded and the samples compared instead; keep mode and owner; check once more that the original is still the same file
(inode, ctime, size, mtime and a sample of its bytes: a user may replace a file with another of the same
size and mtime); fsync; rename over the original. Any failure leaves the original untouched, and every
operating-system error (a full disk, a name too long) becomes this file's TagWriteError, never a crash.

Links: a symbolic link is followed and its target is tagged in place (the link stays a link), but a scan
never changes a target outside its library folders (the library root is the boundary). A file with several
hard links is refused: the rename would split it from its other names.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tagger.analysis.decode import check_complete
from tagger.analysis.digests import native_digest, packet_digest
from tagger.analysis.formats import sniff
from tagger.errors import DecodeError, TagWriteError
from tagger.fsutil import TEMP_MARK, fsync_dir
from tagger.tagging.plan import PADDING, Change, all_tags
from tagger.tagging.tagio import open_tags


def read_fields(path: Path, *, id3_version: int = 4, v23_sep: str = "; ",
                names: tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """The values of ``names`` (default: every tag the tool plans with) as the file holds them."""
    tf = open_tags(path, id3_version=id3_version, v23_sep=v23_sep)
    return {name: tf.get(name) for name in (names if names is not None else all_tags())}


def _temp_prefix(name: str, limit: int = 100) -> str:
    """A temp-file prefix from the file name, cut to ``limit`` bytes (not characters): names are limited
    to 255 bytes, and 100 multibyte characters can be 400."""
    raw = os.fsencode(name)[:limit]
    try:
        os.fsencode(name).decode("utf-8")
        cut = raw.decode("utf-8", "ignore")  # drop a character split by the cut
    except UnicodeDecodeError:
        cut = os.fsdecode(raw)  # not UTF-8 on disk: keep the bytes as they are
    return f".{cut}{TEMP_MARK}"


SAMPLE = 1 << 16


def content_sample(path: Path) -> bytes:
    """The first and last 64 KB: a cheap check that a file still holds the bytes it held."""
    with open(path, "rb") as f:
        head = f.read(SAMPLE)
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(size - SAMPLE, 0))
        return head + f.read(SAMPLE)


def _with_padding_record(tf, changes: list[Change]) -> list[Change]:
    """On the tool's first write to a file, note the file's padding in TAGGER_PADDING: undo restores it, so a
    file the tool wrote to and then undid is byte for byte what it was (mutagen would otherwise leave the
    padding it chose)."""
    ours = ("TAGGER_MODEL", "TAGGER_WRITTEN")
    first = not any(tf.get(name) for name in (*ours, PADDING))
    if first and any(c.field in ours and c.after for c in changes) and all(c.field != PADDING for c in changes):
        return [*changes, Change(PADDING, [], [tf.padding])]
    return changes


def _check_taggable(path: Path) -> None:
    """Refuse, before copying anything, a file whose tags could not be found again once written: a WAV or
    AIFF whose audio chunk size is a placeholder (0 or 0xFFFFFFFF, left by streaming recorders) claims the
    rest of the file, so readers never reach a tag chunk written after it."""
    try:
        fmt = sniff(path)
        placeholder = fmt in ("wav", "aiff") and check_complete(path, fmt)
    except DecodeError:
        return  # the audio proof below says what is wrong with it
    if placeholder:
        raise TagWriteError(path, f"its {fmt.upper()} audio chunk size is a placeholder (0 or 0xFFFFFFFF, as "
                                  "streaming recorders leave it), so a tag written after the audio could not be read "
                                  "back; left alone (re-save the file with an audio editor to fix the header)")


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def outside(path: Path, roots: Sequence[Path]) -> Path | None:
    """The target of a symbolic link ``path`` when it lies outside every library root (else None): the
    library root is the boundary of what a scan may change, whatever links point out of it."""
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    for root in roots:
        real = os.path.realpath(root)
        if os.path.commonpath([real, target]) == real:
            return None
    return target


def write_changes(path: Path, changes: list[Change], *, expect: tuple[int, int] | None,
                  id3_version: int = 4, v23_sep: str = "; ", roots: Sequence[Path] | None = None) -> os.stat_result:
    """Apply ``changes`` safely; returns the new stat (see the module docstring for every check).

    ``roots``: the library folders; a symbolic link whose target lies outside all of them is refused."""
    if roots is not None and changes:
        target = outside(Path(path), roots)
        if target is not None:
            raise TagWriteError(path, f"a link to {os.fsdecode(target)}, outside the library; left alone (tag "
                                      "that file where it lives, or add its folder to the library)")
    try:
        return _write_changes(Path(path), changes, expect=expect, id3_version=id3_version, v23_sep=v23_sep)
    except OSError as exc:  # ENOSPC, ENAMETOOLONG, EIO...: this file fails, the caller goes on
        raise TagWriteError(path, f"cannot write: {exc.strerror or exc}; left alone") from exc


def _write_changes(path: Path, changes: list[Change], *, expect: tuple[int, int] | None,
                  id3_version: int = 4, v23_sep: str = "; ") -> os.stat_result:
    """Apply ``changes`` safely; returns the new stat.

    ``expect`` = (size, mtime_ns) seen at analysis.
    """
    shown = path
    if path.is_symlink():
        path = Path(os.path.realpath(path))  # tag the target in place; the link itself stays as it is
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TagWriteError(shown, f"cannot stat: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise TagWriteError(shown, "not a regular file; left alone")
    if st.st_nlink > 1:
        raise TagWriteError(shown, f"file has {st.st_nlink} hard links; rewriting it would split them, so it is "
                                   "left alone (tag one name per file, or remove the extra links)")
    if expect is not None and (st.st_size, st.st_mtime_ns) != tuple(expect):
        raise TagWriteError(path, "file changed since it was analysed; left alone (the next scan picks it up)",
                            file_changed=True)
    if not changes:
        return st
    # Mode bits are checked too: as root os.access says yes to everything, but a file its owner marked
    # read-only is a clear "do not touch".
    if not os.access(path, os.W_OK) or not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise TagWriteError(path, "file is read-only; left alone")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise TagWriteError(path, "folder is not writable, so no safe temp copy can be made; left alone")
    # The audio proof: demuxed packets where the file can be demuxed, else decoded samples. Each entry is
    # (digest function, what failing it means, what a mismatch means).
    by_packets = (packet_digest, "cannot be demuxed", "tagged copy's audio packets differ from the original's")
    by_samples = (native_digest, "does not decode", "tagged copy decodes to different audio")
    try:
        proof, before_audio = by_packets, packet_digest(path)
    except DecodeError:
        proof = by_samples
        try:
            before_audio = native_digest(path)
        except DecodeError as exc:
            raise TagWriteError(path, f"cannot verify audio before writing: {exc.reason}") from exc
    _check_taggable(path)
    sample = content_sample(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(path, tmp)
        if _identity(os.stat(path)) != _identity(st) or content_sample(path) != sample:
            raise TagWriteError(shown, "file changed while it was being copied; left alone", file_changed=True)
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        if (st.st_uid, st.st_gid) != (os.stat(tmp).st_uid, os.stat(tmp).st_gid):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError as exc:
                raise TagWriteError(path, "cannot keep the file's owner on the rewritten copy; left alone") from exc
        tf = open_tags(tmp, id3_version=id3_version, v23_sep=v23_sep)
        changes = _with_padding_record(tf, changes)
        restore = next((c.before[0] for c in changes if c.field == PADDING and c.before and not c.after), None)
        for ch in changes:
            tf.set(ch.field, ch.after)
        try:
            tf.save(padding=restore)
        except Exception as exc:
            raise TagWriteError(path, f"mutagen could not save tags ({type(exc).__name__}: {exc}); left alone") from exc
        check = open_tags(tmp, id3_version=id3_version, v23_sep=v23_sep)
        for ch in changes:
            got = check.get(ch.field)
            if got != list(ch.after):
                raise TagWriteError(path, f"verification failed: {ch.field} reads back {got!r}, expected {ch.after!r}; left alone")
        digest, unreadable, differs = proof
        try:
            after_audio = digest(tmp)
        except DecodeError as exc:
            raise TagWriteError(path, f"tagged copy {unreadable} ({exc.reason}); left alone") from exc
        if after_audio != before_audio:
            raise TagWriteError(path, f"{differs}; left alone")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        now = os.stat(path)
        if _identity(now) != _identity(st) or content_sample(path) != sample:
            raise TagWriteError(shown, "file changed or was replaced while its tags were being written; left alone",
                                file_changed=True)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return os.stat(path)
