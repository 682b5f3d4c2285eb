"""How good P(disallow) is as a score, beyond the verdict at one threshold: what fast mode's flag threshold is tuned on.

Ranking (ROC-AUC, PR-AUC with disallow positive), calibration (Brier score, expected calibration error over 10
equal-width bins, the reliability diagram), accuracy at 0.5, and the operating point for a false-positive budget: the
lowest threshold (flag when P >= t) whose FPR stays within `target_fpr`, i.e. the highest recall the budget allows.
Recall at a few fixed budgets and the ROC curve itself put models with different thresholds side by side at equal
false alarms (compare's table and roc.png): a model that flags less at 0.5 is not thereby better on FPR.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evals.files import RELIABILITY
from moderation.plotting import pyplot

BINS = 10
FPR_BUDGETS = (0.01, 0.02, 0.05, 0.1)  # recall is reported at each: `tpr_at_fpr`


def score_metrics(truth: Sequence[bool], scores: Sequence[float], target_fpr: float = 0.05) -> dict:
    """metrics.json's `scores` block for gold labels (True = disallowed) and P(disallow); both labels must occur."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

    y, p = np.asarray(truth, dtype=bool), np.asarray(scores, dtype=float)
    if y.all() or not y.any():
        raise ValueError("score metrics need both allowed and disallowed items")
    reliability = reliability_bins(y, p)
    fpr, tpr, _ = roc_curve(y, p)  # fpr[0] is 0, so every budget has a point
    return {
        "n": len(y),
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "ece": float(sum(b["n"] * abs(b["mean_score"] - b["positive_rate"]) for b in reliability) / len(y)),
        "accuracy_at_0.5": float(np.mean((p >= 0.5) == y)),
        **operating_point(y, p, target_fpr),
        "tpr_at_fpr": {f"{b:g}": float(tpr[fpr <= b].max()) for b in FPR_BUDGETS},
        "roc": [[round(float(f), 4), round(float(t), 4)] for f, t in zip(fpr, tpr, strict=True)],
        "reliability": reliability,
    }


def reliability_bins(y: np.ndarray, p: np.ndarray) -> list[dict]:
    """Per non-empty bin of P (10 equal-width, [0, 0.1) ... [0.9, 1.0]): count, mean P and the disallowed share."""
    index = np.minimum((p * BINS).astype(int), BINS - 1)
    return [
        {
            "low": b / BINS,
            "high": (b + 1) / BINS,
            "n": int((index == b).sum()),
            "mean_score": float(p[index == b].mean()),
            "positive_rate": float(y[index == b].mean()),
        }
        for b in range(BINS)
        if (index == b).any()
    ]


def operating_point(y: np.ndarray, p: np.ndarray, target_fpr: float) -> dict:
    """The lowest threshold t with FPR(flag when P >= t) <= target_fpr, as `threshold_at_fpr` {"0.05": t} (what
    serve reads for its default fast-mode threshold), and the FPR/TPR it achieves as `at_target_fpr`. Only observed
    scores are candidates; when even the highest one breaks the budget, t is None (flag nothing: FPR 0, TPR 0)."""
    threshold, fpr, tpr = None, 0.0, 0.0
    for t in np.unique(p)[::-1]:  # highest first: FPR only grows as t falls
        flagged = p >= t
        if flagged[~y].mean() > target_fpr:
            break
        threshold, fpr, tpr = float(t), float(flagged[~y].mean()), float(flagged[y].mean())
    return {
        "threshold_at_fpr": {f"{target_fpr:g}": threshold},
        "at_target_fpr": {"target_fpr": target_fpr, "fpr": fpr, "tpr": tpr},
    }


def write_reliability(metrics: dict, out: Path) -> None:
    """The run's reliability diagram in `out`, when it has a `scores` block: none without P(disallow), or when the data
    has one label (real pages, all allowed) and there is nothing to calibrate against."""
    if "scores" in metrics:
        plot_reliability(metrics["scores"], out / RELIABILITY, metrics["label"])


def plot_reliability(scores: dict, path: Path, title: str = "") -> None:
    """The reliability diagram: mean P vs the disallowed share per bin (bar width ~ count), with the diagonal."""
    plt = pyplot()

    bins = scores["reliability"]
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    ax.bar(centres, [b["positive_rate"] for b in bins], width=1 / BINS * 0.9, alpha=0.6, label="disallowed share")
    ax.plot([b["mean_score"] for b in bins], [b["positive_rate"] for b in bins], marker="o", label="mean P per bin")
    for x, b in zip(centres, bins, strict=True):
        ax.text(x, 0.01, str(b["n"]), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("P(disallow)")
    ax.set_ylabel("share of disallowed items")
    ax.set_title(f"{title} reliability: ECE {scores['ece']:.3f}, ROC-AUC {scores['roc_auc']:.3f}".strip(), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


ROC_MAX_FPR = 0.2  # roc.png shows the low-FPR region, where a moderator is operated


def plot_roc(runs: Sequence[dict], path: Path) -> bool:
    """ROC curves of the runs whose `scores` carry one, each with its verdicts' own (FPR, recall) as a dot: whether
    a model is better at every false-alarm rate, or only flags less. False when no run has a curve (nothing drawn)."""
    curves = [m for m in runs if "roc" in m.get("scores", {})]
    if not curves:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.4, 4.4))
    for m in curves:
        fpr, tpr = zip(*m["scores"]["roc"], strict=True)
        (line,) = ax.plot(fpr, tpr, label=f"{m['label']} (AUC {m['scores']['roc_auc']:.3f})")
        ax.plot([m["fpr"]], [m["recall"]], marker="o", color=line.get_color())
    ax.set_xlim(0, ROC_MAX_FPR)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"false-positive rate (0 to {ROC_MAX_FPR:g})")
    ax.set_ylabel("recall (true-positive rate)")
    ax.set_title("ROC, low-FPR region; dots: each model's verdicts", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
