"""The decode-and-window stage: decode a file once and cut every wanted model's windows at its own rate.

The engine feeds its inference queue from :func:`decode_windows`, the decoder processes
(:mod:`tagger.analysis.workers`) run it in children, and the batch job's CPU tasks fill their window arrays
from it, so all of them see exactly the same windows.
"""
from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.analysis.decode import RegionReader, StreamInfo, stream_native_mono
from tagger.analysis.digests import Fingerprint, packet_digest
from tagger.analysis.resample import RateConverter
from tagger.analysis.windows import RegionPlan, Windower, plan_regions, spread
from tagger.errors import DecodeError
from tagger.models.card import Card

log = logging.getLogger(__name__)

FINGERPRINT_RATE = 16000  # the duplicate fingerprint is taken at one fixed rate, whatever the models use


def check_regular_file(path: Path) -> None:
    """Refuse FIFOs, sockets, devices and folders before any decoder opens them (a FIFO would block forever)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DecodeError(path, f"cannot stat: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        raise DecodeError(path, f"not a regular file: {kind}")



class DecodeStopped(Exception):
    """The consumer went away while a file was being decoded."""


@dataclass
class Decoded:
    """What decoding one track produced besides its windows."""

    counts: dict[int, int]  # model index -> windows emitted
    duration: float
    fingerprint: str
    info: StreamInfo


def decode_windows(path: Path, cards: Sequence[Card], wanted: Sequence[int], max_windows: int,
                   emit: Callable[[int, np.ndarray], None], *, stop: Callable[[], bool] | None = None,
                   beat: Callable[[], None] | None = None, regions: bool = True) -> Decoded:
    """Decode ``path`` once and cut each wanted model's windows at its own sample rate, in order.

    The one decode-and-window stage: the engine feeds its inference queue from it, and the batch job's CPU
    tasks fill their fixed-shape window arrays from it, so both see exactly the same windows. ``emit(i,
    window)`` receives model ``i``'s windows; ``stop()`` true ends early with DecodeStopped; ``beat()`` is
    called per decoded block (a liveness signal). At most ``max_windows`` windows per model (0: all), spread
    evenly over the length the header declares; when those windows cover only a small part of a track
    whose format seeks exactly, only the stretches holding them are decoded (:func:`tagger.analysis.windows.plan_regions`; off
    with ``regions=False``) and the fingerprint is taken from the stored audio packets instead.
    """
    check_regular_file(path)
    if max_windows > 0 and regions:
        info = StreamInfo()
        reader = RegionReader.open(path, info)
        if reader is not None:
            try:
                plan = plan_regions(cards, wanted, max_windows, info.source_rate, reader.frames)
                if plan is not None:
                    log.debug("%s: decoding %d stretches, %.0f %% of the track", path, len(plan.spans),
                              100 * plan.frames / max(reader.frames, 1))
                    return _decode_regions(path, reader, plan, cards, wanted, emit, stop, beat)
            finally:
                reader.close()
    info = StreamInfo()
    fp = Fingerprint()
    rates = sorted({cards[i].sample_rate for i in wanted} | {FINGERPRINT_RATE})
    converters: dict[int, RateConverter] = {}
    cut: _Cutters | None = None
    for mono in stream_native_mono(path, info):
        if beat is not None:
            beat()
        if cut is None:  # the header's length is known now: choose the windows to analyse
            converters = {r: RateConverter(info.source_rate, r) for r in rates}
            keep = {i: spread(cards[i], info.declared_frames * cards[i].sample_rate // max(info.source_rate, 1),
                              max_windows) for i in wanted}
            cut = _Cutters(cards, keep, emit, stop)
        for rate, conv in converters.items():
            block = conv.push(mono)
            if rate == FINGERPRINT_RATE:
                fp.update(block)
            cut.feed(rate, block)
        if stop is not None and stop():
            raise DecodeStopped
    for rate, conv in converters.items():  # set, with the cutters, when the first block arrived
        assert cut is not None
        tail = conv.finish()
        if rate == FINGERPRINT_RATE:
            fp.update(tail)
        cut.feed(rate, tail)
    counts = cut.finish() if cut is not None else {}
    if not any(counts.values()):
        raise DecodeError(path, "no audio after decoding")
    duration = info.source_frames / info.source_rate if info.source_rate else 0.0
    return Decoded(counts, duration, fp.hexdigest(), info)


class _Cutters:
    """Every wanted model's windower, fed per sample rate; the windows they complete go to ``emit``, in order.
    The one windowing step of both decoding paths (whole file, regions)."""

    def __init__(self, cards: Sequence[Card], keep: dict[int, frozenset[int] | None],
                 emit: Callable[[int, np.ndarray], None], stop: Callable[[], bool] | None) -> None:
        self.cutters = {i: Windower(cards[i], k) for i, k in keep.items()}
        self.rate_of = {i: cards[i].sample_rate for i in keep}
        self.counts = dict.fromkeys(keep, 0)
        self.emit, self.stop = emit, stop

    def skip_to(self, frame: int, source_rate: int) -> None:
        """Jump every windower to source frame ``frame`` (which lands on a whole sample at each model rate)."""
        for i, cutter in self.cutters.items():
            cutter.skip(frame * self.rate_of[i] // source_rate - cutter.total)

    def feed(self, rate: int, block: np.ndarray) -> None:
        if not len(block):
            return
        for i, cutter in self.cutters.items():
            if self.rate_of[i] == rate:
                for window in cutter.push(block):
                    if self.stop is not None and self.stop():
                        raise DecodeStopped
                    self.emit(i, window)
                    self.counts[i] += 1

    def finish(self) -> dict[int, int]:
        for i, cutter in self.cutters.items():
            for window in cutter.finish():
                self.emit(i, window)
                self.counts[i] += 1
        return self.counts


def _decode_regions(path: Path, reader: RegionReader, plan: RegionPlan, cards: Sequence[Card],
                    wanted: Sequence[int], emit: Callable[[int, np.ndarray], None],
                    stop: Callable[[], bool] | None, beat: Callable[[], None] | None) -> Decoded:
    """Decode only ``plan``'s stretches and cut the kept windows from them (see :func:`decode_windows`).

    Each stretch gets fresh resamplers; every model's windower is told how much audio was skipped, so window
    indices, the tail window and the counts come out as in a full decode. The identity fingerprint cannot
    cover samples that were never decoded: it is the digest of the stored audio packets (``pkt:`` prefix),
    which a tag write leaves alone and a re-encode changes, as the decoded one.
    """
    info = reader.info
    rates = sorted({cards[i].sample_rate for i in wanted})
    cut = _Cutters(cards, {i: plan.keep[i] for i in wanted}, emit, stop)
    end = 0
    for first, last in plan.spans:
        converters = {r: RateConverter(info.source_rate, r) for r in rates}
        cut.skip_to(first, info.source_rate)
        end = first
        for mono in reader.read(first, last):
            if beat is not None:
                beat()
            end += len(mono)
            for rate, conv in converters.items():
                cut.feed(rate, conv.push(mono))
            if stop is not None and stop():
                raise DecodeStopped
        for rate, conv in converters.items():
            cut.feed(rate, conv.finish())
    reader.check_end(end)
    counts = cut.finish()
    if not any(counts.values()):
        raise DecodeError(path, "no audio after decoding")
    info.source_frames = end  # the last stretch runs to the end of the file: its true length
    return Decoded(counts, end / info.source_rate, "pkt:" + packet_digest(path)[:32], info)
