"""`tagger batch run|index|import`: catalogue scale on Ray."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from tagger.cli.exits import EXIT_FILES_FAILED, EXIT_OK
from tagger.cli.options import load_models, need_extra, settings_from
from tagger.errors import ConfigError

log = logging.getLogger("tagger")



def cmd_batch_run(args: argparse.Namespace) -> int:
    from tagger.batch.job import BatchOptions, run_batch
    from tagger.batch.manifest import collect_items

    need_extra("ray", "pyarrow")
    cfg = settings_from(args)
    for name, value, low in (("--actors", args.actors, 1), ("--threads-per-actor", args.threads_per_actor, 1),
                             ("--rows-per-part", args.rows_per_part, 1), ("--decode-cpus", args.decode_cpus, 0.01),
                             ("--actor-cpus", args.actor_cpus, 0.01)):
        if value < low:
            raise ConfigError(name, f"must be at least {low}, got {value}")
    items = collect_items([Path(p).expanduser() for p in args.sources], cfg.extensions)
    if not items:
        raise ConfigError("batch run", f"nothing to analyse: no audio files or manifest rows in {', '.join(args.sources)}")
    models = load_models(cfg)
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
    need_extra("faiss", "pyarrow")
    from tagger.batch.index import IndexParams, build_index
    from tagger.batch.results import read_cards

    cards = read_cards(Path(args.results))
    model = args.index_model or next((c.id for c in cards.values() if c.embedding_dim), None)
    if model is None:
        raise ConfigError(args.results, "no model with embeddings in these results")
    info = build_index(Path(args.results), Path(args.output), model,
                       IndexParams(nlist=args.nlist, m=args.m, nprobe=args.nprobe, rerank=args.rerank))
    print(json.dumps(info, indent=1))
    return EXIT_OK


def cmd_batch_import(args: argparse.Namespace) -> int:
    need_extra("pyarrow")
    from tagger.batch.importer import import_results
    from tagger.batch.results import parts

    if not parts(Path(args.results)):
        raise ConfigError(args.results, "no batch results here (part-*.parquet files from `tagger batch run`)")
    from tagger.library.store import Store

    cfg = settings_from(args)
    with Store(cfg.database, writer=True) as store:
        rep = import_results(Path(args.results), store)
    print(f"imported {rep.ok} analyses and {rep.failed} failures ({', '.join(rep.models)}) into {cfg.database}; "
          "`tagger scan` writes their tags without decoding them again")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction, common: Callable[[argparse.ArgumentParser], None]) -> None:
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
