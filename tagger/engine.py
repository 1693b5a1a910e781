"""Batched inference across many files: decode in a small thread pool, infer in one thread.

Decoder threads turn files into windows and push them onto one bounded queue; the inference thread
packs windows from whatever tracks are ready into batches of at most ``max_batch`` and runs the
single onnxruntime session. Song-level results (mean over windows of tag probabilities and of
embeddings) are emitted as soon as a track's last window is through. The bounded queue gives
back-pressure, so memory stays flat however many files are queued.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .decode import Fingerprint, StreamInfo, new_native_hash, stream_mono
from .errors import DecodeError, TaggerError
from .model import Model
from .windows import iter_windows

log = logging.getLogger(__name__)


@dataclass
class TrackResult:
    path: Path
    tags: np.ndarray  # (n_labels,) mean sigmoid probability over windows
    embedding: np.ndarray  # (dim,) mean embedding over windows
    n_windows: int
    duration: float  # seconds of decoded audio
    fingerprint: str
    info: StreamInfo
    window_tags: np.ndarray | None = None  # (n_windows, n_labels) when asked for


@dataclass
class TrackFailure:
    path: Path
    reason: str
    error: TaggerError | None = None


@dataclass
class _Pending:
    path: Path
    n_windows: int | None = None  # known once decoding has finished
    done: int = 0
    tag_sum: np.ndarray | None = None
    emb_sum: np.ndarray | None = None
    rows: list[np.ndarray] = field(default_factory=list)
    duration: float = 0.0
    fingerprint: str = ""
    info: StreamInfo = field(default_factory=StreamInfo)


_END = object()


class Engine:
    """Owns one model session and turns paths into song-level results, in completion order."""

    def __init__(self, model: Model, *, max_batch: int = 32, decode_workers: int = 2,
                 keep_window_tags: bool = False) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model = model
        self.spec = model.spec
        self.max_batch = max_batch
        self.decode_workers = max(1, decode_workers)
        self.keep_window_tags = keep_window_tags
        self.stats = {"windows": 0, "batches": 0, "infer_seconds": 0.0}

    def _decode_one(self, key: int, path: Path, out: "queue.Queue[tuple]", stop: threading.Event) -> None:
        info = StreamInfo(native_hash=new_native_hash())
        fp = Fingerprint()
        n = 0
        samples = 0

        def blocks() -> Iterator[np.ndarray]:
            nonlocal samples
            for block in stream_mono(path, self.spec.sample_rate, info):
                fp.update(block)
                samples += len(block)
                yield block

        try:
            for window in iter_windows(blocks(), self.spec):
                if stop.is_set():
                    return
                out.put((key, window))
                n += 1
            if n == 0:
                raise DecodeError(path, "no audio after decoding")
            out.put((key, _END, n, samples / self.spec.sample_rate, fp.hexdigest(), info))
        except TaggerError as exc:
            out.put((key, exc))
        except MemoryError:
            out.put((key, DecodeError(path, "out of memory while decoding")))

    def analyse(self, paths: Iterable[Path | str]) -> Iterator[TrackResult | TrackFailure]:
        """Yield one result per path. Paths are consumed lazily, so a generator of paths is fine."""
        windows: queue.Queue[tuple] = queue.Queue(maxsize=self.max_batch * 2)
        results: queue.Queue[object] = queue.Queue()
        stop = threading.Event()
        pending: dict[int, _Pending] = {}
        lock = threading.Lock()

        def feeder() -> None:
            with ThreadPoolExecutor(self.decode_workers, thread_name_prefix="tagger-decode") as pool:
                slots = threading.Semaphore(self.decode_workers * 2)
                futures = []
                for key, p in enumerate(paths):
                    if stop.is_set():
                        break
                    slots.acquire()
                    with lock:
                        pending[key] = _Pending(Path(p))
                    fut = pool.submit(self._decode_one, key, Path(p), windows, stop)
                    fut.add_done_callback(lambda _f: slots.release())
                    futures.append(fut)
                for f in futures:
                    f.result()
            windows.put((-1, _END))

        def finish(key: int) -> None:
            with lock:
                st = pending.pop(key)
            mean_tags = st.tag_sum / st.done
            mean_emb = st.emb_sum / st.done
            rows = np.stack(st.rows) if st.rows else None
            results.put(TrackResult(st.path, mean_tags.astype(np.float32), mean_emb.astype(np.float32), st.done,
                                    st.duration, st.fingerprint, st.info, rows))

        def infer_batch(batch: list[tuple[int, np.ndarray]]) -> None:
            t0 = time.perf_counter()
            tags, emb = self.model.run(np.stack([w for _, w in batch]))
            self.stats["infer_seconds"] += time.perf_counter() - t0
            self.stats["windows"] += len(batch)
            self.stats["batches"] += 1
            touched = set()
            for (key, _), t, e in zip(batch, tags.astype(np.float64), emb.astype(np.float64)):
                st = pending[key]
                st.tag_sum = t.copy() if st.tag_sum is None else st.tag_sum + t
                st.emb_sum = e.copy() if st.emb_sum is None else st.emb_sum + e
                if self.keep_window_tags:
                    st.rows.append(t.astype(np.float32))
                st.done += 1
                touched.add(key)
            for key in touched:
                if pending[key].n_windows == pending[key].done:
                    finish(key)

        def inferrer() -> None:
            batch: list[tuple[int, np.ndarray]] = []
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
                        if payload is _END and key == -1:
                            if batch:
                                infer_batch(batch)
                            results.put(_END)
                            return
                        if isinstance(payload, np.ndarray):
                            batch.append((key, payload))
                            if len(batch) >= self.max_batch:
                                infer_batch(batch)
                                batch = []
                        elif payload is _END:
                            st = pending[key]
                            st.n_windows, st.duration, st.fingerprint, st.info = item[2], item[3], item[4], item[5]
                            if st.done == st.n_windows:
                                finish(key)
                        else:  # a decode error
                            with lock:
                                st = pending.pop(key)
                            batch = [(k, w) for k, w in batch if k != key]
                            results.put(TrackFailure(st.path, payload.reason, payload))
                        try:
                            item = windows.get_nowait()
                        except queue.Empty:
                            break
                    if batch:  # the queue ran dry: run what we have rather than wait
                        infer_batch(batch)
                        batch = []
            except BaseException as exc:  # never die silently: surface it to the consumer
                results.put(exc)

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
