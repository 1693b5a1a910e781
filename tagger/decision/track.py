"""Trained heads: small plug-in models that decide one field in the user's own vocabulary.

A head is an ONNX file like any other model, but its card ``reads`` stored song-level vectors (the tag
probabilities and embeddings of named model versions) instead of audio, and says which field it
``decides``. ``tagger train`` writes heads into the database folder (``<database>/heads/``), so they
belong to the library they were trained on; the scan, the daemon and ``analyze`` pick them up from there.
A head runs on vectors already in the store: adding or removing one never decodes audio again.

A head whose input blocks name a model version the set no longer has is not used (its features would
mean something else); the field then falls back to the model set's own decision, and a warning says to
retrain.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagger.decision.context import LibraryContext, Vote, normalise
from tagger.decision.decide import Candidate, Decision, FieldDecision, decide
from tagger.fields import FieldPolicy
from tagger.models.card import Card
from tagger.models.heads import Head, Vectors, load_heads

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)




def decide_head(card: Card, scores: np.ndarray, policy: FieldPolicy) -> FieldDecision:
    """The field's values from a head's scores: a label is written only at or above its own threshold
    (chosen at training for a precision target); an exclusive (softmax) head offers only its top label."""
    out = card.tags
    ranked = sorted(zip(out.labels, map(float, scores)), key=lambda kv: (-kv[1], kv[0]))
    cands = [Candidate(label, p, [card.id], {card.id: p}, {card.id: [label]}) for label, p in ranked]
    if policy.max_values == 0:
        return FieldDecision(card.decides, [], cands, "field disabled (max_values 0)")
    pool = cands[:1] if out.kind == "softmax" else cands
    chosen = [c for c in pool if c.value in out.thresholds and c.score >= out.thresholds[c.value]][:policy.max_values]
    top = cands[0]
    if chosen:
        reason = "; ".join(f"{c.value} {c.score:.2f} >= {out.thresholds[c.value]:.2f} from head {card.id}"
                           for c in chosen)
    elif top.value not in out.thresholds:
        reason = f"abstained: head {card.id} never reached its precision target for {top.value} in training"
    else:
        reason = (f"abstained: head {card.id} gives {top.value} {top.score:.2f} < its threshold "
                  f"{out.thresholds[top.value]:.2f}")
    return FieldDecision(card.decides, chosen, cands, reason)


def with_context(fd: FieldDecision, vote: Vote | None, card: Card) -> FieldDecision:
    """A head's decision with its album/folder mates' vote (see ``tagger/decision/context.py``): agreeing mates
    confirm it; when they disagree or the head abstained, the mates' value is written, and the reason says so."""
    if vote is None:
        return fd
    if [v.casefold() for v in fd.written] == [vote.value.casefold()]:
        return FieldDecision(fd.field, fd.values, fd.candidates, f"{fd.reason}; {vote.reason}")
    share = vote.agree / vote.mates
    chosen = Candidate(vote.value, share, [f"{vote.scope} mates"], {f"{vote.scope} mates": share},
                       {card.id: [vote.value]})
    before = f"head {card.id} alone: " + (", ".join(fd.written) if fd.written else fd.reason)
    return FieldDecision(fd.field, [chosen], fd.candidates, f"{vote.reason} ({before})")


def with_set(fd: FieldDecision, base: FieldDecision | None, card: Card) -> FieldDecision:
    """A head that abstained, with the model set's own decision for the field: when the set writes the value that
    is the head's top label (compared as `tagger eval` compares values: case, spaces, hyphens and '&' ignored),
    the head's label is written in the user's spelling. Two voices trained on different data agree, which is
    rarer by chance than either alone; `tagger train` enables this only where that agreement reached the
    precision target on the library's own tagged tracks, held out."""
    if fd.values or base is None or not base.values or not fd.candidates:
        return fd
    top = fd.candidates[0]
    if normalise(base.values[0].value) != normalise(top.value):
        return fd
    chosen = Candidate(top.value, top.score, [card.id, "model set"], dict(top.per_model), dict(top.labels))
    return FieldDecision(fd.field, [chosen], fd.candidates,
                         f"{top.value}: head {card.id} gives it {top.score:.2f}, below its own threshold, and the "
                         f"model set's decision is {base.values[0].value} too ({fd.reason})")


