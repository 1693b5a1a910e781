"""`tagger similar` and `tagger playlist`: answered from the stored embeddings."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tagger.cli.exits import EXIT_FILES_FAILED, EXIT_OK
from tagger.cli.options import lookup_model, need_extra, settings_from
from tagger.errors import ConfigError

log = logging.getLogger("tagger")


def _lookup_setup(args: argparse.Namespace):
    """(config, read-only store, model spec, library view) for the lookup commands."""
    from tagger.library.store import Store
    from tagger.lookup.similar import Library

    cfg = settings_from(args)
    store = Store(cfg.database, writer=False)
    model = lookup_model(cfg, store)
    return cfg, store, model, Library(store, model.spec.id, model.spec.labels)


def _seed(path: Path, lib, model) -> tuple[dict, Any]:
    """The seed's stored record and unit embedding; a file not in the database is analysed on the fly."""
    import numpy as np

    from tagger.analysis.engine import Engine, TrackFailure
    from tagger.errors import DecodeError
    from tagger.fsutil import path_key

    rec = lib.by_path.get(path_key(path))
    if rec is not None:
        return rec, lib.embedding_of(rec)
    (res,) = list(Engine(model, decode_workers=1).analyse([path]))
    if isinstance(res, TrackFailure):
        raise DecodeError(path, res.reason)
    emb = res.embedding / max(float(np.linalg.norm(res.embedding)), 1e-12)
    return {"path": path_key(path), "fingerprint": res.fingerprint, "duration": res.duration}, emb


def _filters(args: argparse.Namespace, lib, seed: dict | None):
    from tagger.lookup.similar import folder_filter, resolve_tags, tag_filter

    checks = []
    if getattr(args, "tag", None):
        checks.append(tag_filter(lib, resolve_tags(lib.labels, lib.records, args.tag, "--tag")))
    if getattr(args, "under", None):
        checks.append(folder_filter(Path(args.under)))
    if seed is not None and getattr(args, "not_same_artist", False) and seed.get("artist"):
        a = seed["artist"].casefold()
        checks.append(lambda r: (r.get("artist") or "").casefold() != a)
    if seed is not None and getattr(args, "not_same_album", False) and seed.get("album"):
        al = seed["album"].casefold()
        checks.append(lambda r: (r.get("album") or "").casefold() != al)
    return (lambda r: all(c(r) for c in checks)) if checks else None


def _emit_tracks(args: argparse.Namespace, rows: list[dict], store, model_id: str) -> None:
    from tagger.lookup.similar import write_m3u

    out_file = getattr(args, "m3u", None) or getattr(args, "output", None)
    relative = Path(args.relative_to).expanduser().absolute() if getattr(args, "relative_to", None) else None
    if out_file:
        write_m3u(rows, Path(out_file), relative)
    elif relative is not None:  # printed paths relative too (`tagger playlist ... --relative-to ~/Music | mpc add`)
        from tagger.lookup.similar import m3u_text

        m3u_text(rows, relative)  # every track must be under DIR
        rows = [{**r, "path": os.path.relpath(r["path"], relative)} for r in rows]
    if args.json:
        for r in rows:
            r.setdefault("id", store.doc_id(r["path"], model_id))
        print(json.dumps(rows, ensure_ascii=True, indent=1))
    else:
        for r in rows:
            score = f"{r['score']:.4f}  " if "score" in r else ""
            dup = "  (duplicate)" if r.get("duplicate") else ""
            print(f"{score}{r['path']}{dup}")
        if out_file:
            print(f"wrote {out_file}", file=sys.stderr)


