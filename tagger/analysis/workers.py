"""Decoding in worker processes: the same ``decode_windows`` stage, run in long-lived child processes.

For machines with more cores than inference needs (a GPU box with 16 cores must keep its GPU fed, and
Python threads share one interpreter lock for everything that is not inside a decoder's C code). Each
process decodes one track at a time and streams its windows back through a pipe as they are cut; the pipe's
small OS buffer is the only buffer, so memory stays that of the thread design (a window or two in flight per
process), whatever the file's length. A decoder that crashes (a segfault in a native library) takes only
its process down: that file fails with the reason and a fresh process takes its place.

Processes are started with "spawn" (never "fork": the parent holds onnxruntime thread pools).
"""
from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tagger.errors import DecodeError, TaggerError
from tagger.models.card import Card


def _serve(conn) -> None:
    """The child's loop: one job at a time, windows sent as they are cut, then the summary or the reason."""
    from tagger.analysis.cut import decode_windows

    cards: list[Card] = []
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        path, cards_json, wanted, max_windows, regions = job
        if cards_json is not None:
            cards = [Card.from_json(c) for c in cards_json]
        try:
            d = decode_windows(Path(os.fsdecode(path)), cards, wanted, max_windows,
                               lambda i, w: conn.send(("w", i, w)), regions=regions)
            conn.send(("end", d))
        except TaggerError as exc:
            conn.send(("err", exc.reason))
        except MemoryError:
            conn.send(("err", "out of memory while decoding"))
        except Exception as exc:  # anything else is still this file's failure, never the process's
            conn.send(("err", f"unexpected error while decoding: {type(exc).__name__}: {exc}"))


class DecoderProcess:
    """One long-lived decoding process."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="tagger-decoder")
        self.proc.start()
        child.close()
        self.cards_sent: tuple[str, ...] | None = None

    def decode(self, path: Path, cards: Sequence[Card], wanted: Sequence[int], max_windows: int,
               emit: Callable[[int, np.ndarray], None], stop: Callable[[], bool], regions: bool = True):
        """Like ``decode_windows`` in this process; raises DecodeStopped when ``stop()`` turns true (the process
        is then mid-track: close it) and DecodeError when the file fails or the process dies."""
        from tagger.analysis.cut import DecodeStopped

        key = tuple(c.to_json() for c in cards)
        self.conn.send((os.fsencode(path), list(key) if key != self.cards_sent else None, list(wanted), max_windows,
                        regions))
        self.cards_sent = key
        while True:
            if stop():
                raise DecodeStopped
            if not self.conn.poll(0.2):
                if not self.proc.is_alive():
                    raise DecodeError(path, f"the decoder process died (exit code {self.proc.exitcode})")
                continue
            try:
                msg = self.conn.recv()
            except (EOFError, OSError) as exc:
                self.proc.join(timeout=5)
                raise DecodeError(path, f"the decoder process died (exit code {self.proc.exitcode})") from exc
            if msg[0] == "w":
                emit(msg[1], msg[2])
            elif msg[0] == "end":
                return msg[1]
            else:
                raise DecodeError(path, msg[1])

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()


class DecoderPool:
    """``size`` decoder processes, lent one per decode thread; a process that died or stopped mid-track is
    replaced by a fresh one."""

    def __init__(self, size: int) -> None:
        self.idle: queue.Queue[DecoderProcess] = queue.Queue()
        self.all: list[DecoderProcess] = []
        for _ in range(size):
            p = DecoderProcess()
            self.all.append(p)
            self.idle.put(p)

    def decode(self, path: Path, cards: Sequence[Card], wanted: Sequence[int], max_windows: int,
               emit: Callable[[int, np.ndarray], None], stop: Callable[[], bool], regions: bool = True):
        from tagger.analysis.cut import DecodeStopped

        proc = self.idle.get()
        healthy = True
        try:
            return proc.decode(path, cards, wanted, max_windows, emit, stop, regions)
        except DecodeStopped:
            healthy = False
            raise
        except DecodeError:
            healthy = proc.alive
            raise
        finally:
            if not healthy:
                proc.close()
                self.all.remove(proc)
                proc = DecoderProcess()
                self.all.append(proc)
            self.idle.put(proc)

    def close(self) -> None:
        for p in self.all:
            p.close()
        self.all = []
