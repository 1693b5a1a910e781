"""One resampler per (source rate, model rate) pair, fed block by block: the only place rates are converted."""
from __future__ import annotations

import math

import numpy as np
import soxr


class RateConverter:
    """Streaming soxr 'HQ' resampling from the source rate to one model rate.

    The total output is made exactly ``ceil(n * rate / source_rate)`` samples (zero-padded or cut), as
    the reference front-ends did, so window boundaries line up with theirs.
    """

    def __init__(self, source_rate: int, rate: int) -> None:
        self.source_rate, self.rate = source_rate, rate
        self.stream = (None if source_rate == rate else
                       soxr.ResampleStream(source_rate, rate, 1, dtype="float32", quality="HQ"))
        self.consumed = 0
        self.produced = 0

    def push(self, mono: np.ndarray) -> np.ndarray:
        self.consumed += len(mono)
        out = mono if self.stream is None else self.stream.resample_chunk(mono, last=False)
        self.produced += len(out)
        return out

    def finish(self) -> np.ndarray:
        if self.stream is None:
            return np.zeros(0, np.float32)
        tail = self.stream.resample_chunk(np.zeros(0, np.float32), last=True)
        self.produced += len(tail)
        expected = math.ceil(self.consumed * self.rate / self.source_rate)
        if self.produced > expected:
            tail = tail[: max(0, len(tail) - (self.produced - expected))]
        elif self.produced < expected:
            tail = np.concatenate([tail, np.zeros(expected - self.produced, np.float32)])
        return tail
