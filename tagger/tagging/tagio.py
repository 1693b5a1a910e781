"""Reading and writing our fields with mutagen: one table says where each field lives in each format.

Families: ``id3`` (MP3, WAV and AIFF all carry an ID3v2 tag), ``vorbis`` (FLAC, Ogg Vorbis, Opus: repeated
comments), ``mp4`` (M4A atoms, freeform ``----:com.apple.iTunes:NAME`` for custom names). Multi-value fields
are written the way each format expects: ID3v2.4 multi-string frames, repeated Vorbis comments, MP4 lists;
ID3v2.3 joins values with a configurable separator and keeps mood in ``TXXX:MOOD``.

What the tool does not own stays as it was: an existing ID3v2.3 tag stays v2.3 (the configured version applies
to files that get their first ID3v2 tag), and it is saved as a real v2.3 tag (dates as TYER/TDAT, a user's
TMOO moved to TXXX:MOOD, nothing v2.4-only left); an ID3v1 tag is kept byte for byte and never copied into the
new ID3v2 tag.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mutagen.aiff import AIFF
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TCON, TMOO, TXXX, UFID, ID3NoHeaderError
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, AtomDataType, MP4FreeForm
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from tagger import fields as field_registry
from tagger.analysis.formats import FORMATS as AUDIO_FORMATS
from tagger.analysis.formats import sniff
from tagger.errors import DecodeError, TagWriteError
from tagger.tagging._mutagen import (
    id3_padding,
    keep_unparsed_atom,
    mp4_drop_empty_free,
    mp4_ilst_padding,
    mutagen_call,
)
from tagger.tagging.id3order import head_of, restore_order

# Where each tag is stored per family comes from the field registry (tagger.fields); tags without declared
# homes (the tool's own, provenance, an extension's field) use the CUSTOM row.
CUSTOM = {"id3": "TXXX:{name}", "id3v23": "TXXX:{name}", "vorbis": "{name}", "mp4": "----:com.apple.iTunes:{name}"}

# Formats the header sniffer names -> (mutagen class, tag family); the family is the format table's.
MUTAGEN_CLASS: dict[str, type] = {"mp3": MP3, "wav": WAVE, "aiff": AIFF, "flac": FLAC, "vorbis": OggVorbis,
                                  "opus": OggOpus, "mp4": MP4}
FORMATS: dict[str, tuple[type, str]] = {name: (cls, family) for name, cls in MUTAGEN_CLASS.items()
                                        if (family := AUDIO_FORMATS[name].tags) is not None}


def field_key(name: str, family: str) -> str:
    row = field_registry.storage().get(name)
    return row[family] if row else CUSTOM[family].format(name=name)


@dataclass
class TagFile:
    """An opened file plus its family; ``get``/``set`` speak field names, not frames or atoms."""

    path: Path
    fmt: str
    family: str  # id3 | vorbis | mp4
    audio: Any  # the mutagen.FileType subclass the header called for (MP3, FLAC, MP4...)
    id3_version: int = 4
    v23_sep: str = "; "
    v1_only_keys: frozenset[str] = frozenset()  # frames mutagen filled from an ID3v1 tag (not in any ID3v2 tag)
    v1_bytes: bytes = b""  # the file's ID3v1 tag, restored unchanged after a save
    touched: set[str] = field(default_factory=set)  # frame keys set through this object
    riff_info: dict[str, list[str]] = field(default_factory=dict)  # WAV LIST/INFO values, by field name

    @property
    def _fam(self) -> str:
        return "id3v23" if self.family == "id3" and self.id3_version == 3 else self.family

    def get(self, name: str) -> list[str]:
        found = self._get(name)
        return found or self.riff_info.get(name, [])  # a WAV's INFO values count as the user's

    def _get(self, name: str) -> list[str]:
        tags = self.audio.tags
        if tags is None:
            return []
        key = field_key(name, self._fam)
        if self.family == "id3":
            if name == "MOOD":  # read both homes of mood, whichever version wrote it
                frames = tags.getall("TMOO") + tags.getall("TXXX:MOOD")
            else:
                frames = tags.getall(key)
            out: list[str] = []
            for fr in frames:
                if isinstance(fr, UFID):  # an owner and bytes (the MusicBrainz recording id), not text
                    out.append(bytes(getattr(fr, "data", b"")).decode("ascii", "replace"))
                else:
                    out += list(fr.genres) if isinstance(fr, TCON) else [str(t) for t in fr.text]
            if self.id3_version == 3 and name not in field_registry.INFO_STORAGE:
                # v2.3 has one string per frame: split what was joined (the tool's values never hold the separator)
                out = [part.strip() for v in out for part in v.split(self.v23_sep.strip() or self.v23_sep)]
            return [v for v in out if v != ""]
        if self.family == "vorbis":
            return [v for v in tags.get(key, []) if v != ""]
        values = tags.get(key, [])
        return [bytes(v).decode("utf-8", "replace") if isinstance(v, (bytes, MP4FreeForm)) else str(v) for v in values]

    def set(self, name: str, values: list[str]) -> None:
        """Replace the field with ``values``; an empty list deletes it."""
        if self.riff_info and self.audio.tags is None:
            raise TagWriteError(self.path, "WAV file carries RIFF INFO tags; adding an ID3 chunk would make TagLib-"
                                           "based players (Navidrome, Kodi...) read only that chunk and lose the "
                                           "INFO values, so it is left alone")
        if self.audio.tags is None:
            self.audio.add_tags()
        tags = self.audio.tags
        key = field_key(name, self._fam)
        self.touched.add(key)
        if self.family == "id3":
            if name == "MOOD":
                tags.delall("TMOO")
                tags.delall("TXXX:MOOD")
            else:
                tags.delall(key)
            if values:
                if key == "TCON":
                    tags.add(TCON(encoding=3, text=list(values)))
                elif key == "TMOO":
                    tags.add(TMOO(encoding=3, text=list(values)))
                else:
                    tags.add(TXXX(encoding=3, desc=key.split(":", 1)[1], text=list(values)))
        elif self.family == "vorbis":
            _set_in_place(tags, key, list(values))
        else:
            if key in tags:
                del tags[key]
            if values:
                if key.startswith("----:"):
                    tags[key] = [MP4FreeForm(v.encode("utf-8"), dataformat=AtomDataType.UTF8) for v in values]
                else:
                    tags[key] = list(values)

    @property
    def padding(self) -> str:
        """The free space kept for tags as the file stands: a byte count, or ``none`` for a FLAC without a
        padding block (which undo removes again)."""
        if self.fmt == "flac":
            from mutagen.flac import Padding

            blocks = [b for b in self.audio.metadata_blocks if isinstance(b, Padding)]
            return str(sum(b.length for b in blocks)) if blocks else "none"
        if self.family == "mp4" and not _mp4_has_free(self.path):
            return "none"
        return str(id3_padding(self.audio.tags)) if self.audio.tags is not None else "0"

    def save(self, padding: str | None = None) -> None:
        """Write the tags. ``padding`` (a value of :attr:`padding`) restores that exact free space instead of
        mutagen's choice: undo passes the padding the file had before the tool first wrote to it."""
        kw = {}
        if padding is not None and (padding == "none" or padding.isdigit()):
            kw["padding"] = (lambda _info, n=0 if padding == "none" else int(padding): n)
        self._save(kw)
        if padding == "none" and self.fmt == "flac":
            _drop_empty_flac_padding(self.path)
        elif padding == "none" and self.family == "mp4":
            _drop_empty_mp4_free(self.path)

    def _save(self, kw: dict) -> None:
        tags = self.audio.tags
        if self.family == "mp4" and tags is not None and "\xa9gen" in tags and "\xa9gen" not in self.touched:
            # mutagen reads a numeric `gnre` atom as the text genre `©gen` and cannot write `gnre`: the user's
            # genre would change atoms on every save. Hand the original atom back to mutagen as one it could not
            # parse, which it writes back byte for byte (tests/tagging/test_readers.py checks this against mutagen).
            # Looked up only here, when saving, so reading tags costs no second parse of the file.
            gnre = _raw_gnre(self.path)
            if gnre and keep_unparsed_atom(tags, "gnre", gnre):
                tags.pop("\xa9gen", None)
        if self.fmt == "vorbis" and self.audio.tags is not None:
            from tagger.tagging.oggpages import save_vorbis_comment

            if save_vorbis_comment(self.path, self.audio.tags.write(), kw.get("padding")):
                return
        if self.family != "id3":
            self.audio.save(**kw)
            return
        tags = self.audio.tags
        for key in self.v1_only_keys - self.touched:  # from ID3v1: that tag keeps them, ID3v2 does not copy them
            tags.delall(key)
        if not tags.keys():  # nothing left (an undo on a file that had no tag): no empty tag or chunk is left behind
            if isinstance(self.audio, MP3):
                from mutagen.id3 import delete as delete_id3

                delete_id3(str(self.path), delete_v1=False, delete_v2=True)
            else:
                self.audio.delete()
            return
        if self.id3_version == 3:
            moods = [str(t) for fr in tags.getall("TMOO") for t in fr.text]
            if moods:  # TMOO does not exist in v2.3: keep the user's mood where v2.3 readers look for it
                kept = [str(t) for fr in tags.getall("TXXX:MOOD") for t in fr.text]
                tags.delall("TMOO")
                tags.delall("TXXX:MOOD")
                tags.add(TXXX(encoding=3, desc="MOOD", text=kept + [m for m in moods if m not in kept]))
            tags.update_to_v23()
        kwargs = {"v2_version": 3, "v23_sep": self.v23_sep} if self.id3_version == 3 else {"v2_version": 4}
        kwargs.update(kw)
        before = b""
        if isinstance(self.audio, MP3):
            kwargs["v1"] = 0  # ID3v1 is put back below exactly as it was, not regenerated from our frames
            before = head_of(self.path)
        self.audio.save(**kwargs)
        if before:
            restore_order(self.path, before)  # the file's own frame order, not mutagen's
        if self.v1_bytes:
            with open(self.path, "ab") as f:
                f.write(self.v1_bytes)


