"""One decision per field from every model in the set: pure logic, no I/O.

Models trained on different datasets speak different vocabularies (MTG-Jamendo has "classical" and
"soundtrack", the Million Song Dataset's Last.fm tags have no classical at all, MagnaTagATune has no
jazz) and different scales (one model's 0.2 is another's 0.6). The decision therefore works in steps
that are each data in the config, and it explains itself:

1. **Vocabulary.** ``vocabulary`` maps each value that may be written (``Classical``) to the model
   labels that support it (``classical``, ``classic``, ``orchestral``), matched by name in any model
   whose card puts the label in that field's group; ``model-id:label`` restricts a label to one model.
2. **Calibration.** A label's score is the model's song-level probability, through the card's per-label
   calibration when it declares one.
3. **Per model.** For an exclusive field (``rule: share``, genre) each model's scores are normalised over
   the values it can express: its *share* for a value is the fraction of its genre evidence that value
   holds, so a model's overall scale stops mattering. For a multi-valued field (``rule: mean``: mood,
   instruments) the calibrated score itself is used.
4. **Fusion.** A value's fused score is the mean over the models that can express it. It is written only
   when the fused score reaches ``min_score`` *and* at least ``min_models`` models agree (their own
   score for it reaches ``relative`` of their own best; a set with fewer models that speak the field needs
   all of them), or, for a value only one model of the set can name, when that model alone is sure of it
   (``solo_score``, see ``_solo``). A second value is written only when it is nearly as strong (``relative`` of
   the first). For an exclusive field the winner must also not lose the comparison with a close rival, in
   which a model that cannot name the winner but is sure of the rival counts against it (see ``_contest``);
   when it does, the rival the models able to choose prefer is written if it clears every bar itself and
   wins that comparison outright (see ``_rival``).
   Otherwise the field is left alone: a wrong genre in a user's files is worse than none.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tagger import fields as field_registry
from tagger.fields import FieldPolicy
from tagger.models.card import Card


@dataclass
class Candidate:
    value: str
    score: float  # fused
    support: list[str]  # model ids that agree
    per_model: dict[str, float]  # model id -> that model's score for the value (share or calibrated)
    labels: dict[str, list[str]]  # model id -> its labels behind the value
    prob: dict[str, float] = field(default_factory=dict)  # model id -> its calibrated probability for the value


@dataclass
class FieldDecision:
    field: str
    values: list[Candidate]
    candidates: list[Candidate]  # every value any model could express, best first
    reason: str

    @property
    def written(self) -> list[str]:
        return [c.value for c in self.values]


@dataclass
class Decision:
    fields: dict[str, FieldDecision] = field(default_factory=dict)

    def selection(self) -> dict[str, list[tuple[str, str, float]]]:
        """The shape the tag planner takes: per field [(value, supporting labels, fused score)]."""
        return {name: [(c.value, ",".join(sorted({lab for labs in c.labels.values() for lab in labs})), c.score)
                       for c in fd.values] for name, fd in self.fields.items()}

    def scores(self, top: int = 10) -> dict[str, float]:
        """The strongest fused values of every field, for the TAGGER_SCORES provenance field."""
        allc = [(c.value, c.score) for fd in self.fields.values() for c in fd.candidates]
        allc.sort(key=lambda kv: (-kv[1], kv[0]))
        return dict(allc[:top])


def calibrated(card: Card, scores: np.ndarray) -> dict[str, float]:
    """label -> calibrated score, using the card's per-label (a, b) on the logit when present."""
    out = {}
    cal = card.tags.calibration
    for label, p in zip(card.labels, map(float, scores)):
        if label in cal:
            a, b = cal[label]
            q = min(max(p, 1e-7), 1 - 1e-7)
            p = 1.0 / (1.0 + math.exp(-(a * math.log(q / (1 - q)) + b)))
        out[label] = p
    return out


def _label_index(vocabulary: Mapping[str, Sequence[str]]) -> list[tuple[str, str | None, str]]:
    """(label lower-case, model id or None, value) for every entry of one field's vocabulary."""
    out = []
    for value, labels in vocabulary.items():
        for entry in labels:
            model, sep, label = entry.rpartition(":") if ":" in entry else ("", "", entry)
            out.append((label.strip().lower(), model.strip() or None, value))
    return out


