"""What every command shares: settings from the config file and the flags, the model set, progress."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tagger.config import Config, load_config, schema
from tagger.errors import ConfigError
from tagger.models.session import Model, load_model

log = logging.getLogger("tagger")


def settings_from(args: argparse.Namespace) -> Config:
    """The config file's settings with the command line's flags over them, each flag checked by the same rule
    as its key in the file (:mod:`tagger.config.schema`)."""
    cfg = load_config(Path(args.config) if args.config else None)
    overrides: dict[str, Any] = schema.from_flags(args)
    for attr, value in list(overrides.items()):
        if schema.BY_ATTR[attr].kind == "path":
            overrides[attr] = Path(value).expanduser()
    if getattr(args, "model", None):
        overrides["models"] = schema.check(schema.BY_KEY["models"], args.model, "--model")
    if getattr(args, "no_write", False):
        overrides["write_enabled"] = False
    return replace(cfg, **overrides) if overrides else cfg


def load_models(cfg: Config) -> list[Model]:
    from tagger.pipeline.scanner import load_models

    return load_models(cfg)


def lookup_model(cfg: Config, store=None) -> Model:
    """The model whose embeddings answer similarity queries: the first of the set that has an embedding
    and, when a database is given, analysed tracks in it (`--model X` picks another)."""
    for name in cfg.models:
        model = load_model(name, models_dir=cfg.models_dir, device=cfg.device, threads=cfg.threads,
                           precision=cfg.precision)
        if not model.card.embedding_dim:
            continue
        if store is None or len(store.slots(model.card.id)[0]):
            return model
    if store is not None:
        from tagger.library.store import StoreError

        raise StoreError(store.root, f"no analysed tracks with embeddings for any of: {', '.join(cfg.models)} "
                                     "(run `tagger scan` first, or pick the model with --model)")
    raise ConfigError("models", "no model in the set has an embedding output to compare tracks with")


class Progress:
    """A one-line progress bar with ETA on a terminal; silent otherwise."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.start = time.monotonic()

    def __call__(self, done: int, total: int, path: Path) -> None:
        if not self.enabled or total == 0:
            return
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (total - done) if done else 0
        width = 30
        filled = int(width * done / total)
        name = os.fsdecode(path.name)[:40]
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  ETA {int(eta) // 60}:{int(eta) % 60:02d}  {name:<40}")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()


def bars(labels_scores: list[tuple[str, float]], width: int = 30) -> str:
    lines = []
    name_w = max((len(label) for label, _ in labels_scores), default=0)
    for label, score in labels_scores:
        n = round(score * width)
        lines.append(f"  {label:<{name_w}} {'█' * n}{'·' * (width - n)} {score:.2f}")
    return "\n".join(lines)


def decider_for(cfg: Config, cards: dict):
    """The scan's decision rule for a command that does not scan: the library's heads and, when a database
    exists, the album/folder mates' votes, so `analyze` and `show` say what a scan would write."""
    from tagger.decision.track import Decider
    from tagger.library.store import Store, StoreError

    def records() -> list[dict]:
        try:
            with Store(cfg.database, writer=False) as store:
                return list(store.records(next(iter(cards))))
        except StoreError as exc:
            log.debug("no album/folder mates from %s: %s", cfg.database, exc)
            return []

    has_db = (Path(cfg.database) / "records.json").is_file()
    return Decider(cards, cfg.fields, cfg.vocabulary, cfg.database, records if has_db else None)


def common(sp: argparse.ArgumentParser) -> None:
    """The options every command that loads settings shares."""
    sp.add_argument("--config", help="config file (default $XDG_CONFIG_HOME/tagger/config.yaml, if present)")
    sp.add_argument("--model", action="append",
                    help="model name or .onnx path; repeat for a set (replaces the configured `models`)")
    schema.add_flags(sp)  # --device, --model-precision, --threads, ...: the settings that have a flag
    sp.add_argument("--verbose", "-v", action="store_true")


def need_extra(*modules: str) -> None:
    """`tagger batch` and `similar --index` need the `batch` extra; say so instead of a traceback."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError("batch", f"needs {', '.join(missing)}: install the batch extra "
                                   "(pip install '.[batch]', or `make test` for the development setup)")
