"""Where training examples come from, and their audio.

An example is a file with its labels per head (``genre``: one value, ``mood``: any number, or the columns
of a published manifest), an optional split (``train``/``validation``/``test``) and a group (album,
artist or drummer) that splits must not cut. Sources:

- a folder with one sub-folder per label (``genre``);
- a CSV/TSV manifest, recognised by its header: the MagnaTagATune ``annotations_final.csv`` layout (tab
  separated, ``clip_id``, one 0/1 column per tag, ``mp3_path``), the MTG-Jamendo ``autotagging*.tsv``
  layout (``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS...``, tags like ``genre---rock``, one head per
  category), or a plain one with ``path`` and ``genre`` (or ``label``) columns and optional ``mood``
  (``;``-separated), ``split`` and ``group``;
- a tagger library database: the user's own genre and mood values the scans recorded.

Audio is decoded once through the runtime's own decoder (the same resampler the exported model will be
fed by) and kept as float16 at 16 kHz.
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporter.errors import ExporterError

from ..heads.split import stable_hash
from .archs import SAMPLE_RATE, HeadSpec

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aiff", ".aif")


class DataError(ExporterError, ValueError):
    """The data source is unusable; the message names the file and the reason."""


@dataclass
class Example:
    path: Path
    labels: dict[str, tuple[str, ...]]
    split: str = ""
    group: str = ""


@dataclass
class DataSet:
    examples: list[Example]
    heads: tuple[HeadSpec, ...]
    source: str
    notes: list[str] = field(default_factory=list)


def from_folders(root: Path) -> list[Example]:
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(sub.rglob("*")):
            if f.suffix.lower() in AUDIO_SUFFIXES:
                # Album folders inside a label's folder are groups; files directly in it are their own.
                out.append(Example(f, {"genre": (sub.name,)}, group=str(f.parent) if f.parent != sub else ""))
    return out


def _sniff_delimiter(first_line: str) -> str:
    return "\t" if first_line.count("\t") > first_line.count(",") else ","


def from_manifest(path: Path, audio_root: Path | None = None) -> list[Example]:
    base = audio_root or path.parent
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0] if text else ""
    if first.startswith("TRACK_ID"):  # MTG-Jamendo: variable number of tag columns after DURATION
        out = []
        for line in text.splitlines()[1:]:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 6:
                continue
            heads: dict[str, list[str]] = {}
            for tag in cols[5:]:
                category, sep, value = tag.partition("---")
                if sep:
                    heads.setdefault(category.replace("/", "_"), []).append(value)
            out.append(Example(base / cols[3], {k: tuple(v) for k, v in heads.items()}, group=cols[2]))
        return out
    rows = list(csv.DictReader(text.splitlines(), delimiter=_sniff_delimiter(first)))
    if not rows:
        raise DataError(f"{path}: no rows")
    cols = set(rows[0])
    if {"clip_id", "mp3_path"} <= cols:  # MagnaTagATune annotations_final.csv
        tags = [c for c in rows[0] if c not in ("clip_id", "mp3_path")]
        # Clip names are artist-album-track-start-end.mp3: clips of one album stay on one side of a split.
        return [Example(base / r["mp3_path"], {"tags": tuple(t for t in tags if r[t].strip() == "1")},
                        group="-".join(r["mp3_path"].rsplit("/", 1)[-1].split("-")[:2])) for r in rows]
    key = next((c for c in ("genre", "label", "style") if c in cols), None)
    if "path" not in cols or key is None:
        raise DataError(f"{path}: needs a 'path' and a 'genre' (or 'label') column; has {sorted(cols)}")
    out = []
    for r in rows:
        labels = {"genre": (r[key].strip(),)}
        if r.get("mood"):
            labels["mood"] = tuple(v.strip() for v in r["mood"].split(";") if v.strip())
        out.append(Example(base / r["path"], labels, split=(r.get("split") or "").strip(),
                           group=(r.get("group") or "").strip()))
    return out


def from_library(database: Path) -> list[Example]:
    from tagger.library.store import Store

    out = []
    with Store(database, writer=False) as store:
        seen = set()
        for r in store.records():
            if r["path"] in seen or r.get("status") != "ok":
                continue
            seen.add(r["path"])
            user = r.get("user") or {}
            labels = {k: tuple(v[:1]) if k == "genre" else tuple(v) for k, v in user.items() if v}
            if labels:
                out.append(Example(Path(r["path"]), labels, group=str(r.get("album") or r.get("artist") or "")))
    return out


def load(source: Path, *, min_per_label: int = 2) -> DataSet:
    """Examples from a folder, a manifest or a database folder, with the heads their labels call for."""
    source = Path(source)
    if (source / "records.json").is_file():
        examples, kind = from_library(source), "library"
    elif source.is_dir():
        examples, kind = from_folders(source), "folders"
    elif source.is_file():
        examples, kind = from_manifest(source), "manifest"
    else:
        raise DataError(f"{source}: not a folder, a manifest or a tagger database")
    heads = []
    notes = []
    names = sorted({k for e in examples for k in e.labels}, key=lambda k: (k != "genre", k))
    for name in names:
        counts = Counter(v for e in examples for v in e.labels.get(name, ()))
        kept = tuple(sorted(v for v, n in counts.items() if n >= min_per_label))
        dropped = sorted(v for v, n in counts.items() if n < min_per_label)
        if dropped:
            notes.append(f"{name}: left out {len(dropped)} value(s) with fewer than {min_per_label} examples")
        if len(kept) < 2:
            notes.append(f"{name}: fewer than two usable values, no head")
            continue
        exclusive = all(len(e.labels.get(name, ())) <= 1 for e in examples) and name == "genre"
        heads.append(HeadSpec(name, "softmax" if exclusive else "sigmoid", kept))
    if not heads:
        raise DataError(f"{source}: no head can be trained (need two or more values with {min_per_label}+ examples)")
    return DataSet(examples, tuple(heads), f"{kind}: {source}", notes)


def assign_splits(examples: list[Example], seed: int, validation: float = 0.15, test: float = 0.15) -> None:
    """Examples without a split get one by group (a group never straddles two splits), deterministically."""
    for e in examples:
        if not e.split:
            u = stable_hash(e.group or str(e.path), seed) / 2 ** 64
            e.split = "test" if u < test else ("validation" if u < test + validation else "train")


def decode_all(examples: list[Example], min_samples: int) -> tuple[list[np.ndarray], list[str]]:
    """Audio at 16 kHz as float16 (short files tiled to one window); failures listed, never raised."""
    from tagger.analysis.decode import decode
    from tagger.errors import TaggerError

    audio: list[np.ndarray] = []
    failed: list[str] = []
    for e in examples:
        try:
            x = decode(e.path, SAMPLE_RATE).samples
        except TaggerError as exc:
            failed.append(f"{e.path}: {exc.reason}")
            audio.append(np.zeros(0, np.float16))
            continue
        if 0 < len(x) < min_samples:
            x = np.tile(x, -(-min_samples // len(x)))
        audio.append(x.astype(np.float16))
    return audio, failed
