"""The exact change to a file's fields, given the decided values: pure logic, no I/O.

Which values are decided is ``decide.py``'s job (all models fused, abstaining when unsure); here the
field policies (fill, merge, replace) meet what the file already holds.

Ownership: values this tool wrote are listed in the file's ``TAGGER_WRITTEN`` field, so a re-analysis
replaces its own earlier values instead of treating them as the user's, and ``undo`` can remove exactly them.
A field named in the file's ``TAGGER_LOCKED`` belongs to the user whatever the policy says: a correction made
in the web page or with ``tagger set`` locks its field, so no later scan, model upgrade or head overwrites it.
The lock lives in the file, not only in the database, so it survives a lost database and a move.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tagger import fields as field_registry
from tagger.config import Config

# TAGGER_PADDING: the file's metadata padding before the tool first wrote to it (set by the writer, which
# knows the format), so that undo can give the file back its exact layout.
PROVENANCE = ("TAGGER_MODEL", "TAGGER_DATE", "TAGGER_SCORES", "TAGGER_WRITTEN", "TAGGER_PADDING")
PADDING = "TAGGER_PADDING"
LOCKED = "TAGGER_LOCKED"  # field names (GENRE, MOOD) the user has taken over
SCORES_KEPT = 10
MAX_VALUE_CHARS = 100


@dataclass(frozen=True)
class Change:
    field: str
    before: list[str]
    after: list[str]


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


def user_values(current: dict[str, list[str]]) -> dict[str, list[str]]:
    """The user's own values of each field the tool writes (what the file holds minus what TAGGER_WRITTEN
    says the tool added): what ``tagger train`` learns from. Fields with none are left out."""
    ours = previously_written(current.get("TAGGER_WRITTEN", []))
    out = {}
    own = field_registry.tool_tags()
    for field, name in field_registry.tags().items():
        if name in own:
            continue
        values = [v for v in current.get(name, []) if v.strip() and not _ci_in(v, ours.get(name, []))]
        if values:
            out[field] = values
    return out


def locked_fields(current: dict[str, list[str]]) -> set[str]:
    return {v.strip().upper() for v in current.get(LOCKED, []) if v.strip()}


def clean_values(field: str, values: Sequence[str]) -> list[str]:
    """A user's values for ``field``, checked: ValueError names the field and what is wrong."""
    out: list[str] = []
    for raw in values:
        v = " ".join(str(raw).split())
        if not v:
            continue
        if len(v) > MAX_VALUE_CHARS:
            raise ValueError(f"{field}: a value is longer than {MAX_VALUE_CHARS} characters")
        if any(ord(c) < 32 for c in v) or "=" in v:
            raise ValueError(f"{field}: {v!r} holds a control character or '='")
        if not _ci_in(v, out):
            out.append(v)
    return out


def plan_correction(current: dict[str, list[str]], field: str, values: Sequence[str] | None) -> list[Change]:
    """The user's own correction of one field: ``values`` become the field's values (an empty list clears it),
    the tool's claim on them is dropped from TAGGER_WRITTEN (they are the user's now: ``tagger train`` learns
    from them, ``undo`` keeps them), and the field is locked. ``values=None`` unlocks the field instead: its
    values stay as the user's, and the field's policy applies again at the next scan."""
    if field not in field_registry.correctable():
        raise ValueError(f"{field!r} cannot be corrected; choose one of {', '.join(field_registry.correctable())}")
    name = field_registry.field(field).tag
    locks = [v for v in current.get(LOCKED, []) if v.strip()]
    if values is None:
        after_locks = [v for v in locks if v.strip().upper() != name]
        return [Change(LOCKED, current.get(LOCKED, []), after_locks)] if after_locks != current.get(LOCKED, []) else []
    changes: list[Change] = []
    after = clean_values(field, values)
    if after != current.get(name, []):
        changes.append(Change(name, current.get(name, []), after))
    written = [w for w in current.get("TAGGER_WRITTEN", []) if w.partition("=")[0] != name]
    if written != current.get("TAGGER_WRITTEN", []):
        changes.append(Change("TAGGER_WRITTEN", current.get("TAGGER_WRITTEN", []), written))
    if name not in {v.strip().upper() for v in locks}:
        changes.append(Change(LOCKED, current.get(LOCKED, []), [*locks, name]))
    return changes


