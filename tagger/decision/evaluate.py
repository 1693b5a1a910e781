"""How right would the tool be on this library? Its decisions compared with the user's own values.

Pure logic over (the user's values, the tool's decision) pairs, so the numbers can be checked by hand:

* a track the tool *writes* for is **right** when every value it would write is one of the user's values
  (spelling compared as in ``context.normalise``), **wrong** otherwise; a track it abstains on is **nothing**;
* per value: *written* (tracks it would get it), *right* among those, *precision* = right / written, and
  *coverage* = tracks of the user's value that the tool gets right / tracks carrying the user's value;
* the confusion between the user's first value and the tool's first value; the user's values the tool never
  proposes (outside its vocabulary, or never decided).

``calibrate`` turns the same pairs into per-value thresholds on the fused score, so that what is written
reaches a chosen precision on the user's own files; ``Calibration`` stores them beside the trained heads, where
the scan, the daemon and ``analyze`` read them (see ``heads.Decider``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tagger.decision.context import normalise
from tagger.errors import ConfigError
from tagger.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
TIE = 1e-4  # fused scores closer than this are the same score


@dataclass(frozen=True)
class Case:
    """One track with the user's own values: what they are, and what the tool would write (with the fused
    score of its leading candidate, the one a threshold acts on)."""

    path: str
    user: tuple[str, ...]
    written: tuple[str, ...]
    top: str = ""
    top_score: float = 0.0

    @property
    def verdict(self) -> str:
        if not self.written:
            return "nothing"
        theirs = {normalise(v) for v in self.user}
        return "right" if all(normalise(v) in theirs for v in self.written) else "wrong"


@dataclass
class ValueReport:
    value: str
    user_tracks: int = 0  # tracks carrying this value as the user's
    written: int = 0  # tracks the tool would give it
    right: int = 0  # of those, tracks whose user values include it

    @property
    def precision(self) -> float | None:
        return self.right / self.written if self.written else None

    @property
    def coverage(self) -> float | None:
        return self.right / self.user_tracks if self.user_tracks else None


@dataclass
class Report:
    field: str
    tracks: int
    right: int
    wrong: int
    nothing: int
    values: dict[str, ValueReport]
    confusion: dict[str, dict[str, int]]  # user's first value -> tool's first value ("(nothing)") -> count
    never_proposed: list[str]
    wrong_examples: list[tuple[str, list[str], list[str]]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        return {"field": self.field, "tracks": self.tracks, "right": self.right, "wrong": self.wrong,
                "nothing": self.nothing,
                "values": {v: {"user_tracks": r.user_tracks, "written": r.written, "right": r.right,
                               "precision": r.precision, "coverage": r.coverage} for v, r in self.values.items()},
                "confusion": self.confusion, "never_proposed": self.never_proposed,
                "wrong_examples": [{"path": p, "yours": u, "tool": t} for p, u, t in self.wrong_examples]}


def evaluate(field_name: str, cases: Sequence[Case]) -> Report:
    values: dict[str, ValueReport] = {}
    spelled: dict[str, str] = {}

    def entry(value: str) -> ValueReport:
        key = normalise(value)
        spelled.setdefault(key, value)
        return values.setdefault(spelled[key], ValueReport(spelled[key]))

    confusion: dict[str, Counter] = {}
    verdicts = Counter(c.verdict for c in cases)
    proposed: set[str] = set()
    wrong_examples: list[tuple[str, list[str], list[str]]] = []
    for c in cases:
        theirs = {normalise(v) for v in c.user}
        for v in dict.fromkeys(c.user):
            entry(v).user_tracks += 1
        for v in c.written:
            r = entry(v)
            r.written += 1
            r.right += normalise(v) in theirs
            proposed.add(normalise(v))
        confusion.setdefault(spelled[normalise(c.user[0])], Counter())[c.written[0] if c.written else "(nothing)"] += 1
        if c.verdict == "wrong" and len(wrong_examples) < 20:
            wrong_examples.append((c.path, list(c.user), list(c.written)))
    never = sorted(v for k, v in spelled.items() if k not in proposed and values[v].user_tracks)
    return Report(field_name, len(cases), verdicts["right"], verdicts["wrong"], verdicts["nothing"],
                  dict(sorted(values.items(), key=lambda kv: (-kv[1].user_tracks, kv[0].casefold()))),
                  {u: dict(cnt.most_common()) for u, cnt in sorted(confusion.items())}, never, wrong_examples)


def calibrate(cases: Sequence[Case], precision: float, min_tracks: int = 3) -> dict[str, float | None]:
    """Per value the tool leads with: the lowest fused score from which its lead is right at least
    ``precision`` of the time on these tracks (None: never, on this library). Values it leads with on fewer
    than ``min_tracks`` tagged tracks get no threshold (too few to measure; the model set's own rule stands)."""
    by_value: dict[str, list[tuple[float, bool]]] = {}
    for c in cases:
        if c.top:
            by_value.setdefault(c.top, []).append((c.top_score, normalise(c.top) in {normalise(v) for v in c.user}))
    out: dict[str, float | None] = {}
    for value, rows in sorted(by_value.items()):
        if len(rows) < min_tracks:
            continue
        rows.sort(key=lambda r: -r[0])
        best: float | None = None
        right = 0
        for i, (score, ok) in enumerate(rows, 1):
            right += ok
            # A cut is only possible between different scores: tracks that score alike (copies of one recording
            # differ in the last bits, from how windows were batched) are written together or not at all.
            if (i == len(rows) or rows[i][0] < score - TIE) and right / i >= precision:
                best = score
        out[value] = best
    return out


@dataclass
class Calibration:
    """Per-field, per-value thresholds calibrated on the user's tagged tracks, for one model set."""

    precision: float
    analysers: list[str]
    thresholds: dict[str, dict[str, float | None]]  # field -> value -> threshold (None: never written)
    tracks: dict[str, int]  # field -> tagged tracks it was measured on

    @staticmethod
    def path(database: Path) -> Path:
        from tagger.models.heads import heads_dir

        return heads_dir(database) / CALIBRATION_FILE

    def save(self, database: Path) -> Path:
        path = self.path(database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, (json.dumps(asdict(self), indent=1, sort_keys=True) + "\n").encode())
        except OSError as exc:
            from tagger.errors import StoreError

            raise StoreError(path, f"cannot write the calibration: {exc.strerror or exc}") from exc
        return path

    @classmethod
    def load(cls, database: Path | None, analysers: Iterable[str]) -> "Calibration | None":
        """The stored calibration when it was made for this model set; None when there is none (or it was
        made for another set: its thresholds would mean something else)."""
        if database is None:
            return None
        path = cls.path(Path(database))
        try:
            raw = json.loads(path.read_text())
            cal = cls(float(raw["precision"]), list(raw["analysers"]),
                      {str(f): {str(v): (None if t is None else float(t)) for v, t in dict(vals).items()}
                       for f, vals in dict(raw["thresholds"]).items()},
                      {str(k): int(v) for k, v in dict(raw.get("tracks", {})).items()})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(path, f"calibration file is unreadable ({exc}); run `tagger eval --calibrate` "
                                    "again or `tagger eval --remove-calibration`") from exc
        if sorted(cal.analysers) != sorted(analysers):
            log.warning(
                "%s was calibrated for another model set (%s); not used: run `tagger eval --calibrate` again",
                path, ", ".join(cal.analysers))
            return None
        return cal

    @classmethod
    def remove(cls, database: Path) -> Path | None:
        path = cls.path(Path(database))
        try:
            os.unlink(path)
        except FileNotFoundError:
            return None
        return path


def passes(thresholds: Mapping[str, float | None], value: str, score: float) -> bool:
    """Whether a value with this fused score may be written under the calibrated thresholds (a value without
    one keeps the model set's own rule)."""
    if value not in thresholds:
        return True
    t = thresholds[value]
    return t is not None and score >= t - 1e-9 and not math.isnan(score)
