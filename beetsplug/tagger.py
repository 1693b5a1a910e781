"""beets plugin: tagger's genres, moods and descriptors in beets, and `beet similar` from its embeddings.

Enable with ``plugins: tagger`` in beets' config. On ``beet import`` (and with ``beet tagger QUERY``) each item
gets what tagger decided for its file, read from tagger's database (the daemon's or the last scan's):

- ``genres``: beets' own multi-valued field, filled only when the item has none (``force: yes`` replaces), so a
  genre beets or the user chose is kept;
- ``mood`` and ``tagger_descriptors``: flexible attributes (``beet ls mood:Relaxing``).

Files are written only when beets' own ``import.write`` (or ``beet tagger -w``) says so; tagger does not touch
them from here. A file tagger has not analysed is analysed on the spot with ``analyse: yes`` (results stored in
tagger's database, nothing written to the file), unless a running ``tagger watch`` holds the database (it will
analyse the file itself).

``beet similar QUERY [-n N]`` lists the library's tracks that sound most like the first match;
``beet tagger-playlist QUERY [-n N] [-o FILE.m3u8]`` a flowing playlist seeded with it.

Configuration (all optional)::

    tagger:
      auto: yes          # on import
      force: no          # replace genres beets already has
      analyse: no        # analyse files tagger has not seen
      config: ~/.config/tagger/config.yaml   # tagger's config (default: its usual place)
      database: ~/.local/share/tagger/db     # overrides the database named there
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from beets import ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin

from tagger.config import Config, load_config
from tagger.errors import StoreLockedError, TaggerError
from tagger.fsutil import path_key
from tagger.library.records import Status
from tagger.library.store import Store

LIST = types.SEMICOLON_SPACE_DSV


def _path(item: Any) -> str:
    return path_key(os.fsdecode(item.path))


class TaggerPlugin(BeetsPlugin):
    item_types: ClassVar[dict[str, types.Type]] = {"mood": LIST, "tagger_descriptors": LIST}

    def __init__(self) -> None:
        super().__init__()
        self.config.add({"auto": True, "force": False, "analyse": False, "config": "", "database": ""})
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]

    # -- tagger's side ---------------------------------------------------------------------------------
    def tagger_config(self) -> Config:
        path = self.config["config"].as_str()
        cfg = load_config(Path(path).expanduser() if path else None)
        db = self.config["database"].as_str()
        return replace(cfg, database=Path(db).expanduser()) if db else cfg

    def decided(self, cfg: Config, paths: Sequence[str]) -> dict[str, dict[str, list[str]]]:
        """path -> tagger's decision per field, for the paths its database knows."""
        if not (Path(cfg.database) / "records.json").exists():
            return {}
        out = {}
        with Store(cfg.database, writer=False) as store:
            for p in paths:
                recs = [r for r in store.for_path(p) if r.get("status") == Status.OK]
                if recs:
                    out[p] = dict(recs[0].get("decided") or {})
        return out

    def analyse(self, cfg: Config, paths: Sequence[str]) -> None:
        """Analyse files tagger has not seen into its database; nothing is written to them."""
        from tagger.pipeline.scanner import load_models, scan

        try:
            store = Store(cfg.database, writer=True)
        except StoreLockedError:
            self._log.info("tagger's daemon holds its database: it analyses these files itself")
            return
        with store:
            report = scan([Path(p) for p in paths], replace(cfg, write_enabled=False), load_models(cfg), store)
        for path, reason in report.failed:
            self._log.warning("tagger could not analyse {}: {}", path, reason)

    # -- beets' side -----------------------------------------------------------------------------------
    def apply(self, items: Iterable[Any], *, force: bool, analyse: bool, write: bool) -> int:
        items = list(items)
        try:
            cfg = self.tagger_config()
            paths = [_path(i) for i in items]
            found = self.decided(cfg, paths)
            missing = [p for p in paths if p not in found]
            if missing and analyse:
                self.analyse(cfg, missing)
                found.update(self.decided(cfg, missing))
        except TaggerError as exc:
            self._log.error("tagger: {}", exc)
            return 0
        changed = 0
        for item, p in zip(items, paths):
            d = found.get(p)
            if d is None:
                self._log.debug("not in tagger's database: {}", p)
                continue
            before = (list(item.genres or []), item.get("mood"), item.get("tagger_descriptors"))
            if d.get("genre") and (force or not item.genres):
                item.genres = list(d["genre"])
            if d.get("mood") and (force or not item.get("mood")):
                item["mood"] = list(d["mood"])
            if d.get("descriptors"):
                item["tagger_descriptors"] = list(d["descriptors"])
            if (list(item.genres or []), item.get("mood"), item.get("tagger_descriptors")) != before:
                changed += 1
                if write:
                    item.try_write()
                item.store()
        return changed

    def imported(self, session: Any, task: Any) -> None:
        # the importer writes the files afterwards when its own `write` option says so
        self.apply(task.imported_items(), force=self.config["force"].get(bool),
                   analyse=self.config["analyse"].get(bool), write=False)

    def commands(self) -> list[ui.Subcommand]:
        fill = ui.Subcommand("tagger", help="fill genres, mood and descriptors from tagger's database")
        fill.parser.add_option("-f", "--force", action="store_true", help="replace genres the items already have")
        fill.parser.add_option("-a", "--analyse", action="store_true", help="analyse files tagger has not seen")
        fill.parser.add_option("-w", "--write", action="store_true", default=None, help="write tags to the files")
        fill.parser.add_option("-W", "--nowrite", action="store_false", dest="write", help="do not write tags")
        fill.func = self._fill

        similar = ui.Subcommand("similar", help="tracks that sound like the first match (tagger's embeddings)")
        similar.parser.add_option("-n", type="int", default=10, help="how many (default 10)")
        similar.func = self._similar

        playlist = ui.Subcommand("tagger-playlist", help="a flowing playlist seeded with the first match")
        playlist.parser.add_option("-n", type="int", default=20, help="how many tracks (default 20)")
        playlist.parser.add_option("-o", "--output", help="write an .m3u8 playlist here")
        playlist.func = self._playlist
        return [fill, similar, playlist]

    def _fill(self, lib: Any, opts: Any, args: list[str]) -> None:
        n = self.apply(lib.items(args), force=opts.force or self.config["force"].get(bool),
                       analyse=opts.analyse or self.config["analyse"].get(bool), write=ui.should_write(opts.write))
        ui.print_(f"tagger: {n} item(s) changed")

    def _seed(self, lib: Any, args: list[str]) -> tuple[Store, Any, dict[str, Any], dict[str, Any]]:
        """(tagger's store, its similarity view, the first match's record, beets' items by path): what
        `beet similar` and `beet tagger-playlist` need; a query or a file tagger cannot answer is a UserError."""
        from tagger.cli.options import lookup_model
        from tagger.lookup.similar import Library

        items = list(lib.items(args))
        if not items:
            raise ui.UserError("no item matches the query")
        try:
            cfg = self.tagger_config()
            store = Store(cfg.database, writer=False)
        except TaggerError as exc:
            raise ui.UserError(str(exc)) from exc
        try:
            model = lookup_model(cfg, store)
            tlib = Library(store, model.spec.id, model.spec.labels)
        except TaggerError as exc:
            store.close()
            raise ui.UserError(str(exc)) from exc
        seed = tlib.by_path.get(_path(items[0]))
        if seed is None:
            store.close()
            raise ui.UserError(f"{os.fsdecode(items[0].path)} is not in tagger's database (run `tagger scan` or "
                               "`beet tagger --analyse` on it)")
        return store, tlib, seed, {_path(i): i for i in lib.items()}

    def _similar(self, lib: Any, opts: Any, args: list[str]) -> None:
        store, tlib, seed, mine = self._seed(lib, args)
        with store:
            hits = tlib.similar(tlib.embedding_of(seed), seed, opts.n * 4, keep=lambda r: r["path"] in mine)
            for hit in hits[: opts.n]:
                ui.print_(f"{hit.score:.3f}  {mine[hit.record['path']]}")

    def _playlist(self, lib: Any, opts: Any, args: list[str]) -> None:
        from tagger.lookup.similar import build_playlist, write_m3u

        store, tlib, seed, mine = self._seed(lib, args)
        with store:
            rows = build_playlist(tlib, opts.n, seed=seed, query=tlib.embedding_of(seed),
                                  keep=lambda r: r["path"] in mine)
            if opts.output:
                write_m3u(rows, Path(opts.output))
                ui.print_(f"wrote {opts.output} ({len(rows)} tracks)")
            else:
                for r in rows:
                    ui.print_(str(mine[r["path"]]))
