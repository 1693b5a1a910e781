"""Per-label thresholds and ranking metrics, from held-out scores: pure numpy.

Two operating points per label:
- the equal-rate point, where the true-positive rate equals the true-negative rate (the threshold the
  seed work used for its per-tag decisions), reported for every label;
- the precision point: the lowest threshold at which the held-out precision of writing the label still
  meets a target. This is what the head uses by default: below it the head abstains, because a wrong
  genre in a user's files is worse than none. A label that never meets the target gets no threshold
  and is never written.
"""
from __future__ import annotations

import numpy as np


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds) at every distinct score, highest first."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order].astype(bool)
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = np.cumsum(~y)[distinct]
    p, n = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n], np.r_[0.0, tp / p], np.r_[np.inf, s[distinct]]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve; None when only one class is present."""
    if positive.all() or not positive.any():
        return None
    fpr, tpr, _ = roc_curve(scores, positive)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the precision-recall curve (step-wise, as average precision); None without positives."""
    if not positive.any():
        return None
    order = np.argsort(-scores, kind="stable")
    y = positive[order].astype(bool)
    hits = np.cumsum(y)
    precision = hits / np.arange(1, len(y) + 1)
    return float(precision[y].sum() / y.sum())


def equal_rate_threshold(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """The threshold where the true-positive rate is closest to the true-negative rate."""
    if positive.all() or not positive.any():
        return None
    fpr, tpr, thr = roc_curve(scores, positive)
    gap = np.abs(tpr - (1.0 - fpr))[1:]  # the first point (infinite threshold) is not a usable threshold
    return float(thr[1:][int(np.argmin(gap))])


def label_metrics(scores: np.ndarray, positive: np.ndarray) -> dict:
    """The per-label figures every training report gives: ROC-AUC, PR-AUC and the equal-rate threshold."""
    return {"roc_auc": roc_auc(scores, positive), "pr_auc": average_precision(scores, positive),
            "equal_rate_threshold": equal_rate_threshold(scores, positive)}


def precision_threshold(scores: np.ndarray, correct: np.ndarray, target: float, min_count: int = 3) -> float | None:
    """The lowest score t such that, among the rows with score >= t, the fraction ``correct`` reaches
    ``target`` (with at least ``min_count`` such rows); None when no t does."""
    if len(scores) == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], correct[order].astype(bool)
    precision = np.cumsum(y) / np.arange(1, len(y) + 1)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # cut only between distinct scores
    ok = [i for i in last if i + 1 >= min_count and precision[i] >= target]
    return float(s[max(ok)]) if ok else None


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram's points)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (confidence >= lo) & ((confidence < hi) | (hi == 1.0))
        if mask.any():
            out.append({"from": round(float(lo), 2), "to": round(float(hi), 2), "count": int(mask.sum()),
                        "confidence": float(confidence[mask].mean()), "accuracy": float(correct[mask].mean())})
    return out