def _set_in_place(comment: list, key: str, values: list[str]) -> None:
    """Set a Vorbis comment field keeping where its entries stand and how their names are spelled (``Genre``
    stays ``Genre``): mutagen would delete them and append new ``GENRE=`` entries at the end, so a file whose
    values were added and then removed again (undo) would differ from what it was in order and case."""
    entries = list(iter(comment))  # (name, value) pairs; the dict-style indexing of mutagen's class is by name
    at = [i for i, (k, _) in enumerate(entries) if k.lower() == key.lower()]
    for i, value in zip(at, values):
        entries[i] = (entries[i][0], value)
    if len(values) > len(at):
        spelled = entries[at[-1]][0] if at else key
        end = at[-1] + 1 if at else len(entries)
        entries[end:end] = [(spelled, v) for v in values[len(at):]]
    for i in reversed(at[len(values):]):
        del entries[i]
    list.clear(comment)
    list.extend(comment, entries)


def _drop_empty_flac_padding(path: Path) -> None:
    """Remove a zero-length PADDING block (mutagen always writes one) from a FLAC's metadata, so a file that had
    none gets its exact bytes back. Only the metadata header region is rewritten; the frames are copied."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"fLaC":
        return
    pos, blocks = 4, []
    while True:
        header = data[pos:pos + 4]
        if len(header) < 4:
            return
        last, kind, size = header[0] & 0x80, header[0] & 0x7F, int.from_bytes(header[1:], "big")
        blocks.append((kind, data[pos + 4:pos + 4 + size]))
        pos += 4 + size
        if last:
            break
    kept = [(k, body) for k, body in blocks if not (k == 1 and len(body) == 0)]
    if len(kept) == len(blocks) or not kept:
        return
    out = bytearray(b"fLaC")
    for i, (kind, body) in enumerate(kept):
        out.append(kind | (0x80 if i == len(kept) - 1 else 0))
        out += len(body).to_bytes(3, "big") + body
    with open(path, "wb") as f:
        f.write(bytes(out) + data[pos:])


def _mp4_has_free(path: Path) -> bool:
    from mutagen.mp4 import AtomError

    try:
        with open(path, "rb") as f:
            return mp4_ilst_padding(f) is not None
    except (KeyError, OSError, AtomError):
        return False


def _drop_empty_mp4_free(path: Path) -> None:
    """Remove the empty ``free`` atom mutagen always writes after ``ilst``, for a file that had none."""
    with open(path, "r+b") as f:
        mp4_drop_empty_free(f)


def open_tags(path: Path, *, id3_version: int = 4, v23_sep: str = "; ") -> TagFile:
    """Open ``path`` for tag access with the class its header calls for (not its extension)."""
    try:
        fmt = sniff(path)
    except DecodeError as exc:
        raise TagWriteError(path, exc.reason) from exc
    if fmt not in FORMATS:
        raise TagWriteError(path, f"writing tags to {fmt} files is not supported")
    cls, family = FORMATS[fmt]
    audio = mutagen_call(path, "read tags", cls, str(path))
    tf = TagFile(path, fmt, family, audio, id3_version, v23_sep)
    if family == "id3":
        _id3_layout(tf)
    if fmt == "wav":
        tf.riff_info = read_riff_info(path)
    return tf


def _raw_gnre(path: Path) -> list[bytes]:
    """The data of an ilst `gnre` atom when the file has one and no text `©gen` (else nothing to keep)."""
    from mutagen.mp4 import AtomError, Atoms

    try:
        with open(path, "rb") as f:
            ilst = Atoms(f).path(b"moov", b"udta", b"meta", b"ilst")[-1]
            names = [a.name for a in ilst.children]
            if b"gnre" not in names or b"\xa9gen" in names:
                return []
            out = []
            for atom in ilst.children:
                if atom.name == b"gnre":
                    ok, data = atom.read(f)
                    if ok:
                        out.append(data)
            return out
    except (KeyError, OSError, AtomError):  # no ilst, or an atom tree mutagen cannot walk: nothing to keep
        return []


RIFF_INFO_FIELDS = {b"IGNR": "GENRE", b"IART": "ARTIST", b"INAM": "TITLE", b"IPRD": "ALBUM"}


def read_riff_info(path: Path) -> dict[str, list[str]]:
    """The fields we read from a WAV file's LIST/INFO chunk (what ffmpeg and many editors write)."""
    import struct

    out: dict[str, list[str]] = {}
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                cid, length = struct.unpack("<4sI", f.read(8))
                if cid == b"LIST" and length >= 4 and length < (1 << 24):
                    body = f.read(length)
                    if body[:4] == b"INFO":
                        i = 4
                        while i + 8 <= len(body):
                            sub, n = struct.unpack("<4sI", body[i:i + 8])
                            text = body[i + 8:i + 8 + n].split(b"\x00", 1)[0].decode("utf-8", "replace").strip()
                            if sub in RIFF_INFO_FIELDS and text:
                                out.setdefault(RIFF_INFO_FIELDS[sub], []).append(text)
                            i += 8 + n + (n & 1)
                pos += 8 + length + (length & 1)
    except OSError as exc:
        raise TagWriteError(path, f"cannot read the RIFF chunks: {exc.strerror or exc}") from exc
    return out


