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
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagger.decision.context import LibraryContext, Vote
from tagger.decision.decide import (
    Candidate,
    Decision,
    FieldDecision,
    FieldPolicy,
    decide,
)
from tagger.errors import ModelError
from tagger.models.card import Card

if TYPE_CHECKING:
    from tagger.library.store import Store

log = logging.getLogger(__name__)

HEADS_DIR = "heads"

# model id -> (analyser "id@version", song-level tags, song-level embedding)
Vectors = Mapping[str, tuple[str, np.ndarray, np.ndarray]]


def stored_vectors(store: "Store", path: Path | str, cards: Mapping[str, Card], *,
                   skip_missing: bool = False) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Every model's stored song-level (analyser, tags, embedding) for a track: the input of a decision made
    without decoding. ``skip_missing`` leaves out a model whose vector file lost the row (else StoreError)."""
    out: dict[str, tuple[str, np.ndarray, np.ndarray]] = {}
    for mid, card in cards.items():
        rec = store.get(path, mid)
        if rec is None or rec.get("status") != "ok" or rec.get("slot") is None:
            continue
        if skip_missing and not store.has_vectors(rec):
            continue
        tags, emb = store.vectors(rec)
        if len(tags) == len(card.labels):
            out[mid] = (str(rec.get("analyser")), tags, emb)
    return out


def heads_dir(database: Path) -> Path:
    return Path(database) / HEADS_DIR


def remove_heads(database: Path, fields: tuple[str, ...] | None = None) -> list[Path]:
    """Delete trained heads (all, or those of ``fields``) and their reports; returns what was removed."""
    folder = heads_dir(database)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.glob("*.onnx")):
        if fields is None or path.stem in fields:
            path.unlink()
            removed.append(path)
            report = folder / f"{path.stem}-report"
            if report.is_dir():
                shutil.rmtree(report)
    return removed


class Head:
    """One trained head: its card and a small CPU session (a head is a single matrix product)."""

    def __init__(self, path: Path) -> None:
        from tagger.models.session import Model

        self.path = Path(path)
        self.model = Model(self.path, device="cpu", threads=1)
        self.card: Card = self.model.card
        if not self.card.is_head:
            raise ModelError(path, "not a head (its card reads no stored vectors); audio models go in `models:`")

    @property
    def field(self) -> str:
        return self.card.decides

    @property
    def analyser(self) -> str:
        return self.card.analyser

    def missing_sources(self, analysers: Mapping[str, str]) -> list[str]:
        """The input blocks the model set cannot provide (``analysers``: model id -> id@version in the set)."""
        return [s.analyser for s in self.card.reads if analysers.get(s.model) != s.analyser]

    def features(self, vectors: Vectors) -> np.ndarray | None:
        """The head's input row for one track, or None when a block is missing or from another model version."""
        parts = []
        for src in self.card.reads:
            got = vectors.get(src.model)
            if got is None or got[0] != src.analyser:
                return None
            block = got[1] if src.part == "tags" else got[2]
            if len(block) != src.dim:
                return None
            parts.append(np.asarray(block, np.float32))
        return np.concatenate(parts)

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Label scores (N, labels) for feature rows (N, input width)."""
        out = self.model.run_all(np.atleast_2d(rows).astype(np.float32))
        return out[self.card.tags.name]


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
    """A head's decision with its album/folder mates' vote (see ``tagger/context.py``): agreeing mates
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


def decide_track(vectors: Vectors, cards: Mapping[str, Card], heads: list[Head],
                 policies: Mapping[str, FieldPolicy], vocabulary: Mapping[str, Mapping[str, list[str]]],
                 context: Callable[[Head], Vote | None] | None = None) -> Decision:
    """The one decision rule (scan, daemon and ``analyze``): the model set's fused decision, with every
    field that has a usable trained head decided by the head instead (with its album/folder mates'
    vote when its card enables that and ``context`` can supply one)."""
    scores = {mid: (cards[mid], tags) for mid, (_, tags, _) in vectors.items() if mid in cards}
    decision = decide(scores, policies, vocabulary)
    for head in heads:
        policy = policies.get(head.field)
        row = head.features(vectors)
        if policy is None or row is None:
            continue
        fd = decide_head(head.card, head.predict(row)[0], policy)
        if head.card.context and context is not None and policy.max_values > 0:
            fd = with_context(fd, context(head), head.card)
        decision.fields[head.field] = fd
    return decision


class Decider:
    """The one answer to "what would be written" for a track: the scan, the daemon, ``tagger analyze``,
    ``tagger show`` and the web page all ask this, so they cannot disagree. It holds the library's trained
    heads and, for heads whose card enables it, the user's own values of album and folder mates."""

    def __init__(self, cards: Mapping[str, Card], policies: Mapping[str, FieldPolicy],
                 vocabulary: Mapping[str, Mapping[str, list[str]]], database: Path | None,
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


def load_heads(database: Path | None, analysers: Mapping[str, str]) -> list[Head]:
    """The library's trained heads that the model set can feed, one per field (sorted by file name).

    ``analysers``: model id -> id@version of the configured set. A head that cannot be fed, cannot be
    loaded, or is a second head for a field is skipped with a log line that names the file and the reason.
    """
    if database is None:
        return []
    folder = heads_dir(database)
    if not folder.is_dir():
        return []
    heads: list[Head] = []
    seen: set[str] = set()
    for path in sorted(folder.glob("*.onnx")):
        try:
            head = Head(path)
        except ModelError as exc:  # a damaged head must not stop every scan (or the daemon): its field falls back
            log.error("%s; not used: the model set decides its field (run `tagger train` again, or "
                      "`tagger train --remove`)", exc)
            continue
        missing = head.missing_sources(analysers)
        if missing:
            log.warning("head %s (field %s) reads %s, which the model set does not provide; not used "
                        "(run `tagger train` again)", path, head.field, ", ".join(missing))
            continue
        if head.field in seen:
            log.error("%s: a second head for field %r; not used (remove one from %s)", path, head.field, folder)
            continue
        seen.add(head.field)
        heads.append(head)
    return heads
