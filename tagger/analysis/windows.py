"""Cut a stream of audio blocks into the fixed windows a model's card asks for.

Contract (from the card): ``pad_start`` zeros go in front (this reproduces a centred STFT frame for
frame), ``pad_end`` zeros at the end, windows of ``window`` samples start ``hop`` apart. What is left
after the last full window follows ``partial_tail``: ``drop`` it, zero-``pad`` it into one more window,
or take one more window aligned to the ``end`` of the track (for long windows, so the last seconds of a
song are heard). A track shorter than one window is tiled until it fills it (``short_input: repeat``)
or zero-padded (``zeros``).

The windower is push-based so that one decoded stream can feed several models, each cutting its own
windows; memory stays at about one window plus one block per model.

Bounded analysis (``keep``): only the windows whose index is in ``keep`` are emitted (the others are
skipped without a copy), so a long track can be summarised by a fixed number of windows spread evenly
over it (:func:`spread`). The end-aligned last window, and the single window of a short track, are always
emitted.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tagger.models.card import Card


class Windower:
    """Feed blocks with :meth:`push`, then call :meth:`finish`; both return the windows now complete.

    Pending audio lives in one reusable array (``_data[_lo:_hi]``), so each sample is copied in once and,
    when its window is kept, out once: appending to a growing array instead copied a 29-s model's whole
    pending window again with every block.
    """

    def __init__(self, card: Card, keep: frozenset[int] | None = None) -> None:
        self.card = card
        self.keep = keep
        self._data = np.zeros(max(card.window + card.hop, card.pad_start, 1), np.float32)
        self._lo, self._hi = 0, card.pad_start
        self._drop = 0  # samples still to discard when a hop is longer than what was pending
        self.emitted = 0
        self.total = 0
        self.head: list[np.ndarray] | None = []  # the raw audio, kept only while it is shorter than one window
        # The newest blocks holding at least the last `window` samples of real audio, only needed for an
        # end-aligned last window (kept as references: nothing is copied until the end).
        self.recent: list[np.ndarray] | None = [] if card.partial_tail == "end" else None
        self._recent_len = 0
        self.covered = 0  # real samples up to the end of the last emitted window
        self._gap_end = 0  # padded position where the last skipped stretch of audio ends

    def skip(self, n: int) -> None:
        """Advance the stream by ``n`` samples that were never decoded (region decoding).

        Windows that overlap the gap are counted as emitted but must not be kept: the caller decodes every
        kept window whole. The pending buffer is refilled with zeros only as far as an unfinished window
        reaches back into the gap, so a skip costs at most one window of memory whatever ``n`` is.
        """
        if n <= 0:
            return
        w, h, ps = self.card.window, self.card.hop, self.card.pad_start
        self.head = None
        if self.recent is not None:
            self.recent, self._recent_len = [], 0
        self.total += n
        reached = ps + self.total  # padded position of the first sample after the gap
        done = 0 if reached < w else (reached - w) // h + 1  # windows complete once the gap is passed
        if done > self.emitted:
            if self.keep is None or any(self.emitted <= k < done for k in self.keep):
                raise ValueError(f"a kept window of {self.card.id} would span audio that was skipped")
            self.emitted = done
            self.covered = (done - 1) * h + w - ps
        start = self.emitted * h  # the next window's first padded position
        self._lo = self._hi = 0
        self._drop = max(0, start - reached)
        self._gap_end = reached
        if start < reached:  # an unfinished window reaches back into the gap: zeros stand in (it is not kept)
            pending = reached - start
            if len(self._data) < pending:
                self._data = np.zeros(max(pending, 2 * len(self._data)), np.float32)
            self._data[:pending] = 0.0
            self._hi = pending

    def _append(self, block: np.ndarray) -> None:
        if self._drop:
            cut = min(self._drop, len(block))
            block, self._drop = block[cut:], self._drop - cut
        n = len(block)
        if not n:
            return
        if self._hi + n > len(self._data):
            pending = self._hi - self._lo
            if pending + n > len(self._data):
                grown = np.empty(max(pending + n, 2 * len(self._data)), np.float32)
                grown[:pending] = self._data[self._lo:self._hi]
                self._data = grown
            else:
                self._data[:pending] = self._data[self._lo:self._hi]
            self._lo, self._hi = 0, pending
        self._data[self._hi:self._hi + n] = block
        self._hi += n

    def _drain(self) -> list[np.ndarray]:
        out = []
        w, h = self.card.window, self.card.hop
        while self._hi - self._lo >= w:
            if self.keep is None or self.emitted in self.keep:
                if self.emitted * h < self._gap_end:
                    raise ValueError(f"window {self.emitted} of {self.card.id} would span audio that was skipped")
                out.append(self._data[self._lo:self._lo + w].copy())
            self.emitted += 1
            self.covered = (self.emitted - 1) * h + w - self.card.pad_start
            self._lo += h
            if self._lo > self._hi:
                self._drop, self._lo = self._lo - self._hi, self._hi
        return out

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        if not len(block):
            return []
        block = np.asarray(block, np.float32)
        self.total += len(block)
        if self.head is not None:
            if self.emitted == 0 and self.total <= self.card.window:
                self.head.append(block)
            else:
                self.head = None
        if self.recent is not None:
            self.recent.append(block)
            self._recent_len += len(block)
            while self._recent_len - len(self.recent[0]) >= self.card.window:
                self._recent_len -= len(self.recent.pop(0))
        self._append(block)
        return self._drain()

    def finish(self) -> list[np.ndarray]:
        card = self.card
        self._append(np.zeros(card.pad_end, np.float32))
        out = self._drain()
        if self.emitted == 0:
            audio = np.concatenate(self.head) if self.head else np.zeros(0, np.float32)
            if len(audio) == 0:
                return out
            if card.short_input == "repeat":
                reps = -(-card.window // len(audio))
                out.append(np.tile(audio, reps)[: card.window].astype(np.float32))
            else:
                padded = np.zeros(card.window, np.float32)
                padded[: len(audio)] = audio
                out.append(padded)
            self.emitted += 1
            return out
        left = self.total - self.covered  # real audio no window has seen
        pending = self._data[self._lo:self._hi]
        if card.partial_tail == "pad" and len(pending) - card.pad_end > card.window - card.hop:
            padded = np.zeros(card.window, np.float32)
            padded[: len(pending)] = pending
            out.append(padded)
        elif card.partial_tail == "end" and self.recent is not None and left > card.hop // 4 \
                and self._recent_len >= card.window:
            out.append(np.concatenate(self.recent)[-card.window:])  # the last full window of audio
        return out


def expected_windows(card: Card, samples: int) -> int:
    """Full windows a track of ``samples`` (at the card's rate) yields, before any tail window."""
    padded = card.pad_start + samples + card.pad_end
    return 0 if padded < card.window else 1 + (padded - card.window) // card.hop


# ``max_windows`` and the batch size count windows of this many samples at 16 kHz (musicnn's 3 s).
REFERENCE_WINDOW = 48128
REFERENCE_RATE = 16000


def window_bound(card: Card, max_windows: int) -> int:
    """How many of ``card``'s windows a bound of ``max_windows`` 3-s windows allows (0: no bound).

    Every model hears at least as much audio as a 3-s model does (and never gets more windows than it): a
    model with longer windows gets as many as that takes, rounded up (29-s FCN windows: 4 for the default 32,
    116 s against 96 s; 10-s AudioSet windows: 10), then the model's own cap. On 53 real tracks
    (bench/bench_windows.py), four FCN windows instead of every one changed 1 file's decisions and scanned
    21 % faster; three changed 8 of 45 in an earlier run.
    """
    if max_windows <= 0:
        return 0
    heard = max_windows * REFERENCE_WINDOW * card.sample_rate  # in samples x REFERENCE_RATE, exactly
    bound = min(max_windows, -(-heard // (card.window * REFERENCE_RATE)))
    return min(bound, card.max_windows) if card.max_windows else bound


def spread(card: Card, samples: int, max_windows: int) -> frozenset[int] | None:
    """Indices of the windows a bound of ``max_windows`` 3-s windows keeps (:func:`window_bound`), spread
    evenly over a track of ``samples``; None means all (no bound, or the track has no more windows than
    that, or its length is unknown)."""
    n = expected_windows(card, samples)
    max_windows = window_bound(card, max_windows)
    if max_windows <= 0 or samples <= 0 or n <= max_windows:
        return None
    return frozenset(int(round(i)) for i in np.linspace(0, n - 1, max_windows))


def iter_windows(blocks: Iterable[np.ndarray], card: Card) -> Iterator[np.ndarray]:
    """Pull-style wrapper: yield float32 windows of ``card.window`` samples."""
    cutter = Windower(card)
    for block in blocks:
        yield from cutter.push(block)
    yield from cutter.finish()


# --- regions -------------------------------------------------------------------------------------------
# Which stretches of a long track to decode when only a bounded number of windows is analysed.
#
# With ``max_windows`` set, every model analyses at most that many windows, spread evenly over the length
# the header declares (:func:`tagger.analysis.windows.spread`). When those windows, for every model of the set,
# cover only a small part of the track, decoding the rest is wasted work: the plan lists the stretches
# (at the file's own rate) that hold every kept window, and the decoder seeks from one to the next.
#
# Each stretch starts a margin before its first window and ends a margin after its last, so the resampler
# has settled before a kept sample and has not yet seen the artificial end of the stretch; it starts on a
# frame where the source and model rates meet exactly (a multiple of ``source_rate / gcd``), so its
# resampled samples fall on the same positions as in a full decode. The last stretch always runs to the
# end of the file: the track's true length decides the tail window, as it does in a full decode.

MARGIN_SECONDS = 0.25  # resampler settling before and after each stretch (soxr HQ needs a few ms)
MAX_FRACTION = 0.8  # decode stretches only when they hold at most this share of the track (measured:
# on Ogg Vorbis, stretches holding 73 % of a track still decode 13 % cheaper than the whole file)


@dataclass(frozen=True)
class RegionPlan:
    spans: tuple[tuple[int, int], ...]  # (first frame, end frame) at the source rate, sorted, disjoint
    keep: dict[int, frozenset[int]]  # model index -> the window indices it analyses

    @property
    def frames(self) -> int:
        return sum(b - a for a, b in self.spans)


def plan_regions(cards: Sequence[Card], wanted: Sequence[int], max_windows: int, source_rate: int,
                 frames: int) -> RegionPlan | None:
    """The stretches to decode, or None when the whole file should be decoded.

    None when windows are not bounded, when any model would analyse every window of this track, or when
    the stretches would hold more than ``MAX_FRACTION`` of it (seeking then saves too little).
    """
    if max_windows <= 0 or frames <= 0 or source_rate <= 0 or not wanted:
        return None
    step = 1
    for rate in {cards[i].sample_rate for i in wanted}:
        step = math.lcm(step, source_rate // math.gcd(source_rate, rate))
    margin = int(MARGIN_SECONDS * source_rate)
    keep: dict[int, frozenset[int]] = {}
    wanted_spans: list[tuple[int, int]] = []
    for i in wanted:
        card = cards[i]
        expected = frames * card.sample_rate // source_rate
        chosen = spread(card, expected, max_windows)
        if chosen is None:
            return None
        keep[i] = chosen
        scale = source_rate / card.sample_rate
        for k in chosen:
            first = k * card.hop - card.pad_start
            wanted_spans.append((math.floor(max(first, 0) * scale), math.ceil((first + card.window) * scale)))
        if card.partial_tail != "drop":  # the tail window: the last `window` samples of the track
            wanted_spans.append((math.floor(max(expected - card.window, 0) * scale), frames))
    spans: list[list[int]] = []
    for a, b in sorted(wanted_spans):
        a = max(0, a - margin) // step * step
        b = b + margin
        if spans and a <= spans[-1][1] + margin:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    spans[-1][1] = frames  # the true end of the track decides the tail window
    plan = RegionPlan(tuple((a, min(b, frames)) for a, b in spans), keep)
    if plan.frames > MAX_FRACTION * frames:
        return None
    return plan
