"""What analysing a track produces: each model's song-level view, the track's result or its failure, and the
one rule that aggregates a model's window outputs into that view (used by the engine and the batch job)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagger.analysis.decode import StreamInfo
from tagger.errors import TaggerError
from tagger.models.card import Card


@dataclass
class ModelResult:
    """One model's song-level view of one track."""

    card: Card
    tags: np.ndarray  # (n_labels,) aggregated main label output
    embedding: np.ndarray  # (dim,) aggregated embedding (width 0 when the model has none)
    n_windows: int
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # every output, aggregated, by name
    window_tags: np.ndarray | None = None  # (n_windows, n_labels) when asked for


@dataclass
class TrackResult:
    path: Path
    duration: float  # seconds of decoded audio
    fingerprint: str
    info: StreamInfo
    models: dict[str, ModelResult] = field(default_factory=dict)  # by model id, in model-set order

    @property
    def first(self) -> ModelResult:
        return next(iter(self.models.values()))

    # The single-model view (the first model of the set), for callers that only need one.
    @property
    def tags(self) -> np.ndarray:
        return self.first.tags

    @property
    def embedding(self) -> np.ndarray:
        return self.first.embedding

    @property
    def n_windows(self) -> int:
        return self.first.n_windows

    @property
    def window_tags(self) -> np.ndarray | None:
        return self.first.window_tags


@dataclass
class TrackFailure:
    path: Path
    reason: str
    error: TaggerError | None = None


@dataclass
class Accumulator:
    """Running aggregate of one model's outputs for one track: the one aggregation rule, used by the engine
    and by the batch job's inference actors alike (sums in float64 in window order, then mean or max as the
    card says)."""

    expected: int | None = None
    done: int = 0
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    maxes: dict[str, np.ndarray] = field(default_factory=dict)
    rows: list[np.ndarray] = field(default_factory=list)

    def add(self, outs: dict[str, np.ndarray], row: int, tags_name: str, keep_rows: bool = False) -> None:
        """Fold in row ``row`` of one inference batch's outputs."""
        for name, value in outs.items():
            v = value[row].astype(np.float64)
            if name in self.sums:
                self.sums[name] += v
                np.maximum(self.maxes[name], v, out=self.maxes[name])
            else:
                self.sums[name] = v.copy()
                self.maxes[name] = v.copy()
        if keep_rows:
            self.rows.append(outs[tags_name][row].astype(np.float32))
        self.done += 1

    def result(self, card: Card) -> "ModelResult":
        aggregated = {}
        for out in card.outputs:
            if out.name in self.sums:
                aggregated[out.name] = (self.maxes[out.name] if out.aggregate == "max"
                                        else self.sums[out.name] / max(self.done, 1)).astype(np.float32)
        tags = aggregated[card.tags.name]
        emb_out = card.embedding
        emb = aggregated[emb_out.name] if emb_out is not None else np.zeros(0, np.float32)
        rows = np.stack(self.rows) if self.rows else None
        return ModelResult(card, tags, emb, self.done, aggregated, rows)
