"""Command line: the only place that configures logging and turns errors into exit codes.

Exit codes: 0 success; 1 some files failed (decode or tag write; see the summary); 2 bad configuration or
usage; 3 model problem; 4 database problem; 5 database in use by another process; 130 interrupted; 141 the
reader of the output closed it (`| head`), ended quietly.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, load_config
from .errors import ConfigError, StoreLockedError, TaggerError
from .model import Model, load_model

log = logging.getLogger("tagger")

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # what a shell shows for a program ended by SIGPIPE: the output's reader went away


class _JournalFormatter(logging.Formatter):
    """Under systemd (JOURNAL_STREAM set) prefix each line with its syslog priority, <3> to <7>,
    which journald turns into the entry's level; elsewhere plain 'LEVEL name: message'."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")
        self.journal = bool(os.environ.get("JOURNAL_STREAM"))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.journal:
            prio = self.PRIORITY.get(record.levelno, 6)
            return "\n".join(f"<{prio}>{line}" for line in text.splitlines())
        return f"{record.levelname} {text}"


def _setup_logging(verbose: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JournalFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("faiss").setLevel(logging.WARNING)  # it reports every CPU build it tries at INFO
    return handler


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(Path(args.config) if args.config else None)
    overrides: dict[str, Any] = {}
    if getattr(args, "model", None):
        overrides["models"] = tuple(args.model)
    from .config import BOUNDS
    if getattr(args, "model_precision", None):
        overrides["precision"] = args.model_precision
    for name in ("device", "threads", "batch_size", "max_windows"):
        value = getattr(args, name, None)
        if value is not None:
            if name in BOUNDS and not BOUNDS[name][0] <= value <= BOUNDS[name][1]:
                lo, hi = BOUNDS[name]
                raise ConfigError(f"--{name.replace('_', '-')}", f"must be an integer >= {lo} and <= {hi}, got {value}")
            overrides[name] = value
    if getattr(args, "database", None):
        overrides["database"] = Path(args.database).expanduser()
    if getattr(args, "no_write", False):
        overrides["write_enabled"] = False
    if overrides:
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    return cfg


def _models(cfg: Config) -> list[Model]:
    from .scan import load_models

    return load_models(cfg)


def _lookup_model(cfg: Config, store=None) -> Model:
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
        from .store import StoreError

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


def _print_diff(outcome, out=None) -> None:
    out = out or sys.stdout
    print(os.fsdecode(outcome.path), file=out)
    if outcome.status != "ok":
        print(f"  failed: {outcome.reason}", file=out)
        return
    if outcome.write_error:
        print(f"  not written: {outcome.write_error}", file=out)
    if not outcome.changes:
        print("  (no tag changes)", file=out)
    for c in outcome.changes:
        print(f"  {c.field}: {c.before!r} -> {c.after!r}", file=out)


def cmd_scan(args: argparse.Namespace) -> int:
    from .control import Inbox
    from .scan import scan
    from .store import Store

    cfg = _config(args)
    roots = [Path(p).expanduser() for p in args.paths] or list(cfg.library)
    models = _models(cfg)
    # --pretend reads the database (unchanged files are decided from their stored vectors, with the
    # library's trained heads) but never writes to it.
    if args.pretend:
        store = Store(cfg.database, writer=False) if (Path(cfg.database) / "records.json").exists() else None
    else:
        store = Store(cfg.database, writer=True)
    try:
        if store is not None and not args.pretend:  # corrections made in the web page while no daemon ran
            Inbox(cfg.database).drain(store, cfg)
        report = scan(roots, cfg, models, store, force=args.force, pretend=args.pretend,
                      progress=None if args.json else Progress())
        if store is not None and not args.pretend:
            Inbox(cfg.database).drain(store, cfg)
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=True, indent=1))
    else:
        if args.pretend:
            for o in report.outcomes:
                _print_diff(o)
        for root in report.missing_roots:
            print(f"missing library folder (nothing removed): {root}", file=sys.stderr)
        speed = f", {report.audio_seconds / report.seconds:.0f}x realtime" if report.seconds > 0 and report.analysed else ""
        print(f"analysed {report.analysed}, skipped {report.skipped} unchanged, "
              + (f"decided again {report.redecided}, " if report.redecided else "") + f"failed {len(report.failed)}, "
              f"tags written to {report.written}" + (" (pretend: nothing written)" if args.pretend else "")
              + f", moved {report.moved}, removed {report.removed} stale records{speed}")
        for path, reason in report.failed:
            print(f"  failed: {path}: {reason}")
        for path, reason in report.write_failed:
            print(f"  tags not written: {path}: {reason}")
    bad = report.failed or report.write_failed or report.missing_roots
    return EXIT_FILES_FAILED if bad else EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    """The web page's correction from the command line: through the running daemon when there is one."""
    from .control import Correction, Inbox, correct_files
    from .store import Store, path_key

    cfg = _config(args)
    ops = [(f, list(v)) for f, v in (("genre", args.genre), ("mood", args.mood)) if v]
    ops += [(f, []) for f in args.clear or ()] + [(f, None) for f in args.unlock or ()]
    if not ops:
        raise ConfigError("set", "give --genre/--mood values, --clear FIELD or --unlock FIELD")
    from .tags import clean_values

    for field, values in ops:
        if values:
            try:
                clean_values(field, values)
            except ValueError as exc:
                raise ConfigError(f"--{field}", str(exc)) from None
    paths = [Path(p).expanduser().absolute() for p in args.files]
    results: list[dict] = []
    try:
        store = Store(cfg.database, writer=True)
    except StoreLockedError:  # the daemon holds the database: it applies the request from its inbox
        inbox = Inbox(cfg.database)
        for field, values in ops:
            for p in paths:
                rid = inbox.submit(Correction(path_key(p), field, None if values is None else tuple(values)))
                got = inbox.wait(rid, 60.0)
                results.append(got or {"ok": False, "path": os.fsdecode(p),
                                       "error": "queued; the running tagger has not applied it within 60 s"})
    else:
        with store:
            for field, values in ops:
                results += correct_files(cfg, store, paths, field, values)
    for r in results:
        if r.get("ok"):
            print(f"{r['path']}: {r['field']} = {', '.join(r['values']) or '(none)'}"
                  + (" (locked)" if r["field"].upper() in r["locked"] else " (unlocked)"))
        else:
            print(f"tagger: not changed: {r.get('path', '')}: {r.get('error')}", file=sys.stderr)
    return EXIT_OK if all(r.get("ok") for r in results) else EXIT_FILES_FAILED