def _id3_layout(tf: TagFile) -> None:
    """Which ID3v2 version this file keeps, and which frames only exist in its ID3v1 tag."""
    tags = tf.audio.tags
    has_v2 = tags is not None and getattr(tags, "_header", None) is not None
    if has_v2 and tags.version[1] in (3, 4):
        tf.id3_version = tags.version[1]  # a user's v2.3 tag stays v2.3
    is_mp3 = isinstance(tf.audio, MP3)
    if is_mp3:
        with open(tf.path, "rb") as f:
            f.seek(0, 2)
            if f.tell() >= 128:
                f.seek(-128, 2)
                tail = f.read(128)
                if tail[:3] == b"TAG":
                    tf.v1_bytes = tail
    if is_mp3 and tf.v1_bytes and tags is not None:
        # mutagen fills frames the ID3v2 tag lacks from the ID3v1 tag (comment, album, year...); saved, they
        # would be copied into ID3v2 (a new "ID3v1 Comment" COMM frame). Only the ID3v2 tag's own frames stay.
        own: set[str] = set()
        if has_v2:
            try:
                own = set(ID3(str(tf.path), load_v1=False).keys())
            except ID3NoHeaderError:
                own = set()
        tf.v1_only_keys = frozenset(set(tags.keys()) - own)


__all__ = ["FORMATS", "TagFile", "field_key", "open_tags", "ID3"]
