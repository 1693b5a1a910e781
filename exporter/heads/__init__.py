"""Training for ``tagger train``: heads that write a field in the user's own vocabulary, learned from the library.

Many libraries are half tagged in the user's own words ("Romantic Classical", "Dub Techno"). The scan
keeps, per track, the values the user gave each field (what the file held minus what this tool wrote);
here a small head per field learns them from the vectors the scan already stored (no decoding), is
evaluated honestly (folds never split an album), calibrated per label so it abstains below a precision
target, exported through the exporter's checks as a plug-in ONNX file in ``<database>/heads/``, and from
then on decides that field in every scan and in the daemon. ``tagger train --remove`` takes it out again.

It lives in the exporter because it needs torch, onnx and matplotlib (the ``train`` extra); the runtime that
applies a head (``tagger/models/heads.py``) and removes one needs only onnxruntime.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagger import fields as field_registry
from tagger.fields import FieldPolicy
from tagger.fsutil import fsync_dir
from tagger.library.store import Store
from tagger.models.card import Card, Output
from tagger.models.heads import heads_dir

from .calibrate import label_metrics, precision_threshold, reliability
from .dataset import Dataset, collect
from .split import group_folds, group_key, groups_per_label, track_folds

TRAINABLE = field_registry.trainable()  # the fields a user fills in themselves (tagger.fields declares them)


@dataclass
class TrainOptions:
    fields: tuple[str, ...] = field(default_factory=field_registry.trainable)
    calibration: str = "precision"  # precision | equal-rate
    precision: float = 0.9  # held-out precision a label must reach to be written
    folds: int = 5
    min_tracks: int = 5  # per value
    min_labelled: int = 20  # per field
    l2: float = 1e-2
    seed: int = 0


@dataclass
class FieldResult:
    field: str
    status: str  # trained | skipped
    reason: str
    head: Path | None = None
    report: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


class FitProgress:
    """Counts fits (folds and the final one) and reports done/total with an ETA to a callback."""

    def __init__(self, callback: Callable[[str, int, int, float | None], None] | None, name: str, total: int) -> None:
        self.callback, self.name, self.total, self.done = callback, name, total, 0
        self.t0 = time.monotonic()

    def step(self) -> None:
        self.done += 1
        if self.callback is not None:
            spent = time.monotonic() - self.t0
            eta = spent / self.done * (self.total - self.done) if self.done else None
            self.callback(self.name, self.done, self.total, eta)


def _held_out(ds: Dataset, kind: str, opts: TrainOptions, progress: FitProgress) -> tuple[np.ndarray, dict]:
    """Held-out scores per row (group folds where a label spans several groups, track folds otherwise)."""
    from .fit import out_of_fold

    groups = [group_key(r) for r in ds.records]
    n_groups = len(set(groups))
    targets = ds.Y if kind == "softmax" else (ds.Y > 0).astype(np.float32)
    spans = groups_per_label(groups, targets)
    cross = [g >= 2 for g in spans]
    k = max(2, min(opts.folds, int((targets > 0).sum(axis=0).min())))
    held = np.zeros(targets.shape, np.float32)
    primary = ds.primary
    by_group = np.array([cross[j] for j in primary]) if n_groups >= 2 else np.zeros(len(primary), bool)
    if by_group.any():
        oof = out_of_fold(ds.X, targets, group_folds(groups, min(k, n_groups), opts.seed), kind, l2=opts.l2,
                          on_fold=progress.step)
        held[by_group] = oof[by_group]
    if (~by_group).any():
        oof = out_of_fold(ds.X, targets, track_folds(primary, k, opts.seed), kind, l2=opts.l2, on_fold=progress.step)
        held[~by_group] = oof[~by_group]
    within = [ds.labels[j] for j, c in enumerate(cross) if not c or n_groups < 2]
    split = {"kind": "album/artist/folder groups" if by_group.all() else
             ("groups where possible, tracks otherwise" if by_group.any() else "tracks"),
             "folds": k, "groups": n_groups,
             "labels_split_by_track": within,
             "note": ("labels whose tracks all come from one album (or artist, or folder) cannot be held out "
                      "by group; they were split by track, so their figures are optimistic") if within else ""}
    return held, {"split": split, "groups_per_label": dict(zip(ds.labels, spans))}


def _thresholds(ds: Dataset, held: np.ndarray, kind: str, opts: TrainOptions) -> tuple[dict, dict[str, float]]:
    per_label: dict[str, dict] = {}
    chosen: dict[str, float] = {}
    top = held.argmax(axis=1)
    for j, label in enumerate(ds.labels):
        positive = ds.Y[:, j] > 0
        scores = held[:, j]
        if kind == "softmax":  # the head writes only its top label: judge the label where it is on top
            mask = top == j
            t_prec = precision_threshold(scores[mask], positive[mask], opts.precision)
        else:
            t_prec = precision_threshold(scores, positive, opts.precision)
        entry = {"tracks": int(positive.sum()), **label_metrics(scores, positive), "precision_threshold": t_prec}
        t = t_prec if opts.calibration == "precision" else entry["equal_rate_threshold"]
        if t is not None:
            chosen[label] = round(float(t), 6)
            written = (top == j) & (scores >= t) if kind == "softmax" else scores >= t
            entry["held_out_written"] = int(written.sum())
            entry["held_out_precision"] = float(positive[written].mean()) if written.any() else None
            entry["held_out_recall"] = float((written & positive).sum() / max(positive.sum(), 1))
        else:
            entry["never_written"] = f"held-out precision never reached {opts.precision:.2f}"
        per_label[label] = entry
    return per_label, chosen


def context_check(ds: Dataset, opts: TrainOptions) -> dict:
    """How often the album/folder mates' vote is right on this library: every tagged track held out in
    turn and voted on by its tagged mates. Enabled for the head only when it meets the precision target."""
    from tagger.decision.context import SCOPES, LibraryContext, normalise

    ctx = LibraryContext.from_records(ds.field, ds.records)
    voted = right = 0
    for r in ds.records:
        vote = ctx.vote(r["path"], r.get("album"), SCOPES)
        if vote is None:
            continue
        voted += 1
        right += normalise(vote.value) in {normalise(v) for v in (r.get("user") or {}).get(ds.field, [])}
    precision = right / voted if voted else None
    enabled = precision is not None and voted >= 5 and precision >= opts.precision
    return {"scopes": list(SCOPES) if enabled else [], "voted": voted, "tracks": len(ds.records),
            "precision": precision, "enabled": enabled,
            "note": "tagged album/folder mates vote for the untagged tracks" if enabled else
                    f"not used: held-out precision {precision if precision is None else round(precision, 3)} "
                    f"over {voted} votes (needs {opts.precision:.2f} over 5+)"}


def set_agreement_check(ds: Dataset, cards: list[Card], held: np.ndarray, thresholds: Mapping[str, float],
                        policy: FieldPolicy, vocabulary: Mapping[str, Sequence[str]] | None,
                        opts: TrainOptions) -> dict:
    """How often the head's top label is right on the tagged tracks where the head, held out, stays below its
    threshold but the model set's own decision (from the same stored vectors, the rule a scan uses) is that
    same value. Enabled (``agree_with_set`` on the card) only where it meets the precision target over 5+ such
    tracks: a library whose own values the set never says, or says wrongly, never turns it on."""
    from tagger.decision.context import normalise
    from tagger.decision.decide import decide_field

    if not vocabulary:
        return {"enabled": False, "agreed": 0, "precision": None, "note": "not used: no vocabulary given"}
    offsets = np.cumsum([0] + [s.dim for s in ds.sources])
    tag_cols = {s.model: (int(a), int(a) + s.dim) for s, a in zip(ds.sources, offsets) if s.part == "tags"}
    by_id = {c.id: c for c in cards if c.id in tag_cols}
    agreed = right = 0
    for i, row in enumerate(ds.X):
        j = int(held[i].argmax())
        label = ds.labels[j]
        if label in thresholds and held[i, j] >= thresholds[label]:
            continue  # the head writes on its own
        results = {mid: (card, row[slice(*tag_cols[mid])]) for mid, card in by_id.items()}
        base = decide_field(ds.field, results, policy, vocabulary)
        if not base.values or normalise(base.values[0].value) != normalise(label):
            continue
        agreed += 1
        right += bool(ds.Y[i, j] > 0)
    precision = right / agreed if agreed else None
    enabled = precision is not None and agreed >= 5 and precision >= opts.precision
    return {"enabled": enabled, "agreed": agreed, "precision": precision,
            "note": ("below its threshold, the head's top label is written when the model set decides the same "
                     "value") if enabled else
                    (f"not used: held-out precision {precision if precision is None else round(precision, 3)} "
                     f"over {agreed} agreements (needs {opts.precision:.2f} over 5+)")}


def train_field(store: Store, cards: list[Card], field_name: str, policy: FieldPolicy, opts: TrainOptions,
                database: Path, progress_cb=None, vocabulary: Mapping[str, Sequence[str]] | None = None) -> FieldResult:
    t0 = time.monotonic()
    ds = collect(store, cards, field_name, opts.min_tracks)
    if len(ds.labels) < 2 or len(ds.X) < opts.min_labelled:
        return FieldResult(field_name, "skipped",
                           f"{len(ds.X)} tracks carry your own {field_name} in {len(ds.labels)} value(s) with "
                           f"{opts.min_tracks}+ tracks each; a head needs {opts.min_labelled}+ tracks and 2+ values"
                           + (f" (left out as rare: {', '.join(sorted(ds.left_out))})" if ds.left_out else ""))
    from .fit import fit

    kind = "softmax" if policy.rule == "share" else "sigmoid"
    progress = FitProgress(progress_cb, field_name, 2 * max(2, opts.folds) + 1)
    held, split_info = _held_out(ds, kind, opts, progress)
    per_label, thresholds = _thresholds(ds, held, kind, opts)
    top = held.argmax(axis=1)
    correct = ds.Y[np.arange(len(top)), top] > 0
    primary = ds.primary
    majority = float(np.bincount(primary, minlength=len(ds.labels)).max() / len(primary))
    if kind == "softmax":
        written = np.array([ds.labels[t] in thresholds and held[i, t] >= thresholds[ds.labels[t]]
                            for i, t in enumerate(top)])
        confusion = np.zeros((len(ds.labels), len(ds.labels)), np.int64)
        np.add.at(confusion, (primary, top), 1)
        summary = {"accuracy": float(correct.mean()), "majority_baseline": majority,
                   "coverage": float(written.mean()),
                   "precision_when_written": float(correct[written].mean()) if written.any() else None}
        rel = reliability(held[np.arange(len(top)), top], correct)
    else:
        confusion = None
        flags = np.array([[label in thresholds and held[i, j] >= thresholds[label]
                           for j, label in enumerate(ds.labels)] for i in range(len(held))])
        truth = ds.Y > 0
        summary = {"accuracy": float((flags == truth).mean()), "majority_baseline": majority,
                   "coverage": float(flags.any(axis=1).mean()),
                   "precision_when_written": float(truth[flags].mean()) if flags.any() else None}
        rel = reliability(held.ravel(), truth.ravel())
    context = context_check(ds, opts)
    agreement = (set_agreement_check(ds, cards, held, thresholds, policy, vocabulary, opts) if kind == "softmax"
                 else {"enabled": False, "note": "not used: only an exclusive field's head offers one value"})
    final = fit(ds.X, ds.Y if kind == "softmax" else (ds.Y > 0).astype(np.float32), kind, l2=opts.l2, seed=opts.seed)
    progress.step()
    digest = hashlib.sha256(final.weight.tobytes() + final.bias.tobytes()
                            + json.dumps([ds.labels, thresholds, context["scopes"], agreement["enabled"]]).encode()
                            ).hexdigest()[:12]
    group = field_registry.groups_of(field_name)[0]
    report = {"field": field_name, "kind": kind, "tracks": len(ds.X), "untagged_tracks": ds.unlabelled,
              "labels": {label: int((ds.Y[:, j] > 0).sum()) for j, label in enumerate(ds.labels)},
              "left_out_rare": ds.left_out, "calibration": opts.calibration, "precision_target": opts.precision,
              **split_info, **summary, "context": context, "set_agreement": agreement, "per_label": per_label,
              "reliability": rel,
              "confusion": confusion.tolist() if confusion is not None else None,
              "reads": [f"{s.analyser}:{s.part}" for s in ds.sources], "version": digest}
    card = Card(id=f"head-{field_name}", version=digest, sample_rate=0, window=0, hop=0,
                outputs=(Output(field_name, kind, tuple(ds.labels), {label: group for label in ds.labels},
                                thresholds=thresholds,
                                meaning=f"your own {field_name} values, learned from {len(ds.X)} tagged tracks"),),
                input_name="features", reads=ds.sources, decides=field_name, context=tuple(context["scopes"]),
                agree_with_set=bool(agreement["enabled"]),
                description=f"Head for {field_name} trained by `tagger train` on {database}",
                metrics={k: v for k, v in summary.items() if v is not None})
    from exporter.export import export_onnx

    folder = heads_dir(database)
    head_path = folder / f"{field_name}.onnx"
    # The head goes live last: exported beside it, its report written, then renamed into place, so a kill at
    # any moment leaves either the old head with its report or the new head with its report, never a head
    # without one.
    partial = folder / f"{field_name}.onnx.partial"
    try:
        figures = export_onnx(final.module(), card, partial, verify_audio=[ds.X[:256]])
        report["export_check"] = figures
        report["seconds"] = round(time.monotonic() - t0, 2)
        from .report import write_report

        files = write_report(folder / f"{field_name}-report", report, confusion, ds.labels)
        os.replace(partial, head_path)
        fsync_dir(folder)
    finally:
        partial.unlink(missing_ok=True)
    return FieldResult(field_name, "trained", "", head_path, report, [head_path, *files])


def train(store: Store, cards: list[Card], policies: Mapping[str, FieldPolicy], database: Path,
          opts: TrainOptions | None = None, progress_cb=None,
          vocabulary: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> list[FieldResult]:
    """Train a head for every field in ``opts.fields`` the library has enough of the user's own values for."""
    opts = opts or TrainOptions()
    out = []
    for name in opts.fields:
        if name not in policies:
            out.append(FieldResult(name, "skipped", "not a configured field"))
            continue
        out.append(train_field(store, cards, name, policies[name], opts, database, progress_cb,
                               None if vocabulary is None else vocabulary.get(name, {})))
    return out