def model_values(card: Card, field_name: str, vocabulary: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """value -> this model's labels that support it (only labels its card puts in the field's groups)."""
    groups = field_registry.groups_of(field_name)
    by_lower: dict[str, list[str]] = {}
    for label in card.labels:
        if card.groups.get(label) in groups:
            by_lower.setdefault(label.lower(), []).append(label)
    out: dict[str, list[str]] = {}
    for lower, model, value in _label_index(vocabulary):
        if model is not None and model != card.id:
            continue
        for label in by_lower.get(lower, []):
            if label not in out.setdefault(value, []):
                out[value].append(label)
    return {v: labs for v, labs in out.items() if labs}


def decide_field(field_name: str, results: Mapping[str, tuple[Card, np.ndarray]], policy: FieldPolicy,
                 vocabulary: Mapping[str, Sequence[str]]) -> FieldDecision:
    per_value: dict[str, dict[str, float]] = {}
    prob_of: dict[str, dict[str, float]] = {}
    labels_of: dict[str, dict[str, list[str]]] = {}
    best_of: dict[str, float] = {}
    for model_id, (card, scores) in results.items():
        values = model_values(card, field_name, vocabulary)
        if not values:
            continue
        cal = calibrated(card, scores)
        # Synonyms inside one model (classical / classic) fire on the same evidence: take the strongest, not the sum.
        prob = {v: max(cal[lab] for lab in labs) for v, labs in values.items()}
        raw = prob
        if policy.rule == "share":
            total = sum(prob.values())
            raw = {v: (s / total if total > 0 else 0.0) for v, s in prob.items()}
        best_of[model_id] = max(raw.values())
        for v, s in raw.items():
            per_value.setdefault(v, {})[model_id] = s
            prob_of.setdefault(v, {})[model_id] = prob[v]
            labels_of.setdefault(v, {})[model_id] = values[v]
    cands = []
    for v, per in per_value.items():
        fused = float(np.mean(list(per.values())))
        support = sorted(m for m, s in per.items() if best_of[m] > 0 and s >= policy.relative * best_of[m])
        cands.append(Candidate(v, fused, support, per, labels_of[v], prob_of[v]))
    cands.sort(key=lambda c: (-c.score, c.value))
    if not cands:
        return FieldDecision(field_name, [], [], "no model in the set speaks this field")
    # A set smaller than min_models (a user's single model) can still decide: as many as speak the field.
    need = min(policy.min_models, len(best_of))
    chosen: list[Candidate] = []
    top = cands[0]
    solo = _solo(top, best_of, policy)
    winner: Candidate | None = None
    if top.score < policy.min_score:
        reason = f"abstained: best {top.value} {top.score:.2f} < min_score {policy.min_score:.2f}"
    elif len(top.support) < need and solo is None:
        lone = (f"; {top.value} is named by {len(top.per_model)} model of the set, which gives it "
                f"{max(top.prob.values()):.2f} < solo_score {policy.solo_score:.2f}") if len(top.per_model) == 1 else ""
        reason = (f"abstained: {top.value} {top.score:.2f} is backed by {len(top.support)} model(s) "
                  f"({', '.join(top.support) or 'none'}), needs {need}{lone}")
    elif (upset := _contest(top, cands[1:], policy)) is None:
        winner = top
    elif (winner := _rival(cands, best_of, policy, need)) is None:
        reason = upset
    if winner is not None:
        leader, top = top, winner
        solo = _solo(top, best_of, policy)
        chosen.append(top)
        below = cands[cands.index(top) + 1:]
        # A second value comes from below the winner: values a rival winner beat head-to-head are not added back.
        for c in below:
            if len(chosen) >= policy.max_values:
                break
            if c.score >= policy.relative * top.score and c.score >= policy.min_score \
                    and len(c.support) >= need and _also_backed(top, c, policy, need):
                chosen.append(c)
            elif policy.rule == "share":
                break  # exclusive field: only a runner-up nearly as strong as the winner is added
        reason = "; ".join(f"{c.value} {c.score:.2f} from {len(c.per_model)} model(s), backed by "
                           f"{', '.join(c.support)}" for c in chosen)
        if solo is not None and len(top.support) < need:
            reason += f" ({solo})"
        if top is not leader:
            for_top, for_leader = _votes(top, leader, policy)
            reason += (f" ({leader.value} {leader.score:.2f} leads on average, but the models that can choose "
                       f"prefer {top.value}: {', '.join(for_top)} against {', '.join(for_leader) or 'none'})")
        runner = next((c for c in below if c not in chosen), None)
        if runner is not None:
            reason += f" (next: {runner.value} {runner.score:.2f})"
    if policy.max_values == 0:
        chosen, reason = [], "field disabled (max_values 0)"
    return FieldDecision(field_name, chosen, cands, reason)


def _solo(top: Candidate, best_of: Mapping[str, float], policy: FieldPolicy) -> str | None:
    """A value that only one model of the set can name (Blues: only the Last.fm model has the tag) would never
    find a second model to agree. It is written on that model alone when the value is the model's best and
    its own calibrated probability is high (``solo_score``): the model's probability is what makes it
    comparable, not its share. Returns the explanation, or None."""
    if len(top.per_model) != 1:
        return None
    (model, share), = top.per_model.items()
    p = top.prob.get(model, 0.0)
    if share >= best_of.get(model, 1.0) and p >= policy.solo_score:
        return f"only {model} can name {top.value}; it gives it {p:.2f} >= solo_score {policy.solo_score:.2f}"
    return None


def _votes(top: Candidate, other: Candidate, policy: FieldPolicy) -> tuple[list[str], list[str]]:
    """Which models prefer ``top`` and which prefer ``other``. A model that can name both votes when it clearly
    prefers one: the other's score is below ``relative`` of it, the bar below which a model is said not to back
    a value. Scores within that bar are a tie, not a preference: on orchestral game music the Jamendo models
    give Classical and Soundtrack 0.32 each, and a 0.001 difference used to veto a value every other model
    preferred. A model that can name only one of them votes for it when it backs that value (within ``relative``
    of its own best) and is sure of it (calibrated probability >= ``counter_score``): a model that strongly
    hears jazz speaks against Classical although it has no "classical" label."""
    for_top: list[str] = []
    for_other: list[str] = []
    for m in sorted(set(top.per_model) | set(other.per_model)):
        in_top, in_other = m in top.per_model, m in other.per_model
        if in_top and in_other:
            t, o = top.per_model[m], other.per_model[m]
            if t > o and o < policy.relative * t:
                for_top.append(m)
            elif o > t and t < policy.relative * o:
                for_other.append(m)
        elif in_other and other.prob.get(m, 0.0) >= policy.counter_score and m in other.support:
            for_other.append(m)
        elif in_top and top.prob.get(m, 0.0) >= policy.counter_score and m in top.support:
            for_top.append(m)
    return for_top, for_other


def _contest(top: Candidate, others: Sequence[Candidate], policy: FieldPolicy) -> str | None:
    """For an exclusive field: the winner by mean must not lose the direct comparison with any close rival
    (the next three values). A model that lacks a value pushes its evidence to the nearest one it has (a model
    without "classical" calls a quiet orchestra "ambient"), which can lift a value's mean although the models
    able to choose prefer the other; and a model that cannot name the winner but is sure of a rival counts
    against the winner; a tie that such a model makes is not a win. Returns the abstention reason, or None
    when the winner stands."""
    if policy.rule != "share" or policy.max_values < 1:
        return None
    for other in others[:3]:
        for_top, for_other = _votes(top, other, policy)
        outside = any(m not in top.per_model for m in for_other)  # a model that cannot even name the leader
        if len(for_other) > len(for_top) or (outside and len(for_other) == len(for_top)):
            return (f"abstained: {top.value} {top.score:.2f} leads on average, but as many models or more prefer "
                    f"{other.value} ({', '.join(for_other)} against {', '.join(for_top) or 'none'})")
    return None


def _rival(cands: Sequence[Candidate], best_of: Mapping[str, float], policy: FieldPolicy,
           need: int) -> Candidate | None:
    """When the leader by mean loses the head-to-head, the value the models able to choose prefer may still be
    the answer: the leader's mean is often lifted by a model that cannot name the rival and pushes its evidence to
    the nearest value it has, or by one model's strong share (on a hard-rock song Metal led on average while three
    of the five models preferred Rock). One of the leader's close rivals (the next three) is written instead when
    it clears every bar on its own (``min_score``; backed by ``min_models`` or ``solo_score``), beats every value
    ranked above it outright (more models prefer it, and at least ``min_models`` of them: one model's preference
    does not overturn a mean) and loses to none of the close values below it. Otherwise nothing is written."""
    if policy.rule != "share" or policy.max_values < 1:
        return None
    for i, rival in enumerate(cands[1:4], start=1):
        if rival.score < policy.min_score:
            return None  # ranked by score: the rest are lower still
        if len(rival.support) < need and _solo(rival, best_of, policy) is None:
            continue
        above = cands[:i]
        if all(len(f[0]) > len(f[1]) and len(f[0]) >= need for f in (_votes(rival, a, policy) for a in above)) and \
                _contest(rival, cands[i + 1:], policy) is None:
            return rival
    return None


def _also_backed(top: Candidate, second: Candidate, policy: FieldPolicy, need: int) -> bool:
    """A second value of an exclusive field must be nearly as strong as the first in models that could
    have said either; support from models that cannot express the first value does not count."""
    if policy.rule != "share":
        return True
    both = [m for m in top.per_model if m in second.per_model]
    close = [m for m in both if second.per_model[m] >= policy.relative * top.per_model[m]]
    return len(close) >= min(need, len(both)) and bool(close)


def decide(results: Mapping[str, tuple[Card, np.ndarray]], policies: Mapping[str, FieldPolicy],
           vocabulary: Mapping[str, Mapping[str, Sequence[str]]]) -> Decision:
    """``results``: model id -> (card, song-level main label output), for every model of the set."""
    out = Decision()
    for name, policy in policies.items():
        out.fields[name] = decide_field(name, results, policy, vocabulary.get(name, {}))
    return out
