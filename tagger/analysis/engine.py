"""Batched inference of a whole model set across many files: decode once, infer in one thread.

Decoder threads turn each file into native-rate mono audio once, resample it once per distinct model
rate, and let every model that needs the file cut its own windows (3-s and 29-s windows side by side).
Windows go onto one bounded queue; the inference thread keeps one batch per model, packs windows from
whatever tracks are ready, and runs each model's single onnxruntime session. A track's result is
emitted as soon as every model it needed has seen its last window. The bounded queue gives
back-pressure, so memory stays flat however many files are queued.

Nothing a single file does can stop the pipeline: every exception while decoding or analysing one file
becomes that file's :class:`TrackFailure` (the file named, the original error kept as ``__cause__``),
and the end of input is always signalled.
"""
from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagger.analysis.cut import DecodeStopped, decode_windows
from tagger.analysis.decode import StreamInfo
from tagger.analysis.results import Accumulator, TrackFailure, TrackResult
from tagger.analysis.windows import REFERENCE_WINDOW
from tagger.errors import DecodeError, ModelError, TaggerError
from tagger.models.session import Model
from tagger.models.shared_front import find_shared_fronts

if TYPE_CHECKING:
    from tagger.analysis.workers import DecoderPool

__all__ = ["Engine", "PipelineSettings", "TrackFailure", "TrackResult", "batch_sizes", "pipeline_settings"]
log = logging.getLogger(__name__)



@dataclass(frozen=True)
class PipelineSettings:
    """How many windows per inference call and how files are decoded, once "auto" is resolved."""

    batch: int
    decode_workers: int
    decode_processes: bool
    gpu: bool
    streams: int = 1  # inference calls in flight at once (different models)


