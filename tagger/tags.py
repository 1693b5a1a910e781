"""Which labels become tags, and the exact change to a file's fields: pure logic, no I/O.

Label choice: a model's song-level probabilities are low in absolute terms (a clear jazz piece may get
jazz 0.46 as its top tag), so one fixed 0.5 threshold writes nothing. Per field, a label qualifies when
its probability reaches the field's ``min_score`` (or the label's own) *and* a ``relative`` fraction of
the best label in the same field; at most ``max_values`` are kept, best first. Labels that map to the
same written value (e.g. 'female vocalist' and 'female vocalists') count once.

Ownership: values this tool wrote are listed in the file's ``TAGGER_WRITTEN`` field, so a re-analysis
replaces its own earlier values instead of treating them as the user's, and ``undo`` can remove exactly them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .config import Config, FieldRule, LabelRule

FIELD_NAMES = {"genre": "GENRE", "mood": "MOOD", "descriptors": "TAGGER_DESCRIPTORS"}
OWN_FIELDS = {"TAGGER_DESCRIPTORS"}  # fields that belong to the tool: always replaced
PROVENANCE = ("TAGGER_MODEL", "TAGGER_DATE", "TAGGER_SCORES", "TAGGER_WRITTEN")
SCORES_KEPT = 10


@dataclass(frozen=True)
class Change:
    field: str
    before: list[str]
    after: list[str]


def select_labels(labels: Sequence[str], scores: np.ndarray, rules: dict[str, LabelRule],
                  fields: dict[str, FieldRule]) -> dict[str, list[tuple[str, str, float]]]:
    """Per field: [(written value, label, score)] best first, by the documented rules."""
    by_label = dict(zip(labels, map(float, scores)))
    out: dict[str, list[tuple[str, str, float]]] = {}
    for field, frule in fields.items():
        cands = []
        for label, rule in rules.items():
            if rule.field != field or label not in by_label:
                continue
            score = by_label[label]
            if score >= (rule.min_score if rule.min_score is not None else frule.min_score):
                cands.append((score, label, rule.value))
        cands.sort(key=lambda c: (-c[0], c[1]))
        chosen: list[tuple[str, str, float]] = []
        seen: set[str] = set()
        best = cands[0][0] if cands else 0.0
        for score, label, value in cands:
            if score < frule.relative * best or len(chosen) >= frule.max_values:
                break
            if value.lower() in seen:
                continue
            seen.add(value.lower())
            chosen.append((value, label, score))
        out[field] = chosen
    return out


def _ci_in(value: str, values: Sequence[str]) -> bool:
    return value.lower() in {v.lower() for v in values}


def previously_written(current_written: Sequence[str]) -> dict[str, list[str]]:
    """Parse TAGGER_WRITTEN entries 'FIELD=value' into {FIELD: [values]}."""
    out: dict[str, list[str]] = {}
    for entry in current_written:
        field, sep, value = entry.partition("=")
        if sep:
            out.setdefault(field, []).append(value)
    return out


def plan_changes(current: dict[str, list[str]], selection: dict[str, list[tuple[str, str, float]]], cfg: Config,
                 *, analyser: str, scores: dict[str, float], now: str) -> list[Change]:
    """The fields to change, given the file's ``current`` values (every name in FIELD_NAMES and PROVENANCE).

    Returns an empty list when the file already says what it should: then nothing is written at all.
    """
    ours_before = previously_written(current.get("TAGGER_WRITTEN", []))
    changes: list[Change] = []
    written: list[str] = []
    for field, name in FIELD_NAMES.items():
        before = current.get(name, [])
        ours = [v for v, _, _ in selection.get(field, [])]
        theirs = [v for v in before if not _ci_in(v, ours_before.get(name, []))]
        policy = cfg.fields[field].policy
        if name in OWN_FIELDS:
            after = ours
        elif policy == "fill":
            after = theirs if theirs else ours
        elif policy == "merge":
            after = theirs + [v for v in ours if not _ci_in(v, theirs)]
        else:  # replace, but never empty a user's field when we have nothing to offer
            after = ours if ours else theirs
        if name not in OWN_FIELDS:
            written += [f"{name}={v}" for v in after if not _ci_in(v, theirs)]
        if after != before:
            changes.append(Change(name, before, after))
    if cfg.provenance and (changes or current.get("TAGGER_MODEL", []) != [analyser]):
        top = sorted(scores.items(), key=lambda kv: -kv[1])[:SCORES_KEPT]
        for name, after in (("TAGGER_MODEL", [analyser]), ("TAGGER_DATE", [now]),
                            ("TAGGER_SCORES", [f"{label}={score:.3f}" for label, score in top]),
                            ("TAGGER_WRITTEN", written)):
            if current.get(name, []) != after:
                changes.append(Change(name, current.get(name, []), after))
    return changes


def plan_undo(current: dict[str, list[str]]) -> list[Change]:
    """Remove exactly what TAGGER_WRITTEN says this tool added, and the tool's own fields."""
    ours = previously_written(current.get("TAGGER_WRITTEN", []))
    changes = []
    for name in ("GENRE", "MOOD"):
        before = current.get(name, [])
        after = [v for v in before if not _ci_in(v, ours.get(name, []))]
        if after != before:
            changes.append(Change(name, before, after))
    for name in ("TAGGER_DESCRIPTORS", *PROVENANCE):
        if current.get(name):
            changes.append(Change(name, current[name], []))
    return changes


ALL_FIELDS = (*FIELD_NAMES.values(), *PROVENANCE)
