"""Binary-classification figures from scores and labels (numpy only, pure functions).

Used by batch prediction (the summary line) and the evaluation report. Exact, not binned:
the training loop's eval AUC comes from 200-bin histograms (trainer.run.steps) because it must be
summed over replicas; here every score is at hand.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-7  # Keras' clipping of probabilities in binary cross-entropy


def check_labels(labels: np.ndarray) -> None:
    """The figures are for a binary model: labels must be 0 or 1."""
    bad = np.unique(labels[(labels != 0) & (labels != 1)])
    if bad.size:
        raise ValueError(
            f"labels {', '.join(map(str, bad[:5].tolist()))} are not 0 or 1: the model scores "
            "whether the second image follows the first (binary)."
        )


def log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(scores.astype(np.float64), EPSILON, 1 - EPSILON)
    y = labels.astype(np.float64)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def roc_curve(scores: np.ndarray, labels: np.ndarray):
    """(false positive rates, true positive rates, thresholds), from (0, 0) to (1, 1); one
    point per distinct score, so tied scores make one diagonal step (they count half)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.float64)
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(1 - y)[last_of_tie]
    pos, neg = y.sum(), (1 - y).sum()
    tpr = np.r_[0.0, tp / pos] if pos else np.full(tp.size + 1, np.nan)
    fpr = np.r_[0.0, fp / neg] if neg else np.full(fp.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids); NaN when one class is absent."""
    fpr, tpr, _ = roc_curve(scores, labels)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def pr_curve(scores: np.ndarray, labels: np.ndarray):
    """(recall, precision, thresholds) at each distinct score, highest threshold first."""
    _, tpr, thresholds = roc_curve(scores, labels)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    predicted = last_of_tie + 1.0
    tp = np.cumsum(y)[last_of_tie]
    return tpr[1:], tp / predicted, thresholds[1:]


def at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Confusion counts and figures when ``score >= threshold`` means "follows"."""
    predicted = scores >= threshold
    y = labels.astype(bool)
    tp = int(np.sum(predicted & y))
    fp = int(np.sum(predicted & ~y))
    fn = int(np.sum(~predicted & y))
    tn = int(np.sum(~predicted & ~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(threshold),
        "accuracy": (tp + tn) / max(len(y), 1),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The distinct score that, used as the threshold, gives the highest F1 (the lowest
    such score on ties)."""
    recall, precision, thresholds = pr_curve(scores, labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
    best = np.flatnonzero(f1 == f1.max())
    return float(thresholds[best[-1]])


def summary(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Loss, AUC and the figures at 0.5 and at the F1-maximizing threshold."""
    check_labels(labels)
    return {
        "pairs": int(labels.size),
        "positives": int(labels.sum()),
        "loss": log_loss(scores, labels),
        "auc": auc(scores, labels),
        "at_0.5": at_threshold(scores, labels, 0.5),
        "at_best_f1": at_threshold(scores, labels, best_f1_threshold(scores, labels)),
    }
