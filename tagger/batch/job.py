"""`tagger batch run`: the scan's decode -> windows -> inference -> aggregation on Ray Data.

Shape of the job: a dataset of (id, path) rows; a CPU stage (Ray tasks, ``num_cpus`` each) that decodes one
track and cuts every model's fixed-shape windows (``stages.prepare``: only the windows enter the object store,
never a track's whole PCM, and at most ``max_windows`` per model); an inference stage in a pool of actors,
each holding the model set's ONNX Runtime sessions with explicit thread counts (and ``num_gpus`` when the
cluster has GPUs), which runs the windows and aggregates each model's song-level outputs inside the actor
(``stages.infer``); the driver streams the results into Parquet parts as they arrive (``results.py``).

A rerun with the same output folder skips every track that already has a row from every model at its current
version, so a job killed half way resumes where it stopped. A bad file becomes a row with its reason.
Ray runs the same code on a laptop (``ray.init()`` with local resources) and on a cluster (``--address``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagger.analysis.engine import pipeline_settings
from tagger.batch.results import ResultWriter, finished, schema
from tagger.batch.stages import Item, infer, prepare
from tagger.errors import ConfigError
from tagger.models.card import Card
from tagger.models.session import Model

log = logging.getLogger(__name__)


@dataclass
class BatchOptions:
    output: Path
    address: str | None = None  # a Ray cluster (ray://... or host:port); None: this machine
    num_cpus: int | None = None  # for a local Ray started here; None: all cores
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    actors: int = 1
    threads_per_actor: int = 2  # ONNX Runtime intra-op threads in each actor
    # CPUs Ray reserves per actor (None: threads_per_actor). One for two threads by default: inference waits
    # on decoded windows part of the time, and on 2 cores this matched `tagger scan` where a strict
    # reservation (1 thread, 1 CPU) was 29 % slower (bench/bench_batch.py).
    actor_cpus: float | None = 1.0
    decode_cpus: float = 1.0
    decode_memory_mb: int = 384  # reserved per decode task: decoder buffers plus one track's windows
    max_batch: int = 4
    max_windows: int = 32
    window_dtype: str = "float32"
    rows_per_part: int = 512
    device: str = "auto"
    precision: str = "auto"  # decided on each actor's own CPU (a cluster's nodes may differ)


@dataclass
class BatchReport:
    tracks: int = 0  # in the sources
    skipped: int = 0  # finished by an earlier run
    ok: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"tracks": self.tracks, "skipped": self.skipped, "ok": self.ok,
                "failed": [{"path": p, "reason": r} for p, r in self.failed], "rows": self.rows,
                "seconds": round(self.seconds, 2)}


def _prepare_batch(batch: dict[str, Any], cards_json: list[str], max_windows: int, dtype: str) -> dict[str, Any]:
    """Ray task body: one track in, one row of fixed-shape window arrays out."""
    import numpy as np

    cards = [Card.from_json(c) for c in cards_json]
    row = prepare(Item(str(batch["id"][0]), str(batch["path"][0])), cards, max_windows, dtype)
    return {k: (v[None] if isinstance(v, np.ndarray) else np.array([v])) for k, v in row.items()}


class InferenceActor:
    """Holds the model set's sessions for the life of the actor; one track's windows per call."""

    def __init__(self, paths: list[str], device: str, threads: int, max_batch: int, precision: str = "auto") -> None:
        self.models = [Model(Path(p), device=device, threads=threads, memory="shared",
                             precision=precision) for p in paths]
        # 0 (the config's auto): the batch that suits this actor's device (4 on a CPU, 16 on a GPU)
        self.max_batch = pipeline_settings(self.models, batch=max_batch).batch

    def __call__(self, batch: dict[str, Any]):
        import pyarrow as pa

        rows: list[dict[str, Any]] = []
        for j in range(len(batch["id"])):
            row = {k: (v[j].item() if getattr(v[j], "ndim", 1) == 0 else v[j]) for k, v in batch.items()}
            rows += infer(self.models, row, self.max_batch)
        return pa.Table.from_pylist(rows, schema=schema())


def run_batch(items: Sequence[Item], models: Sequence[Model], opts: BatchOptions,
              progress: Callable[[int, int], None] | None = None) -> BatchReport:
    """Analyse ``items`` with the model set on Ray; results stream into ``opts.output``."""
    import ray

    if opts.window_dtype not in ("float32", "float16"):
        raise ConfigError("--window-dtype", f"must be float32 or float16, got {opts.window_dtype!r}")
    report = BatchReport(tracks=len(items))
    cards = [m.card for m in models]
    writer = ResultWriter(opts.output, cards, opts.rows_per_part)
    done = finished(opts.output, [c.analyser for c in cards])
    todo = [it for it in items if it.id not in done]
    report.skipped = len(items) - len(todo)
    t0 = time.monotonic()
    if not todo:
        return report
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=opts.address, num_cpus=opts.num_cpus if opts.address is None else None,
                 include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        resources = ray.cluster_resources()
        gpus = opts.gpus_per_actor
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
        actor_cpus = opts.threads_per_actor if opts.actor_cpus is None else opts.actor_cpus
        # Actors hold their CPUs for the whole job: if they took every CPU no decode task could ever run.
        need = opts.actors * actor_cpus + opts.decode_cpus
        if need > resources.get("CPU", 0):
            raise ConfigError("batch", f"{opts.actors} actor(s) x {actor_cpus} CPU + {opts.decode_cpus} CPU for "
                                       f"decoding needs {need} CPUs; the Ray cluster has {resources.get('CPU', 0):g}")
        if gpus and opts.actors * gpus > resources.get("GPU", 0):
            raise ConfigError("batch", f"{opts.actors} actor(s) x {gpus} GPU; the Ray cluster has "
                                       f"{resources.get('GPU', 0):g} GPU(s)")
        ds: Any = ray.data.from_items([{"id": it.id, "path": it.path} for it in todo],
                                 override_num_blocks=min(len(todo), 10_000))
        # The decode tasks state their memory (one decoder and a track's windows): it is honest scheduling
        # information, and it keeps Ray from fusing decoding into the inference actors (operators with
        # different resources are never fused), so decoding runs on every free core, not inside the actors.
        ds = ds.map_batches(_prepare_batch, batch_size=1, batch_format="numpy", num_cpus=opts.decode_cpus,
                            memory=opts.decode_memory_mb * 1024 * 1024,
                            fn_kwargs={"cards_json": [c.to_json() for c in cards], "max_windows": opts.max_windows,
                                       "dtype": opts.window_dtype})
        ds = ds.map_batches(InferenceActor, batch_size=1, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=opts.actors),
                            num_cpus=actor_cpus, num_gpus=gpus,
                            fn_constructor_kwargs={"paths": [str(m.path) for m in models], "device": opts.device,
                                                   "precision": opts.precision,
                                                   "threads": opts.threads_per_actor, "max_batch": opts.max_batch})
        per_track: dict[str, list[dict[str, Any]]] = {}
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows = table.to_pylist()  # pyarrow batches (batch_format above)
            writer.add(rows)
            report.rows += len(rows)
            for r in rows:
                per_track.setdefault(r["id"], []).append(r)
                if len(per_track[r["id"]]) == len(cards):
                    got = per_track.pop(r["id"])
                    bad = [g for g in got if g["status"] != "ok"]
                    if bad:
                        report.failed.append((bad[0]["path"], bad[0]["reason"]))
                    else:
                        report.ok += 1
                    if progress:
                        progress(report.ok + len(report.failed), len(todo))
        writer.flush()
    finally:
        writer.flush()
        report.seconds = time.monotonic() - t0
        if started_here:
            ray.shutdown()
    return report