def _similar_by_index(args: argparse.Namespace) -> int:
    """`similar --index`: the batch job's approximate index (re-ranked exactly), for catalogues."""
    need_extra("faiss", "pyarrow")
    import numpy as np

    from tagger.analysis.engine import Engine, TrackFailure
    from tagger.batch.index import Index
    from tagger.errors import DecodeError
    from tagger.fsutil import path_key

    cfg = settings_from(args)
    index = Index(Path(args.index))
    seed_row = index.row_of.get(path_key(Path(args.file)))
    if seed_row is not None:
        query = np.asarray(index.unit[seed_row])
    else:
        model = lookup_model(cfg)
        if model.card.analyser != index.info["analyser"]:
            raise ConfigError("--index", f"the index holds {index.info['analyser']} embeddings; analysing "
                                         f"{args.file} with {model.card.analyser} would not be comparable")
        (res,) = list(Engine(model, decode_workers=1).analyse([Path(args.file)]))
        if isinstance(res, TrackFailure):
            raise DecodeError(args.file, res.reason)
        query = res.embedding
    hits = index.search(query, args.n, exclude=seed_row)
    rows = [{**index.meta[r], "score": round(s, 6)} for r, s in hits]
    if args.json:
        print(json.dumps(rows, ensure_ascii=True, indent=1))
    else:
        for r in rows:
            print(f"{r['score']:.4f}  {r['path']}")
    return EXIT_OK


def cmd_similar(args: argparse.Namespace) -> int:
    if args.index:
        return _similar_by_index(args)
    cfg, store, model, lib = _lookup_setup(args)
    seed, query = _seed(Path(args.file), lib, model)
    hits = lib.similar(query, seed, args.n, include_duplicates=args.include_duplicates, keep=_filters(args, lib, seed))
    _emit_tracks(args, [h.to_json(store.doc_id(h.record["path"], model.spec.id)) for h in hits], store, model.spec.id)
    return EXIT_OK


def cmd_playlist(args: argparse.Namespace) -> int:
    from tagger.lookup.similar import build_playlist, resolve_tags

    if not args.seed and not args.tags:
        raise ConfigError("playlist", "give --seed FILE, --tags VALUE[,VALUE...] or both")
    cfg, store, model, lib = _lookup_setup(args)
    seed = query = None
    wanted = [t.strip() for t in (args.tags or "").split(",") if t.strip()]
    tags = resolve_tags(lib.labels, lib.records, wanted, "--tags") if wanted else None
    if args.seed:
        seed, query = _seed(Path(args.seed), lib, model)
    rows = build_playlist(lib, args.n, tags=tags, seed=seed, query=query, keep=_filters(args, lib, None))
    if not rows:
        print("no track matches " + " and ".join(filter(None, [f"--tags {args.tags}" if wanted else "",
                                                              f"--under {args.under}" if args.under else ""])),
              file=sys.stderr)
        return EXIT_FILES_FAILED
    _emit_tracks(args, [{k: r[k] for k in ("path", "artist", "title", "duration") if k in r} for r in rows],
                 store, model.spec.id)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
    si = sub.add_parser("similar", help="tracks that sound like FILE (cosine of stored embeddings)")
    si.add_argument("file")
    si.add_argument("-n", type=int, default=10)
    si.add_argument("--json", action="store_true", help="a list of {path, score, id, ...}, best first")
    si.add_argument("--m3u", help="also write the result as an .m3u8 playlist")
    si.add_argument("--relative-to", dest="relative_to", metavar="DIR", help="paths relative to DIR")
    si.add_argument("--include-duplicates", action="store_true", dest="include_duplicates",
                    help="keep copies of the same recording (other files, formats, bitrates)")
    si.add_argument("--tag", action="append", help="only tracks carrying this label (repeatable)")
    si.add_argument("--not-same-artist", action="store_true", dest="not_same_artist")
    si.add_argument("--not-same-album", action="store_true", dest="not_same_album")
    si.add_argument("--under", help="only tracks under this folder")
    si.add_argument("--index", help="search a `tagger batch index` folder instead of the database")
    common(si)
    si.set_defaults(func=cmd_similar)

    pl = sub.add_parser("playlist", help="a flowing .m3u8 playlist from a seed file and/or tags")
    pl.add_argument("--seed", help="start from this file")
    pl.add_argument("--tags", help="comma-separated labels every track must carry, e.g. Mellow,jazz")
    pl.add_argument("-n", type=int, default=20)
    pl.add_argument("-o", "--output", help="write the playlist here (.m3u8)")
    pl.add_argument("--json", action="store_true")
    pl.add_argument("--under", help="only tracks under this folder")
    pl.add_argument("--relative-to", dest="relative_to", metavar="DIR",
                    help="paths relative to DIR (MPD's music directory, a player's library root)")
    common(pl)
    pl.set_defaults(func=cmd_playlist)