def plan_changes(current: dict[str, list[str]], selection: dict[str, list[tuple[str, str, float]]], cfg: Config,
                 *, analyser: str | Sequence[str], scores: dict[str, float], now: str) -> list[Change]:
    """The fields to change, given the file's ``current`` values (every tag of :mod:`tagger.fields`, PROVENANCE).

    Returns an empty list when the file already says what it should: then nothing is written at all.
    """
    analysers = [analyser] if isinstance(analyser, str) else list(analyser)
    ours_before = previously_written(current.get("TAGGER_WRITTEN", []))
    locked = locked_fields(current)
    changes: list[Change] = []
    written: list[str] = []
    own = field_registry.tool_tags()
    for field, name in field_registry.tags().items():
        before = current.get(name, [])
        ours = [v for v, _, _ in selection.get(field, [])]
        theirs = [v for v in before if not _ci_in(v, ours_before.get(name, []))]
        policy = cfg.fields[field].policy
        if name in locked:  # the user's: left exactly as it is, and what we wrote earlier stays ours
            written += [f"{name}={v}" for v in before if _ci_in(v, ours_before.get(name, []))]
            continue
        if name in own:
            after = ours
        elif policy == "fill":
            after = theirs if theirs else ours
        elif policy == "merge":
            after = theirs + [v for v in ours if not _ci_in(v, theirs)]
        else:  # replace, but never empty a user's field when we have nothing to offer
            after = ours if ours else theirs
        if name not in own:
            written += [f"{name}={v}" for v in after if not _ci_in(v, theirs)]
        if after != before:
            changes.append(Change(name, before, after))
    if not changes:  # nothing the user would see changes: the file is not opened for writing at all
        return []
    if not written and not any(selection.get(f) for f, name in field_registry.tags().items() if name in own):
        # None of our values is left in the file: our fields go too, and the padding is given back, so the
        # file is what it was before the tool first wrote to it.
        return [*changes, *(Change(name, current[name], []) for name in PROVENANCE if current.get(name))]
    if cfg.provenance:
        top = sorted(scores.items(), key=lambda kv: -kv[1])[:SCORES_KEPT]
        fields = [("TAGGER_MODEL", analysers), ("TAGGER_DATE", [now]), ("TAGGER_WRITTEN", written)]
        if cfg.scores:
            fields.insert(2, ("TAGGER_SCORES", [f"{label}={score:.3f}" for label, score in top]))
        elif current.get("TAGGER_SCORES"):
            fields.insert(2, ("TAGGER_SCORES", []))
        for name, after in fields:
            if current.get(name, []) != after:
                changes.append(Change(name, current.get(name, []), after))
    return changes


def plan_undo(current: dict[str, list[str]]) -> list[Change]:
    """Remove exactly what TAGGER_WRITTEN says this tool added, and the tool's own fields."""
    ours = previously_written(current.get("TAGGER_WRITTEN", []))
    changes = []
    for name in field_registry.user_tags():
        before = current.get(name, [])
        after = [v for v in before if not _ci_in(v, ours.get(name, []))]
        if after != before:
            changes.append(Change(name, before, after))
    for name in (*field_registry.tool_tags(), *PROVENANCE):
        if current.get(name):
            changes.append(Change(name, current[name], []))
    return changes


def all_tags() -> tuple[str, ...]:
    """Every tag the tool reads to plan a change: each field's, its provenance and the user's locks."""
    return (*field_registry.tags().values(), *PROVENANCE, LOCKED)
