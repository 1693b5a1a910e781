"""Which stretches of a long track to decode when only a bounded number of windows is analysed.

With ``max_windows`` set, every model analyses at most that many windows, spread evenly over the length
the header declares (:func:`tagger.windows.spread`). When those windows, for every model of the set,
cover only a small part of the track, decoding the rest is wasted work: the plan lists the stretches
(at the file's own rate) that hold every kept window, and the decoder seeks from one to the next.

Each stretch starts a margin before its first window and ends a margin after its last, so the resampler
has settled before a kept sample and has not yet seen the artificial end of the stretch; it starts on a
frame where the source and model rates meet exactly (a multiple of ``source_rate / gcd``), so its
resampled samples fall on the same positions as in a full decode. The last stretch always runs to the
end of the file: the track's true length decides the tail window, as it does in a full decode.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .card import Card
from .windows import spread

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
