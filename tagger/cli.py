"""Command line: the only place that configures logging and turns errors into exit codes.

Exit codes: 0 success; 1 some files failed (decode or tag write; see the summary); 2 bad configuration or
usage; 3 model problem; 4 database problem; 5 database in use by another process; 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import __version__
from .config import Config, load_config
from .errors import ConfigError, TaggerError
from .model import Model, load_model

log = logging.getLogger("tagger")

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _setup_logging(verbose: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(Path(args.config) if args.config else None)
    overrides = {}
    for name in ("model", "device", "threads", "batch_size"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "database", None):
        overrides["database"] = Path(args.database).expanduser()
    if getattr(args, "no_write", False):
        overrides["write_enabled"] = False
    if overrides:
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    return cfg


def _model(cfg: Config) -> Model:
    return load_model(cfg.model, models_dir=cfg.models_dir, device=cfg.device, threads=cfg.threads)


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
    from .scan import scan
    from .store import Store

    cfg = _config(args)
    roots = [Path(p).expanduser() for p in args.paths] or list(cfg.library)
    model = _model(cfg)
    store = None if args.pretend else Store(cfg.database, writer=True)
    try:
        report = scan(roots, cfg, model, store, force=args.force, pretend=args.pretend,
                      progress=None if args.json else Progress())
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=1))
    else:
        if args.pretend:
            for o in report.outcomes:
                _print_diff(o)
        for root in report.missing_roots:
            print(f"missing library folder (nothing removed): {root}", file=sys.stderr)
        speed = f", {report.audio_seconds / report.seconds:.0f}x realtime" if report.seconds > 0 and report.analysed else ""
        print(f"analysed {report.analysed}, skipped {report.skipped} unchanged, failed {len(report.failed)}, "
              f"tags written to {report.written}" + (" (pretend: nothing written)" if args.pretend else "")
              + f", removed {report.removed} stale records{speed}")
        for path, reason in report.failed:
            print(f"  failed: {path}: {reason}")
        for path, reason in report.write_failed:
            print(f"  tags not written: {path}: {reason}")
    bad = report.failed or report.write_failed or report.missing_roots
    return EXIT_FILES_FAILED if bad else EXIT_OK


def _bars(labels_scores: list[tuple[str, float]], width: int = 30) -> str:
    lines = []
    name_w = max((len(label) for label, _ in labels_scores), default=0)
    for label, score in labels_scores:
        n = round(score * width)
        lines.append(f"  {label:<{name_w}} {'█' * n}{'·' * (width - n)} {score:.2f}")
    return "\n".join(lines)


def cmd_analyze(args: argparse.Namespace) -> int:
    from .engine import Engine, TrackFailure

    cfg = _config(args)
    model = _model(cfg)
    engine = Engine(model, max_batch=cfg.batch_size, decode_workers=cfg.decode_workers)
    paths = [Path(p) for p in args.files]
    failed = 0
    out = []
    for res in engine.analyse(paths):
        if isinstance(res, TrackFailure):
            failed += 1
            if args.json:
                out.append({"path": os.fsdecode(res.path), "error": res.reason})
            else:
                print(f"{os.fsdecode(res.path)}: error: {res.reason}", file=sys.stderr)
            continue
        scores = sorted(zip(model.spec.labels, map(float, res.tags)), key=lambda kv: -kv[1])
        if args.json:
            out.append({"path": os.fsdecode(res.path), "model": model.spec.analyser, "duration": round(res.duration, 3),
                        "windows": res.n_windows, "tags": {k: round(v, 6) for k, v in scores}})
        else:
            print(f"{os.fsdecode(res.path)}  ({res.duration:.1f} s, {model.spec.id})")
            print(_bars(scores[: args.top]))
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=1))
    return EXIT_FILES_FAILED if failed else EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from .store import Store, StoreError

    cfg = _config(args)
    store = Store(cfg.database, writer=False)
    path = Path(args.file)
    recs = [r for r in store.records() if r["path"] == os.fsdecode(os.path.abspath(path))]
    if not recs:
        raise StoreError(path, "not in the database (run `tagger scan` on it first)")
    out = []
    for rec in recs:
        entry = {k: v for k, v in rec.items() if k != "slot"}
        if rec.get("status") == "ok":
            tags, _ = store.vectors(rec)
            labels = _labels_for(rec["model"], cfg)
            entry["tags"] = {label: round(float(s), 6) for label, s in
                             sorted(zip(labels, tags), key=lambda kv: -kv[1])} if labels else [float(x) for x in tags]
        out.append(entry)
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return EXIT_OK
    for entry in out:
        print(f"{entry['path']}\n  model {entry['analyser']}, analysed {entry['analysed_at']}, status {entry['status']}")
        if entry.get("reason"):
            print(f"  reason: {entry['reason']}")
        if entry.get("written"):
            for field, values in entry["written"].items():
                print(f"  wrote {field}: {values}")
        if isinstance(entry.get("tags"), dict):
            print(_bars(list(entry["tags"].items())))
    return EXIT_OK


def _labels_for(model_id: str, cfg: Config) -> tuple[str, ...] | None:
    """Labels of a stored model: from the configured model when it matches, else a bundled one."""
    from .model import BUNDLED_DIR, Model as _M  # noqa: F401

    try:
        import onnxruntime as ort

        from .model import ModelSpec, resolve_model_path

        path = resolve_model_path(model_id, cfg.models_dir)
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        return ModelSpec.from_metadata(path, meta).labels
    except TaggerError:
        return None


def cmd_undo(args: argparse.Namespace) -> int:
    from .tags import plan_undo
    from .writer import read_fields, write_changes

    cfg = _config(args)
    failed = 0
    for name in args.files:
        path = Path(name)
        try:
            current = read_fields(path, id3_version=cfg.id3_version, v23_sep=cfg.id3v23_separator)
            changes = plan_undo(current)
            if args.pretend:
                for c in changes:
                    print(f"{path}\n  {c.field}: {c.before!r} -> {c.after!r}")
                continue
            write_changes(path, changes, expect=None, id3_version=cfg.id3_version, v23_sep=cfg.id3v23_separator)
            print(f"{path}: {'removed ' + ', '.join(c.field for c in changes) if changes else 'nothing to undo'}")
        except TaggerError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    return EXIT_FILES_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tagger", description="Tag a music library with ONNX music taggers.",
                                epilog="Exit codes: 0 ok, 1 some files failed, 2 configuration/usage, 3 model, "
                                       "4 database, 5 database in use, 130 interrupted.")
    p.add_argument("--version", action="version", version=f"tagger {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="config file (default $XDG_CONFIG_HOME/tagger/config.yaml, if present)")
        sp.add_argument("--model", help="model name or .onnx path (overrides config)")
        sp.add_argument("--device", choices=["auto", "cpu", "cuda"])
        sp.add_argument("--threads", type=int)
        sp.add_argument("--batch-size", type=int, dest="batch_size")
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
    sh.add_argument("--json", action="store_true")
    common(sh)
    sh.set_defaults(func=cmd_show)

    u = sub.add_parser("undo", help="remove the tags this tool wrote (as listed in TAGGER_WRITTEN)")
    u.add_argument("files", nargs="+")
    u.add_argument("--pretend", action="store_true")
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
        return args.func(args)
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
