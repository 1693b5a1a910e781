"""Cut a stream of audio blocks into the fixed windows a model's spec asks for.

Contract (from the model metadata): ``pad_start`` zeros go in front (this reproduces a centred STFT
frame for frame), ``pad_end`` zeros at the end, windows of ``window`` samples start ``hop`` apart.
A trailing partial window is dropped (``partial_tail: drop``) unless it would be the only one; a
track shorter than one window is tiled until it fills it (``short_input: repeat``, as musicnn was
trained) or zero-padded (``zeros``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .model import ModelSpec


def iter_windows(blocks: Iterable[np.ndarray], spec: ModelSpec) -> Iterator[np.ndarray]:
    """Yield float32 windows of ``spec.window`` samples; memory stays at about one window plus one block."""
    buf = np.zeros(spec.pad_start, np.float32)
    emitted = 0
    total = 0
    head: list[np.ndarray] = []  # the raw audio, kept only while it is shorter than one window
    for block in blocks:
        total += len(block)
        if emitted == 0 and total <= spec.window:
            head.append(block)
        else:
            head = []
        buf = np.concatenate([buf, block]) if len(buf) else block
        while len(buf) >= spec.window:
            yield buf[: spec.window].copy()
            emitted += 1
            buf = buf[spec.hop:]
    buf = np.concatenate([buf, np.zeros(spec.pad_end, np.float32)])
    while len(buf) >= spec.window:
        yield buf[: spec.window].copy()
        emitted += 1
        buf = buf[spec.hop:]
    if emitted == 0:
        audio = np.concatenate(head) if head else np.zeros(0, np.float32)
        if len(audio) == 0:
            return
        if spec.short_input == "repeat":
            reps = -(-spec.window // len(audio))
            yield np.tile(audio, reps)[: spec.window].astype(np.float32)
        else:
            out = np.zeros(spec.window, np.float32)
            out[: len(audio)] = audio
            yield out
    elif spec.partial_tail == "pad" and len(buf) - spec.pad_end > spec.window - spec.hop:  # new audio left
        out = np.zeros(spec.window, np.float32)
        out[: len(buf)] = buf
        yield out
