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

from collections.abc import Iterable, Iterator

import numpy as np

from .card import Card


class Windower:
    """Feed blocks with :meth:`push`, then call :meth:`finish`; both return the windows now complete."""

    def __init__(self, card: Card, keep: frozenset[int] | None = None) -> None:
        self.card = card
        self.keep = keep
        self.buf = np.zeros(card.pad_start, np.float32)
        self.emitted = 0
        self.total = 0
        self.head: list[np.ndarray] | None = []  # the raw audio, kept only while it is shorter than one window
        # The most recent `window` samples of real audio, only needed for an end-aligned last window.
        self.recent = np.zeros(0, np.float32) if card.partial_tail == "end" else None
        self.covered = 0  # real samples up to the end of the last emitted window

    def _drain(self) -> list[np.ndarray]:
        out = []
        w, h = self.card.window, self.card.hop
        while len(self.buf) >= w:
            if self.keep is None or self.emitted in self.keep:
                out.append(self.buf[:w].copy())
            self.emitted += 1
            self.covered = (self.emitted - 1) * h + w - self.card.pad_start
            self.buf = self.buf[h:]
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
            self.recent = np.concatenate([self.recent, block])[-self.card.window:]
        self.buf = np.concatenate([self.buf, block]) if len(self.buf) else block
        return self._drain()

    def finish(self) -> list[np.ndarray]:
        card = self.card
        self.buf = np.concatenate([self.buf, np.zeros(card.pad_end, np.float32)])
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
        if card.partial_tail == "pad" and len(self.buf) - card.pad_end > card.window - card.hop:
            padded = np.zeros(card.window, np.float32)
            padded[: len(self.buf)] = self.buf
            out.append(padded)
        elif card.partial_tail == "end" and self.recent is not None and left > card.hop // 4 \
                and len(self.recent) == card.window:
            out.append(self.recent.copy())  # the last full window of audio, overlapping the one before
        return out


def expected_windows(card: Card, samples: int) -> int:
    """Full windows a track of ``samples`` (at the card's rate) yields, before any tail window."""
    padded = card.pad_start + samples + card.pad_end
    return 0 if padded < card.window else 1 + (padded - card.window) // card.hop


def spread(card: Card, samples: int, max_windows: int) -> frozenset[int] | None:
    """Indices of ``max_windows`` windows spread evenly over a track of ``samples``; None means all
    (no bound, or the track has no more windows than that, or its length is unknown)."""
    n = expected_windows(card, samples)
    if max_windows <= 0 or samples <= 0 or n <= max_windows:
        return None
    return frozenset(int(round(i)) for i in np.linspace(0, n - 1, max_windows))


def iter_windows(blocks: Iterable[np.ndarray], card: Card) -> Iterator[np.ndarray]:
    """Pull-style wrapper: yield float32 windows of ``card.window`` samples."""
    cutter = Windower(card)
    for block in blocks:
        yield from cutter.push(block)
    yield from cutter.finish()
