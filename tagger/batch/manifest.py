"""What a batch job analyses: a manifest (CSV or Parquet with a ``path`` or ``uri`` column and an optional
``id``), folders (every audio file under them, as a scan would find them), or single files."""
from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from tagger.batch.stages import Item, default_id
from tagger.errors import ConfigError
from tagger.fsutil import path_key
from tagger.library.files import discover

MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")


def _rows(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            return [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in pq.read_table(path).to_pylist()]
        except Exception as exc:
            raise ConfigError(path, f"cannot read the manifest: {exc}") from exc
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(path, f"cannot read the manifest: {exc}") from exc


def read_manifest(path: Path) -> list[Item]:
    rows = _rows(path)
    if not rows:
        return []
    cols = {c.strip().lower(): c for c in rows[0] if c}
    key = cols.get("path") or cols.get("uri")
    if key is None:
        raise ConfigError(path, f"the manifest needs a 'path' or 'uri' column; it has {sorted(cols)}")
    id_col = cols.get("id")
    items = []
    for n, r in enumerate(rows, start=2):
        p = (r.get(key) or "").strip()
        if not p:
            raise ConfigError(path, f"row {n} has an empty {key}")
        ident = (r.get(id_col) or "").strip() if id_col else ""
        items.append(Item(ident, p))
    base = path.parent
    out = []
    for it in items:
        p = it.path
        if "://" not in p and not Path(p).is_absolute():  # relative to the manifest, like playlists
            p = path_key(base / p)
        out.append(Item(it.id or default_id(p), p))
    return out


def collect_items(sources: Iterable[Path], extensions: frozenset[str]) -> list[Item]:
    """Items from every source, in order; duplicate ids are refused (they would overwrite each other's rows)."""
    items: list[Item] = []
    for src in sources:
        if src.is_file() and src.suffix.lower() in MANIFEST_SUFFIXES:
            items += read_manifest(src)
        elif src.is_dir():
            files, _ = discover([src], extensions)
            items += [Item(default_id(path_key(f)), path_key(f)) for f in files]
        elif src.is_file():
            items.append(Item(default_id(path_key(src)), path_key(src)))
        else:
            raise ConfigError(src, "not a folder, a manifest (.csv, .tsv, .parquet) or a file")
    seen: dict[str, str] = {}
    for it in items:
        if it.id in seen and seen[it.id] != it.path:
            raise ConfigError(it.id, f"two tracks share this id: {seen[it.id]} and {it.path}")
        seen[it.id] = it.path
    unique = {it.id: it for it in items}
    return list(unique.values())