def pipeline_settings(models: Sequence[Model], batch: int = 0, decode_workers: int = 0,
                      decode_processes: bool | None = None, streams: int = 0) -> PipelineSettings:
    """Resolve the settings a config leaves to auto (0, or None for ``decode_processes``) for this model set.

    On the CPU, inference is the bottleneck and takes both cores' worth of work: 4 windows per call and 2
    decoder threads (measured on 2 cores; more threads only compete with inference). On a GPU, decoding is
    the bottleneck: on an H100 with 16 cores (bench/bench_gpu.py, default set, 48 real tracks), 2 decoder
    threads fed it 42 tracks/min with the GPU 4 % busy, 8 threads were slower still (35/min: they share one
    interpreter lock), and worker processes scaled: 8 gave 79/min, 14 gave 180/min, and 16 windows per call
    216/min. So with a GPU: one decoder process per core but two (inference and the parent's own work keep
    those), and batches of 16.

    Inference streams: on the CPU, as many models run at once as the sessions' threads leave cores for (2
    single-threaded sessions on 2 cores; see :func:`tagger.models.session.auto_threads`); on a GPU one. A
    single-threaded session runs one window per call: it was as fast per window as four or faster (musicnn-msd
    int8, two sessions side by side: 9.9 against 10.5 ms) and holds a quarter of the activations (a default
    scan of 12 tracks peaked at 346 against 383 MB).
    """
    gpu = any(m.provider.startswith("CUDA") for m in models)
    cores = os.cpu_count() or 1
    workers = decode_workers if decode_workers > 0 else (max(2, cores - 2) if gpu else 2)
    processes = decode_processes if decode_processes is not None else (gpu and workers > 2)
    threads = max(1, min(m.threads for m in models))
    if streams <= 0:  # the cores the sessions' threads leave, one model per stream (auto_threads splits them)
        streams = 1 if gpu else max(1, min(len(models), cores // threads))
    if batch <= 0:  # single-threaded sessions gain nothing from batching (bench/bench_streams.py)
        batch = 16 if gpu else (1 if threads == 1 else 4)
    return PipelineSettings(batch, workers, processes, gpu, streams)


@dataclass
class _Pending:
    path: Path
    accs: dict[int, Accumulator]  # model index -> accumulator
    decoded: bool = False
    duration: float = 0.0
    fingerprint: str = ""
    info: StreamInfo = field(default_factory=StreamInfo)


_END = object()


class Engine:
    """Owns the model set's sessions and turns paths into song-level results, in completion order."""

    def __init__(self, models: Model | Sequence[Model], *, max_batch: int = 16, decode_workers: int = 2,
                 keep_window_tags: bool = False, max_windows: int = 0, decode_processes: bool | None = False,
                 regions: bool = True, streams: int = 0) -> None:
        """``max_batch`` and ``decode_workers`` of 0 and ``decode_processes`` of None mean auto
        (:func:`pipeline_settings`): what suits the model set's device and this machine's cores."""
        if max_batch < 0:
            raise ValueError("max_batch must be >= 1, or 0 for auto")
        self.models: list[Model] = [models] if isinstance(models, Model) else list(models)
        if not self.models:
            raise ValueError("an engine needs at least one model")
        settings = pipeline_settings(self.models, max_batch, decode_workers, decode_processes, streams)
        self.streams = settings.streams
        if settings.gpu and (max_batch == 0 or decode_workers == 0 or decode_processes is None):
            log.info("GPU inference: %d windows per call, %d decoder %s", settings.batch, settings.decode_workers,
                     "processes" if settings.decode_processes else "threads")
        max_batch, decode_workers, decode_processes = (settings.batch, settings.decode_workers,
                                                       settings.decode_processes)
        self.index = {m.card.id: i for i, m in enumerate(self.models)}
        self.max_batch = max_batch
        # Batches are counted in 3-s windows: a 29-s model gets proportionally fewer per call.
        self.batch_of = batch_sizes(self.models, max_batch)
        self.decode_workers = max(1, decode_workers)
        self.keep_window_tags = keep_window_tags
        self.max_windows = max_windows  # > 0: at most this many windows per track and model, spread evenly
        self.regions = regions  # decode only the stretches bounded windows need (False: always the whole file)
        # Models that take the same windows and begin with the same computation run it once per batch.
        self.fronts = find_shared_fronts(self.models) if len(self.models) > 1 else {}
        # Decode in worker processes (one per decode worker, started on first use) instead of threads.
        self.decode_processes = decode_processes
        self._decoder_pool: DecoderPool | None = None
        self.stats = {"windows": 0, "batches": 0, "infer_seconds": 0.0}
        self.heartbeat = time.monotonic()  # the last moment real work was done (a block decoded, a batch run)
        self.per_model = {m.card.id: {"windows": 0, "batches": 0, "seconds": 0.0} for m in self.models}

    # -- decoding (pool threads) -----------------------------------------------------------------
    def _decode_one(self, key: int, path: Path, wanted: list[int], out: "queue.Queue[tuple]",
                    stop: threading.Event) -> None:
        try:
            self._decode(key, path, wanted, out, stop)
        except TaggerError as exc:
            out.put((key, exc))
        except MemoryError as exc:
            err = DecodeError(path, "out of memory while decoding")
            err.__cause__ = exc
            out.put((key, err))
        except Exception as exc:  # anything else is still this file's failure, never the pipeline's
            err = DecodeError(path, f"unexpected error while decoding: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            log.debug("decode of %s failed", path, exc_info=True)
            out.put((key, err))

    def _decode(self, key: int, path: Path, wanted: list[int], out: "queue.Queue[tuple]",
                stop: threading.Event) -> None:
        def emit(i: int, window: np.ndarray) -> None:
            out.put((key, i, window))
            self.heartbeat = time.monotonic()

        def beat() -> None:
            self.heartbeat = time.monotonic()

        cards = [m.card for m in self.models]
        try:
            if self._decoder_pool is not None:
                d = self._decoder_pool.decode(path, cards, wanted, self.max_windows, emit, stop.is_set, self.regions)
            else:
                d = decode_windows(path, cards, wanted, self.max_windows, emit, stop=stop.is_set, beat=beat,
                                   regions=self.regions)
        except DecodeStopped:
            return
        out.put((key, _END, d.counts, d.duration, d.fingerprint, d.info))

    def close(self) -> None:
        """Stop the decoder processes, if any (threads need nothing)."""
        if self._decoder_pool is not None:
            self._decoder_pool.close()
            self._decoder_pool = None

    # -- the pipeline ----------------------------------------------------------------------------
    def analyse(self, items: Iterable[Path | str | tuple[Path | str, Iterable[str] | None]]
                ) -> Generator[TrackResult | TrackFailure, None, None]:
        """Yield one result per item. An item is a path (every model) or ``(path, model ids)``.

        Items are consumed lazily, so a generator is fine (the daemon keeps feeding one).
        """
        if self.decode_processes and self._decoder_pool is None:
            from tagger.analysis.workers import DecoderPool

            self._decoder_pool = DecoderPool(self.decode_workers)
        windows: queue.Queue[tuple] = queue.Queue(maxsize=self.max_batch * 2)
        results: queue.Queue[object] = queue.Queue()
        stop = threading.Event()
        pending: dict[int, _Pending] = {}
        failed: set[int] = set()
        lock = threading.Lock()  # guards `pending` between the feeder and the rest
        done_lock = threading.RLock()  # accumulators, completion and failure, across inference streams
        every = list(range(len(self.models)))

        def wanted_of(item) -> tuple[Path, list[int]]:
            if isinstance(item, tuple):
                path, ids = item
                if ids is None:
                    return Path(path), every
                idx = sorted(self.index[i] for i in ids)
                return Path(path), idx
            return Path(item), every

        def feeder() -> None:
            try:
                with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="tagger-decode") as pool:
                    slots = threading.Semaphore(self.decode_workers * 2)
                    for key, item in enumerate(items):
                        if stop.is_set():
                            break
                        path, wanted = wanted_of(item)
                        with lock:
                            pending[key] = _Pending(path, {i: Accumulator() for i in wanted})
                        if not wanted:
                            windows.put((key, _END, {}, 0.0, "", StreamInfo()))
                            continue
                        slots.acquire()
                        fut = pool.submit(self._decode_one, key, path, wanted, windows, stop)
                        fut.add_done_callback(lambda _f: slots.release())
            except BaseException as exc:  # the item source itself failed: tell the consumer, then end
                results.put(exc)
            finally:
                windows.put((-1, _END))

        def finish(key: int) -> None:
            with lock:
                st = pending.pop(key)
            res = TrackResult(st.path, st.duration, st.fingerprint, st.info)
            for i in sorted(st.accs):
                card = self.models[i].card
                res.models[card.id] = st.accs[i].result(card)
            results.put(res)

        def complete(key: int) -> bool:
            st = pending.get(key)
            return st is not None and st.decoded and all(a.done == a.expected for a in st.accs.values())

        def fail(key: int, reason: str, error: TaggerError | None) -> None:
            with lock:
                st = pending.pop(key, None)
            failed.add(key)
            if st is not None:
                results.put(TrackFailure(st.path, reason, error))

        def infer(i: int, batch: list[tuple[int, np.ndarray]]) -> None:
            model = self.models[i]
            t0 = time.perf_counter()
            try:
                stacked = np.stack([w for _, w in batch])
                front = self.fronts.get(i)
                outs = (model.run_all(stacked) if front is None else
                        dict(zip(model.output_names, front.run(model, stacked, model.output_names))))
            except Exception as exc:  # onnxruntime failure (memory, a bad graph): these files fail, the run goes on
                with done_lock:
                    for key in {k for k, _ in batch}:
                        st = pending.get(key)
                        err = ModelError(model.path, f"inference failed on {st.path if st else key}: {exc}")
                        err.__cause__ = exc
                        fail(key, err.reason, err)
                return
            dt = time.perf_counter() - t0
            self.heartbeat = time.monotonic()
            with done_lock:
                self.stats["infer_seconds"] += dt
                self.stats["windows"] += len(batch)
                self.stats["batches"] += 1
                pm = self.per_model[model.card.id]
                pm["windows"] += len(batch)
                pm["batches"] += 1
                pm["seconds"] += dt
                touched = set()
                tags_name = model.card.tags.name
                for row, (key, _) in enumerate(batch):
                    st = pending.get(key)
                    if st is None:
                        continue
                    st.accs[i].add(outs, row, tags_name, self.keep_window_tags)
                    touched.add(key)
                for key in touched:
                    if complete(key):
                        finish(key)

        # With several streams, different models' batches run at once (each session on its own threads);
        # one model's batches always run one at a time and in order, so every accumulator sees its windows
        # in window order, as with one stream.
        queued: dict[int, collections.deque[list[tuple[int, np.ndarray]]]] = {i: collections.deque() for i in every}
        scheduled: set[int] = set()
        room = threading.Condition()
        in_flight = [0]
        pool = (ThreadPoolExecutor(self.streams, thread_name_prefix="tagger-infer") if self.streams > 1 else None)
        crashed: list[BaseException] = []  # a fault of ours in a stream: the run stops and raises it
        closing = threading.Event()  # the inferrer is leaving: queued batches are dropped, running ones finish

        def drain(i: int) -> None:
            try:
                while True:
                    with room:
                        if not queued[i] or crashed or closing.is_set():
                            scheduled.discard(i)
                            room.notify_all()
                            return
                        b = queued[i].popleft()
                    infer(i, b)
                    with room:
                        in_flight[0] -= 1
                        room.notify_all()
            except BaseException as exc:  # a fault of ours, not of a file: stop the run and surface it
                with room:
                    crashed.append(exc)
                    scheduled.discard(i)
                    room.notify_all()

        def submit(i: int, b: list[tuple[int, np.ndarray]]) -> None:
            if pool is None:
                infer(i, b)
                return
            with room:
                # Back-pressure: at most two batches waiting per stream, so memory stays flat.
                while in_flight[0] >= 2 * self.streams and not crashed:
                    room.wait()
                if crashed:
                    raise crashed[0]
                queued[i].append(b)
                in_flight[0] += 1
                if i not in scheduled:
                    scheduled.add(i)
                    pool.submit(drain, i)

        def settle() -> None:
            """Wait for every submitted batch (the end of input, or before the result stream ends)."""
            if pool is None:
                return
            with room:
                while (in_flight[0] or scheduled) and not crashed:
                    room.wait()
                if crashed:
                    raise crashed[0]

        def inferrer() -> None:
            batches: dict[int, list[tuple[int, np.ndarray]]] = {i: [] for i in every}

            def flush_all() -> None:
                for i, b in batches.items():
                    if b:
                        batches[i] = []
                        submit(i, b)

            try:
                while True:
                    try:
                        item = windows.get(timeout=0.1)
                    except queue.Empty:
                        if stop.is_set():  # the consumer went away; its drain may have eaten our sentinel
                            return
                        continue
                    while True:
                        key, payload = item[0], item[1]
                        if key == -1 and payload is _END:
                            flush_all()
                            settle()
                            with done_lock:
                                for k in [k for k, st in pending.items() if not st.decoded]:
                                    fail(k, "decoder ended without a result", None)  # defensive: never wait forever
                            results.put(_END)
                            return
                        if key in failed:
                            pass
                        elif isinstance(payload, int) and not isinstance(payload, bool):
                            b = batches[payload]
                            b.append((key, item[2]))
                            if len(b) >= self.batch_of[payload]:
                                batches[payload] = []
                                submit(payload, b)
                        elif payload is _END:
                            with done_lock:
                                st = pending[key]
                                for i, n in item[2].items():
                                    st.accs[i].expected = n
                                st.decoded, st.duration, st.fingerprint, st.info = True, item[3], item[4], item[5]
                                if complete(key):
                                    finish(key)
                        else:  # a decode error
                            for i in batches:
                                batches[i] = [(k, w) for k, w in batches[i] if k != key]
                            with done_lock:
                                fail(key, payload.reason, payload)
                        try:
                            item = windows.get_nowait()
                        except queue.Empty:
                            break
                    flush_all()  # the queue ran dry: run what we have rather than wait
            except BaseException as exc:  # never die silently: surface it to the consumer
                results.put(exc)
                results.put(_END)
            finally:
                if pool is not None:
                    closing.set()
                    pool.shutdown(wait=True)

        threads = [threading.Thread(target=feeder, name="tagger-feeder", daemon=True),
                   threading.Thread(target=inferrer, name="tagger-infer", daemon=True)]
        for t in threads:
            t.start()
        try:
            while True:
                item = results.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            stop.set()
            while any(t.is_alive() for t in threads):  # drain so blocked producers can exit
                try:
                    windows.get(timeout=0.05)
                except queue.Empty:
                    pass
            for t in threads:
                t.join()


def batch_sizes(models: Sequence[Model], max_batch: int) -> list[int]:
    """Windows per inference call, per model: ``max_batch`` counts 3-second windows, so a model with
    29-second windows gets proportionally fewer per call (the same activation memory)."""
    return [max(1, max_batch * REFERENCE_WINDOW // m.card.window) for m in models]