def decide_track(vectors: Vectors, cards: Mapping[str, Card], heads: list[Head],
                 policies: Mapping[str, FieldPolicy], vocabulary: Mapping[str, Mapping[str, Sequence[str]]],
                 context: Callable[[Head], Vote | None] | None = None) -> Decision:
    """The one decision rule (scan, daemon and ``analyze``): the model set's fused decision, with every
    field that has a usable trained head decided by the head instead (confirmed by the set's own value, and by
    its album/folder mates' vote, where its card enables that and ``context`` can supply one)."""
    scores = {mid: (cards[mid], tags) for mid, (_, tags, _) in vectors.items() if mid in cards}
    decision = decide(scores, policies, vocabulary)
    for head in heads:
        policy = policies.get(head.field)
        row = head.features(vectors)
        if policy is None or row is None:
            continue
        fd = decide_head(head.card, head.predict(row)[0], policy)
        if head.card.agree_with_set and policy.max_values > 0:
            fd = with_set(fd, decision.fields.get(head.field), head.card)
        if head.card.context and context is not None and policy.max_values > 0:
            fd = with_context(fd, context(head), head.card)
        decision.fields[head.field] = fd
    return decision


class Decider:
    """The one answer to "what would be written" for a track: the scan, the daemon, ``tagger analyze``,
    ``tagger show`` and the web page all ask this, so they cannot disagree. It holds the library's trained
    heads and, for heads whose card enables it, the user's own values of album and folder mates."""

    def __init__(self, cards: Mapping[str, Card], policies: Mapping[str, FieldPolicy],
                 vocabulary: Mapping[str, Mapping[str, Sequence[str]]], database: Path | None,
                 records: Callable[[], list[dict]] | None = None, *, calibrated: bool = True) -> None:
        from tagger.decision.evaluate import Calibration

        self.cards, self.policies, self.vocabulary = cards, policies, vocabulary
        self.heads = load_heads(database, {mid: c.analyser for mid, c in cards.items()})
        # Per-value thresholds from `tagger eval --calibrate` (what is written reaches the user's precision).
        self.calibration = Calibration.load(database, [c.analyser for c in cards.values()]) if calibrated else None
        self.contexts: dict[str, LibraryContext] = {}
        if records is not None and any(h.card.context for h in self.heads):
            rows = records()
            self.contexts = {h.field: LibraryContext.from_records(h.field, rows)
                             for h in self.heads if h.card.context}

    @property
    def head_analysers(self) -> list[str]:
        return sorted(h.analyser for h in self.heads)

    def decide(self, vectors: Vectors, path: str = "", album: str | None = None) -> Decision:
        def context(head: Head) -> Vote | None:
            ctx = self.contexts.get(head.field)
            return ctx.vote(path, album, head.card.context) if ctx is not None and path else None

        decision = decide_track(vectors, self.cards, self.heads, self.policies, self.vocabulary, context)
        if self.calibration is not None:
            for name, th in self.calibration.thresholds.items():
                fd = decision.fields.get(name)
                if fd is not None and fd.values:
                    decision.fields[name] = self._calibrated(fd, th)
        return decision

    def _calibrated(self, fd: FieldDecision, thresholds: Mapping[str, float | None]) -> FieldDecision:
        """The field's decision under the thresholds calibrated on the user's tagged tracks: a leader below its
        threshold means nothing is written; a second value below its own is dropped."""
        from tagger.decision.evaluate import passes

        assert self.calibration is not None
        top = fd.values[0]
        target = f"the threshold calibrated on your tagged tracks for precision {self.calibration.precision:.2f}"
        if not passes(thresholds, top.value, top.score):
            t = thresholds.get(top.value)
            why = "never reaches" if t is None else f"{top.score:.2f} is below"
            return FieldDecision(fd.field, [], fd.candidates, f"abstained: {top.value} {why} {target} ({fd.reason})")
        kept = [c for c in fd.values if passes(thresholds, c.value, c.score)]
        if len(kept) == len(fd.values):
            return FieldDecision(fd.field, kept, fd.candidates, f"{fd.reason}; reaches {target}")
        return FieldDecision(fd.field, kept, fd.candidates, f"{fd.reason}; second value dropped below {target}")

    def learn(self, path: str, album: str | None, user: Mapping[str, list[str]]) -> None:
        """A track's own values, seen during a scan, join its mates' votes for the tracks that follow."""
        for name, ctx in self.contexts.items():
            ctx.add(path, album, list(user.get(name, [])))