def _bars(labels_scores: list[tuple[str, float]], width: int = 30) -> str:
    lines = []
    name_w = max((len(label) for label, _ in labels_scores), default=0)
    for label, score in labels_scores:
        n = round(score * width)
        lines.append(f"  {label:<{name_w}} {'█' * n}{'·' * (width - n)} {score:.2f}")
    return "\n".join(lines)


def _decider(cfg: Config, cards: dict):
    """The scan's decision rule for a command that does not scan: the library's heads and, when a database
    exists, the album/folder mates' votes, so `analyze` and `show` say what a scan would write."""
    from .heads import Decider
    from .store import Store, StoreError

    def records() -> list[dict]:
        try:
            with Store(cfg.database, writer=False) as store:
                return list(store.records(next(iter(cards))))
        except StoreError as exc:
            log.debug("no album/folder mates from %s: %s", cfg.database, exc)
            return []

    has_db = (Path(cfg.database) / "records.json").is_file()
    return Decider(cards, cfg.fields, cfg.vocabulary, cfg.database, records if has_db else None)


def cmd_analyze(args: argparse.Namespace) -> int:
    from .engine import Engine, TrackFailure
    from .store import path_key
    from .writer import read_fields

    cfg = _config(args)
    models = _models(cfg)
    decider = _decider(cfg, {m.card.id: m.card for m in models})
    engine = Engine(models, max_batch=cfg.batch_size, decode_workers=cfg.decode_workers, max_windows=cfg.max_windows,
                    decode_processes=cfg.decode_processes)
    paths = [Path(p) for p in args.files]
    failed = 0
    out = []
    try:
        for res in engine.analyse(paths):
            if isinstance(res, TrackFailure):
                failed += 1
                if args.json:
                    out.append({"path": os.fsdecode(res.path), "error": res.reason})
                else:
                    print(f"{os.fsdecode(res.path)}: error: {res.reason}", file=sys.stderr)
                continue
            vectors = {mid: (m.card.analyser, m.tags, m.embedding) for mid, m in res.models.items()}
            try:
                album = (read_fields(res.path, names=("ALBUM",))["ALBUM"] or [None])[0]
            except TaggerError:
                album = None
            decision = decider.decide(vectors, path_key(res.path), album)
            if args.json:
                out.append({"path": os.fsdecode(res.path), "duration": round(res.duration, 3),
                            "models": {mid: {"analyser": m.card.analyser, "windows": m.n_windows,
                                             "tags": {k: round(float(v), 6) for k, v in
                                                      sorted(zip(m.card.labels, m.tags), key=lambda kv: -kv[1])}}
                                       for mid, m in res.models.items()},
                            "decision": {name: {"values": fd.written, "reason": fd.reason,
                                                "candidates": {c.value: round(c.score, 4) for c in fd.candidates[:8]}}
                                         for name, fd in decision.fields.items()}})
                continue
            print(f"{os.fsdecode(res.path)}  ({res.duration:.1f} s)")
            for mid, m in res.models.items():
                scores = sorted(zip(m.card.labels, map(float, m.tags)), key=lambda kv: -kv[1])
                print(f" {mid} ({m.n_windows} windows of {m.card.window / m.card.sample_rate:.0f} s)")
                print(_bars(scores[: args.top]))
            print(" decision")
            for name, fd in decision.fields.items():
                print(f"  {name}: {', '.join(fd.written) or '(nothing)'}  <- {fd.reason}")
    finally:
        engine.close()  # decoder processes, when auto chose them (a GPU)
    if args.json:
        print(json.dumps(out, ensure_ascii=True, indent=1))
    return EXIT_FILES_FAILED if failed else EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from .heads import heads_dir, remove_heads
    from .store import Store

    cfg = _config(args)
    fields = tuple(args.field) if args.field else None
    if args.remove:
        removed = remove_heads(cfg.database, fields)
        for path in removed:
            print(f"removed {path}")
        if not removed:
            print(f"no trained heads in {heads_dir(cfg.database)}")
        else:
            print("the next `tagger scan` (or the daemon after `systemctl reload tagger`) decides those fields "
                  "with the model set again and replaces the values the heads wrote")
        return EXIT_OK
    import importlib.util

    missing = [m for m in ("torch", "onnx", "matplotlib", "exporter") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError("train", f"needs the training extra ({', '.join(missing)} missing): "
                                   "pip install 'tagger[train]' (or `make setup-dev`)")
    if not 0.0 < args.precision <= 1.0:
        raise ConfigError("--precision", f"must be in (0, 1], got {args.precision}")
    from exporter.heads import TRAINABLE, TrainOptions, train

    opts = TrainOptions(fields=fields or TRAINABLE, calibration=args.calibration, precision=args.precision,
                        min_tracks=args.min_tracks)
    if not (Path(cfg.database) / "records.json").exists():
        raise ConfigError(str(cfg.database), "no database yet: run `tagger scan` first")
    cards = [m.card for m in _models(cfg)]
    bar = sys.stderr.isatty() and not args.json

    def progress(name: str, done: int, total: int, eta: float | None) -> None:
        if bar:
            sys.stderr.write(f"\rtraining {name}: fit {done}/{total}" + (f", ETA {eta:.0f} s " if eta else " "))
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    with Store(cfg.database, writer=False) as store:
        results = train(store, cards, cfg.fields, Path(cfg.database), opts, progress)
    if args.json:
        print(json.dumps([{"field": r.field, "status": r.status, "reason": r.reason or None,
                           "head": os.fsdecode(r.head) if r.head else None, "report": r.report or None}
                          for r in results], ensure_ascii=True, indent=1))
    else:
        for r in results:
            if r.status != "trained":
                print(f"{r.field}: not trained: {r.reason}")
                continue
            rep = r.report
            prec = rep["precision_when_written"]
            print(f"{r.field}: head trained on {rep['tracks']} tracks, {len(rep['labels'])} values "
                  f"({rep['untagged_tracks']} untagged tracks to decide); held out ({rep['split']['kind']}): "
                  f"accuracy {rep['accuracy']:.2f} (majority {rep['majority_baseline']:.2f}), would write "
                  f"{rep['coverage']:.0%} of them at precision " + (f"{prec:.2f}" if prec is not None else "n/a"))
            ctx = rep["context"]
            print("  album/folder mates: " + (f"used (held-out precision {ctx['precision']:.2f} over {ctx['voted']} "
                                                 "tracks)" if ctx["enabled"] else ctx["note"]))
            if rep["left_out_rare"]:
                print(f"  left out (fewer than {opts.min_tracks} tracks): {', '.join(sorted(rep['left_out_rare']))}")
            never = [k for k, v in rep["per_label"].items() if "never_written" in v]
            if never:  # said as the scan decides: mates that agree (when enabled) still give these values
                mates = "; agreeing album/folder mates still give them" if ctx["enabled"] else ""
                print(f"  the head alone never writes (held-out precision below {opts.precision:.2f}): "
                      f"{', '.join(never)}{mates}")
            if rep["split"]["labels_split_by_track"]:
                print(f"  from one album only, so evaluated within it: {', '.join(rep['split']['labels_split_by_track'])}")
            print(f"  head: {r.head}\n  report: {r.files[1].parent}")
        if any(r.status == "trained" for r in results):
            print("the next `tagger scan` (or the daemon after `systemctl reload tagger`) writes these fields "
                  "in your vocabulary, replacing only values this tool wrote")
    if not any(r.status == "trained" for r in results):
        print("tagger: trained nothing (see the reason per field above); tag more of your tracks with your own "
              f"values (at least {opts.min_tracks} per value, or lower --min-tracks) and run `tagger scan`, then "
              "`tagger train` again", file=sys.stderr)
        return EXIT_FILES_FAILED
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from .card import Card, CardError
    from .store import Store, path_key

    cfg = _config(args)
    if args.top < 1:
        raise ConfigError("--top", f"must be at least 1, got {args.top}")
    store = Store(cfg.database, writer=False)
    path = Path(args.file)
    recs = list(store.for_path(path_key(path)))
    if not recs:
        raise TaggerError(path, "not in the database (run `tagger scan` on it first)")  # exit 1: not a database fault
    out = []
    vectors: dict = {}
    cards: dict = {}
    for rec in recs:
        entry = {k: v for k, v in rec.items() if k != "slot"}
        if rec.get("status") == "ok" and not store.has_vectors(rec):
            entry["problem"] = "its vectors are missing from the database; `tagger scan` re-analyses it"
        elif rec.get("status") == "ok":
            tags, emb = store.vectors(rec)
            text = store.card_json(rec["model"])
            try:
                card = Card.from_json(text) if text else None
            except CardError:
                card = None
            if card is not None and len(card.labels) == len(tags):
                cards[rec["model"]], vectors[rec["model"]] = card, (str(rec.get("analyser")), tags, emb)
                entry["tags"] = {label: round(float(s), 6) for label, s in
                                 sorted(zip(card.labels, tags), key=lambda kv: -kv[1])}
            else:
                entry["tags"] = [float(x) for x in tags]
        out.append(entry)
    decision = _decider(cfg, cards).decide(vectors, recs[0]["path"], recs[0].get("album")) if vectors else None
    decided = {name: {"values": fd.written, "reason": fd.reason} for name, fd in decision.fields.items()} \
        if decision else {}
    if args.json:
        print(json.dumps({"path": recs[0]["path"], "decision": decided, "models": out}, ensure_ascii=True, indent=1))
        return EXIT_OK
    print(recs[0]["path"])
    if decided:
        print(" decision (what a scan writes)")
        for name, d in decided.items():
            print(f"  {name}: {', '.join(d['values']) or '(nothing)'}  <- {d['reason']}")
    for entry in out:
        print(f" {entry['model']} ({entry['analyser']}), analysed {entry['analysed_at']}, status {entry['status']}")
        if entry.get("reason"):
            print(f"  reason: {entry['reason']}")
        if entry.get("problem"):
            print(f"  problem: {entry['problem']}")
        if isinstance(entry.get("tags"), dict):
            items = list(entry["tags"].items())
            print(_bars(items if args.all else items[: args.top]))
    written = next((e["written"] for e in out if e.get("written")), None)
    for field, values in (written or {}).items():
        print(f" wrote {field}: {', '.join(values) or '(removed)'}")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    """The tool's decisions on the user's own tagged tracks, against those tags; optionally calibrated."""
    from .evaluate import Calibration, Case, calibrate, evaluate
    from .heads import Decider, stored_vectors
    from .store import Store, path_key
    from .tags import CORRECTABLE

    cfg = _config(args)
    if args.remove_calibration:
        removed = Calibration.remove(cfg.database)
        print(f"removed {removed}" if removed else f"no calibration in {Calibration.path(cfg.database).parent}")
        return EXIT_OK
    if not 0.0 < args.precision <= 1.0:
        raise ConfigError("--precision", f"must be in (0, 1], got {args.precision}")
    if args.min_tracks < 1:
        raise ConfigError("--min-tracks", f"must be at least 1, got {args.min_tracks}")
    fields = tuple(args.field or CORRECTABLE)
    models = _models(cfg)
    cards = {m.card.id: m.card for m in models}
    first = next(iter(cards))
    prefixes = [path_key(Path(p).expanduser()) for p in args.paths]
    with Store(cfg.database, writer=False) as store:
        records = [r for r in store.records(first)
                   if not prefixes or any(r["path"] == p or r["path"].startswith(p.rstrip(os.sep) + os.sep)
                                          for p in prefixes)]
        decider = Decider(cards, cfg.fields, cfg.vocabulary, cfg.database, lambda: list(store.records(first)),
                          calibrated=False)  # the rule itself is measured, never its own calibration
        cases: dict[str, list[Case]] = {f: [] for f in fields}
        for rec in records:
            user = rec.get("user") or {}
            if not any(user.get(f) for f in fields):
                continue
            vectors = stored_vectors(store, rec["path"], cards, skip_missing=True)
            if not vectors:
                continue
            decision = decider.decide(vectors, rec["path"], rec.get("album"))
            for f in fields:
                if user.get(f) and f in decision.fields:
                    fd = decision.fields[f]
                    cases[f].append(Case(rec["path"], tuple(user[f]), tuple(fd.written),
                                         fd.values[0].value if fd.values else "",
                                         fd.values[0].score if fd.values else 0.0))
    reports = {f: evaluate(f, cs) for f, cs in cases.items() if cs}
    if not reports:
        print(f"tagger: no analysed track under {', '.join(args.paths) or 'the database'} carries your own "
              f"{' or '.join(fields)} (tag some, run `tagger scan --no-write`, then `tagger eval`)", file=sys.stderr)
        return EXIT_FILES_FAILED
    calibration = None
    if args.calibrate:
        thresholds = {f: calibrate(cases[f], args.precision, args.min_tracks) for f in reports}
        calibration = Calibration(args.precision, [c.analyser for c in cards.values()], thresholds,
                                  {f: len(cases[f]) for f in reports})
        saved = calibration.save(cfg.database)
    if args.json:
        out = {"reports": {f: r.to_json() for f, r in reports.items()}, "heads": decider.head_analysers}
        if calibration is not None:
            out["calibration"] = {"file": os.fsdecode(saved), "precision": calibration.precision,
                                  "thresholds": calibration.thresholds}
        print(json.dumps(out, ensure_ascii=True, indent=1))
        return EXIT_OK
    for f, r in reports.items():
        written = r.right + r.wrong
        print(f"{f}: {r.tracks} of your tracks carry your own {f}; the tool would write one for {written} "
              f"({written / r.tracks:.0%}): {r.right} right, {r.wrong} wrong, {r.nothing} nothing")
        width = max([len(v) for v in r.values] + [5])
        print(f"  {'value':<{width}}  yours  written  right  precision  coverage")
        for v, vr in r.values.items():
            prec = "-" if vr.precision is None else f"{vr.precision:.2f}"
            cov = "-" if vr.coverage is None else f"{vr.coverage:.2f}"
            print(f"  {v:<{width}}  {vr.user_tracks:>5}  {vr.written:>7}  {vr.right:>5}  {prec:>9}  {cov:>8}")
        if r.never_proposed:
            print(f"  never proposed: {', '.join(r.never_proposed)}")
        mixed = [f"{u} -> {t} {n}" for u, row in r.confusion.items() for t, n in row.items()
                 if t != "(nothing)" and t.casefold() != u.casefold()]
        if mixed:
            print(f"  confused (yours -> tool's): {'; '.join(mixed[:12])}")
    if decider.heads:
        print("note: trained heads decide " + ", ".join(h.field for h in decider.heads) + " and were trained on "
              "these very tracks; their held-out figures are in the training report")
    if calibration is not None:
        for f, th in calibration.thresholds.items():
            shown = ", ".join(f"{v} {'never' if t is None else f'>= {t:.2f}'}" for v, t in th.items()) or "none"
            print(f"calibrated {f} for precision {calibration.precision:.2f}: {shown}")
        print(f"saved {saved}; `tagger scan` and the daemon use it (`tagger eval --remove-calibration` undoes it)")
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    """Where the configuration lives, and a documented copy of the defaults to start one from."""
    from .config import DEFAULTS_FILE, default_config_path

    target = Path(args.config).expanduser() if args.config else default_config_path()
    if args.defaults:
        sys.stdout.write(DEFAULTS_FILE.read_text())
        return EXIT_OK
    if args.init:
        if target.exists() and not args.force:
            raise ConfigError(target, "already exists; edit it, or pass --force to replace it with the defaults")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(DEFAULTS_FILE.read_text())
            os.replace(tmp, target)
        except OSError as exc:
            raise ConfigError(target, f"cannot write: {exc.strerror or exc}") from exc
        print(f"wrote {target}: every key with its default and what it does; edit what you want to change")
        return EXIT_OK
    cfg = load_config(target if args.config else None)
    state = "in use" if cfg.source != "defaults" else "not present: the built-in defaults are in use " \
                                                      "(`tagger config --init` writes a copy to edit)"
    print(f"config file: {target} ({state})\ndatabase: {cfg.database}\nlibrary: "
          + ", ".join(map(str, cfg.library)) + f"\nmodels: {', '.join(cfg.models)}")
    return EXIT_OK


def cmd_undo(args: argparse.Namespace) -> int:
    from .scan import discover
    from .tags import plan_undo
    from .writer import read_fields, write_changes

    cfg = _config(args)
    if args.all and args.paths:
        raise ConfigError("undo", "give paths or --all, not both")
    if not args.all and not args.paths:
        raise ConfigError("undo", "give files or folders, or --all for the configured library")
    roots = list(cfg.library) if args.all else [Path(p).expanduser() for p in args.paths]
    unreadable: list[tuple[str, str]] = []
    files, missing = discover(roots, cfg.extensions, unreadable=unreadable)
    explicit = {Path(os.path.abspath(p)) for p in roots if Path(p).is_file()}
    failed = len(missing) + len(unreadable)
    for m in missing:
        print(f"tagger: error: {m}: no such file or folder", file=sys.stderr)
    for where, reason in unreadable:
        print(f"tagger: error: {where}: {reason}", file=sys.stderr)
    undone = 0
    for path in files:
        try:
            current = read_fields(path, id3_version=cfg.id3_version, v23_sep=cfg.id3v23_separator)
            changes = plan_undo(current)
            if not changes:
                if path in explicit:
                    print(f"{path}: nothing to undo")
                continue
            undone += 1
            if args.pretend:
                print(os.fsdecode(path))
                for c in changes:
                    print(f"  {c.field}: {c.before!r} -> {c.after!r}")
                continue
            write_changes(path, changes, expect=None, id3_version=cfg.id3_version, v23_sep=cfg.id3v23_separator)
            print(f"{path}: removed {', '.join(c.field for c in changes)}")
        except TaggerError as exc:
            failed += 1
            print(f"tagger: error: {exc}", file=sys.stderr)
    if len(files) > len(explicit):
        verb = "would undo" if args.pretend else "undid"
        print(f"{verb} the tool's tags in {undone} of {len(files)} files" + (f"; {failed} failed" if failed else ""),
              file=sys.stderr)
    return EXIT_FILES_FAILED if failed else EXIT_OK


def _lookup_setup(args: argparse.Namespace):
    """(config, read-only store, model spec, library view) for the lookup commands."""
    from .similar import Library
    from .store import Store

    cfg = _config(args)
    store = Store(cfg.database, writer=False)
    model = _lookup_model(cfg, store)
    return cfg, store, model, Library(store, model.spec.id, model.spec.labels)


def _seed(path: Path, lib, model) -> tuple[dict, Any]:
    """The seed's stored record and unit embedding; a file not in the database is analysed on the fly."""
    import numpy as np

    from .engine import Engine, TrackFailure
    from .errors import DecodeError
    from .store import path_key

    rec = lib.by_path.get(path_key(path))
    if rec is not None:
        return rec, lib.embedding_of(rec)
    (res,) = list(Engine(model, decode_workers=1).analyse([path]))
    if isinstance(res, TrackFailure):
        raise DecodeError(path, res.reason)
    emb = res.embedding / max(float(np.linalg.norm(res.embedding)), 1e-12)
    return {"path": path_key(path), "fingerprint": res.fingerprint, "duration": res.duration}, emb


def _filters(args: argparse.Namespace, lib, seed: dict | None):
    from .similar import folder_filter, resolve_tags, tag_filter

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
    from .similar import write_m3u

    out_file = getattr(args, "m3u", None) or getattr(args, "output", None)
    if out_file:
        write_m3u(rows, Path(out_file))
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
    _need_batch_extra("faiss", "pyarrow")
    import numpy as np

    from .batch.index import Index
    from .engine import Engine, TrackFailure
    from .errors import DecodeError
    from .store import path_key

    cfg = _config(args)
    index = Index(Path(args.index))
    seed_row = index.row_of.get(path_key(Path(args.file)))
    if seed_row is not None:
        query = np.asarray(index.unit[seed_row])
    else:
        model = _lookup_model(cfg)
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
    from .similar import build_playlist, resolve_tags

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


def _need_batch_extra(*modules: str) -> None:
    """`tagger batch` and `similar --index` need the `batch` extra; say so instead of a traceback."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError("batch", f"needs {', '.join(missing)}: install the batch extra "
                                   "(pip install '.[batch]', or `make test` for the development setup)")


def cmd_batch_run(args: argparse.Namespace) -> int:
    from .batch.job import BatchOptions, run_batch
    from .batch.manifest import collect_items

    _need_batch_extra("ray", "pyarrow")
    cfg = _config(args)
    for name, value, low in (("--actors", args.actors, 1), ("--threads-per-actor", args.threads_per_actor, 1),
                             ("--rows-per-part", args.rows_per_part, 1), ("--decode-cpus", args.decode_cpus, 0.01),
                             ("--actor-cpus", args.actor_cpus, 0.01)):
        if value < low:
            raise ConfigError(name, f"must be at least {low}, got {value}")
    items = collect_items([Path(p).expanduser() for p in args.sources], cfg.extensions)
    if not items:
        raise ConfigError("batch run", f"nothing to analyse: no audio files or manifest rows in {', '.join(args.sources)}")
    models = _models(cfg)
    opts = BatchOptions(output=Path(args.output), address=args.address, num_cpus=args.num_cpus,
                        gpus_per_actor=args.gpus_per_actor, actors=args.actors,
                        threads_per_actor=args.threads_per_actor, actor_cpus=args.actor_cpus,
                        decode_cpus=args.decode_cpus,
                        max_batch=cfg.batch_size, max_windows=cfg.max_windows, window_dtype=args.window_dtype,
                        device=cfg.device, precision=cfg.precision, rows_per_part=args.rows_per_part)

    def progress(done: int, total: int) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\r{done}/{total} tracks", end="", file=sys.stderr, flush=True)

    report = run_batch(items, models, opts, progress)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        rate = f", {60 * (report.ok + len(report.failed)) / report.seconds:.1f} tracks/min" if report.seconds else ""
        print(f"\n{report.ok} analysed, {len(report.failed)} failed, {report.skipped} already done{rate}; "
              f"results in {args.output}", file=sys.stderr)
        for path, reason in report.failed:
            print(f"  failed: {path}: {reason}", file=sys.stderr)
    return EXIT_FILES_FAILED if report.failed else EXIT_OK


def cmd_batch_index(args: argparse.Namespace) -> int:
    _need_batch_extra("faiss", "pyarrow")
    from .batch.index import IndexParams, build_index
    from .batch.results import read_cards

    cards = read_cards(Path(args.results))
    model = args.index_model or next((c.id for c in cards.values() if c.embedding_dim), None)
    if model is None:
        raise ConfigError(args.results, "no model with embeddings in these results")
    info = build_index(Path(args.results), Path(args.output), model,
                       IndexParams(nlist=args.nlist, m=args.m, nprobe=args.nprobe, rerank=args.rerank))
    print(json.dumps(info, indent=1))
    return EXIT_OK


def cmd_batch_import(args: argparse.Namespace) -> int:
    _need_batch_extra("pyarrow")
    from .batch.importer import import_results
    from .batch.results import parts

    if not parts(Path(args.results)):
        raise ConfigError(args.results, "no batch results here (part-*.parquet files from `tagger batch run`)")
    from .store import Store

    cfg = _config(args)
    with Store(cfg.database, writer=True) as store:
        rep = import_results(Path(args.results), store)
    print(f"imported {rep.ok} analyses and {rep.failed} failures ({', '.join(rep.models)}) into {cfg.database}; "
          "`tagger scan` writes their tags without decoding them again")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeConfig, serve

    cfg = _config(args)
    token = args.token or os.environ.get("TAGGER_TOKEN") or None
    sc = ServeConfig(host=args.host, port=args.port, token=token, allow_remote=args.allow_remote,
                     allowed_hosts=tuple(args.allowed_host or ()))
    from .store import Store, StoreError

    try:
        with Store(cfg.database, writer=False) as store:
            model = _lookup_model(cfg, store)
    except StoreError as exc:  # no usable database yet: the server itself reports that on start
        log.debug("choosing the lookup model without a database: %s", exc)
        model = _lookup_model(cfg)
    return serve(cfg, model, sc)


def cmd_watch(args: argparse.Namespace) -> int:
    import signal
    import threading
    from dataclasses import replace

    from .watch import Daemon

    stop = threading.Event()  # a SIGTERM during start-up (loading the model) still ends cleanly
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cfg = _config(args)
    if args.polling:
        cfg = replace(cfg, polling=True)
    if args.settle is not None:
        cfg = replace(cfg, settle_seconds=args.settle)
    roots = [Path(p).expanduser() for p in args.paths] or list(cfg.library)
    daemon = Daemon(cfg, roots, config_path=Path(args.config) if args.config else None, stop_event=stop)
    return daemon.run()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tagger", description="Tag a music library with ONNX music taggers.",
                                epilog="Exit codes: 0 ok, 1 some files failed, 2 configuration/usage, 3 model, "
                                       "4 database, 5 database in use, 130 interrupted.")
    p.add_argument("--version", action="version", version=f"tagger {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="config file (default $XDG_CONFIG_HOME/tagger/config.yaml, if present)")
        sp.add_argument("--model", action="append",
                        help="model name or .onnx path; repeat for a set (replaces the configured `models`)")
        sp.add_argument("--device", choices=["auto", "cpu", "cuda"])
        sp.add_argument("--model-precision", choices=["auto", "float", "int8"], dest="model_precision",
                        help="auto: verified int8 variants where the CPU has VNNI/AMX (default) | float | int8")
        sp.add_argument("--threads", type=int)
        sp.add_argument("--batch-size", type=int, dest="batch_size")
        sp.add_argument("--max-windows", type=int, dest="max_windows",
                        help="analyse at most N windows per track and model, spread evenly (0: all)")
        sp.add_argument("--database", help="database folder (overrides config)")
        sp.add_argument("--verbose", "-v", action="store_true")

    s = sub.add_parser("scan", help="analyse folders, store results, write tags (incremental)")
    s.add_argument("paths", nargs="*", help="files or folders (default: the configured library)")
    s.add_argument("--pretend", action="store_true", help="print the exact tag changes; write nothing (files or database)")
    s.add_argument("--force", action="store_true", help="re-analyse files even when unchanged")
    s.add_argument("--no-write", action="store_true", dest="no_write", help="store results but do not touch audio files")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    common(s)
    s.set_defaults(func=cmd_scan)

    a = sub.add_parser("analyze", aliases=["analyse"], help="tag files and print the result (no database, no writes)")
    a.add_argument("files", nargs="+")
    a.add_argument("--json", action="store_true", help="every label's probability as JSON")
    a.add_argument("--top", type=int, default=10)
    common(a)
    a.set_defaults(func=cmd_analyze)

    sh = sub.add_parser("show", help="what the database holds for a file")
    sh.add_argument("file")
    sh.add_argument("--json", action="store_true", help="the decision and every model's labels as JSON")
    sh.add_argument("--top", type=int, default=5, help="labels shown per model (default 5)")
    sh.add_argument("--all", action="store_true", help="every label of every model")
    common(sh)
    sh.set_defaults(func=cmd_show)

    si = sub.add_parser("similar", help="tracks that sound like FILE (cosine of stored embeddings)")
    si.add_argument("file")
    si.add_argument("-n", type=int, default=10)
    si.add_argument("--json", action="store_true", help="a list of {path, score, id, ...}, best first")
    si.add_argument("--m3u", help="also write the result as an .m3u8 playlist")
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
    common(pl)
    pl.set_defaults(func=cmd_playlist)

    w = sub.add_parser("watch", help="daemon: tag new and changed files as they arrive (systemd-ready)")
    w.add_argument("paths", nargs="*", help="folders to watch (default: the configured library)")
    w.add_argument("--polling", action="store_true", help="poll instead of inotify (network mounts)")
    w.add_argument("--settle", type=float, help="seconds a file must be quiet before analysis")
    common(w)
    w.set_defaults(func=cmd_watch)

    sv = sub.add_parser("serve", help="read-only HTTP JSON API (similar tracks, tags, search)")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8765)
    sv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or set TAGGER_TOKEN)")
    sv.add_argument("--allow-remote", action="store_true", dest="allow_remote",
                    help="needed to bind anything but a loopback address")
    sv.add_argument("--allowed-host", action="append", dest="allowed_host",
                    help="extra Host header names to accept (DNS-rebinding protection)")
    common(sv)
    sv.set_defaults(func=cmd_serve)

    t = sub.add_parser("train", help="learn your own genre/mood values from the library's tagged tracks")
    t.add_argument("--field", action="append", help="only this field (repeatable; default: genre and mood)")
    t.add_argument("--remove", action="store_true", help="delete the trained heads; fields go back to the model set")
    t.add_argument("--precision", type=float, default=0.9,
                   help="held-out precision a value must reach to be written (default 0.9); below it the head abstains")
    t.add_argument("--calibration", choices=["precision", "equal-rate"], default="precision",
                   help="threshold per value: the precision target (default) or where TPR equals TNR")
    t.add_argument("--min-tracks", type=int, default=5, dest="min_tracks",
                   help="values with fewer tagged tracks are left out (default 5)")
    t.add_argument("--json", action="store_true")
    common(t)
    t.set_defaults(func=cmd_train)

    b = sub.add_parser("batch", help="catalogue scale: analyse on Ray, index, import")
    bsub = b.add_subparsers(dest="batch_command", required=True)
    br = bsub.add_parser("run", help="analyse folders, files or a manifest (CSV/Parquet: path|uri[, id]) on Ray")
    br.add_argument("sources", nargs="+")
    br.add_argument("--output", "-o", required=True, help="results folder (Parquet parts; a rerun resumes)")
    br.add_argument("--address", help="Ray cluster address (default: start Ray on this machine)")
    br.add_argument("--num-cpus", type=int, dest="num_cpus", help="CPUs for a local Ray (default: all)")
    br.add_argument("--actors", type=int, default=1, help="inference actors (default 1)")
    br.add_argument("--threads-per-actor", type=int, default=2, dest="threads_per_actor",
                    help="ONNX Runtime threads per actor (default 2)")
    br.add_argument("--actor-cpus", type=float, default=1.0, dest="actor_cpus",
                    help="CPUs Ray reserves per actor (default 1)")
    br.add_argument("--gpus-per-actor", type=float, dest="gpus_per_actor",
                    help="GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    br.add_argument("--decode-cpus", type=float, default=1.0, dest="decode_cpus", help="CPUs per decode task")
    br.add_argument("--window-dtype", choices=["float32", "float16"], default="float32", dest="window_dtype",
                    help="windows in the object store (float16 halves it but moves tags by up to 0.009)")
    br.add_argument("--rows-per-part", type=int, default=512, dest="rows_per_part",
                    help="result rows per Parquet part (parts are also written every 30 s)")
    br.add_argument("--json", action="store_true")
    common(br)
    br.set_defaults(func=cmd_batch_run)
    bi = bsub.add_parser("index", help="an IVF-PQ similarity index (exact re-ranking) from batch results")
    bi.add_argument("results")
    bi.add_argument("--output", "-o", required=True)
    bi.add_argument("--index-model", dest="index_model", help="whose embeddings (default: the first with any)")
    bi.add_argument("--nlist", type=int, default=0, help="inverted lists (default about 4*sqrt(tracks))")
    bi.add_argument("--m", type=int, default=25, help="PQ bytes per track (must divide the dimension)")
    bi.add_argument("--nprobe", type=int, default=64, help="inverted lists visited per query (default 64)")
    bi.add_argument("--rerank", type=int, default=400, help="candidates re-scored exactly (default 400)")
    common(bi)
    bi.set_defaults(func=cmd_batch_index)
    bm = bsub.add_parser("import", help="batch results into the library database")
    bm.add_argument("results")
    common(bm)
    bm.set_defaults(func=cmd_batch_import)

    st = sub.add_parser("set", help="set your own genre/mood (locked: the tool never overwrites it)")
    st.add_argument("files", nargs="+")
    st.add_argument("--genre", action="append", help="a genre value (repeat for several)")
    st.add_argument("--mood", action="append", help="a mood value (repeat for several)")
    st.add_argument("--clear", action="append", choices=["genre", "mood"], help="remove the field's values and lock it")
    st.add_argument("--unlock", action="append", choices=["genre", "mood"],
                    help="give the field back to the tool (its values stay as yours)")
    common(st)
    st.set_defaults(func=cmd_set)

    ev = sub.add_parser("eval", help="how right the tool would be on your library: its decisions against your tags")
    ev.add_argument("paths", nargs="*", help="only tracks under these folders (default: every analysed track)")
    ev.add_argument("--field", action="append", choices=["genre", "mood"], help="only this field (repeatable)")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--calibrate", action="store_true",
                    help="store per-value thresholds so that what scans write reaches --precision on your tracks")
    ev.add_argument("--precision", type=float, default=0.9, help="with --calibrate: the precision to reach (0.9)")
    ev.add_argument("--min-tracks", type=int, default=3, dest="min_tracks",
                    help="with --calibrate: values led on fewer tagged tracks keep the default rule (3)")
    ev.add_argument("--remove-calibration", action="store_true", dest="remove_calibration",
                    help="delete the stored calibration; scans go back to the model set's own rule")
    common(ev)
    ev.set_defaults(func=cmd_eval)

    c = sub.add_parser("config", help="where the config file lives; --init writes one with every default")
    c.add_argument("--config", help="config file (default $XDG_CONFIG_HOME/tagger/config.yaml)")
    c.add_argument("--init", action="store_true", help="write the documented defaults there, to edit")
    c.add_argument("--force", action="store_true", help="with --init: replace an existing file")
    c.add_argument("--defaults", action="store_true", help="print the documented defaults")
    c.set_defaults(func=cmd_config)

    u = sub.add_parser("undo", help="remove the tags this tool wrote (as listed in TAGGER_WRITTEN)")
    u.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (walked like a scan)")
    u.add_argument("--all", action="store_true", help="every file of the configured library")
    u.add_argument("--pretend", action="store_true", help="print what would be removed; change nothing")
    common(u)
    u.set_defaults(func=cmd_undo)
    return p


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # print undecodable file names as the bytes they are
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = _setup_logging(getattr(args, "verbose", False))
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return code
    except BrokenPipeError:  # `tagger show --json | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(f"tagger: configuration error: {exc}", file=sys.stderr)
        return exc.exit_code
    except TaggerError as exc:
        print(f"tagger: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tagger: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        logging.getLogger().removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
