"""Answer rewards: is the verdict right (`verdict`), and are the named categories right (`categories`)?

Both read `moderation.verdict.parse` with the policy's category ids, exactly as the evals do.
"""

from __future__ import annotations

from typing import Any

from moderation.errors import UserError
from moderation.verdict import ALLOW, DISALLOW
from rewards.registry import Reward, parsed, register

_LABELS = (ALLOW, DISALLOW)


def _check_label(reward: str, label: Any) -> None:
    if label not in _LABELS:
        raise UserError(f"reward {reward!r}: dataset label must be 'allow' or 'disallow', got {label!r}")


@register
class VerdictReward(Reward):
    """Right decision → `correct`; a missed violation and a false alarm cost separately (a miss usually more).

    A completion with no readable decision gets `unparseable`, which defaults to, and may not exceed, the lowest of the
    two wrong-answer scores: not answering must never beat answering wrongly.
    """

    name = "verdict"
    columns = ("label",)

    def __init__(
        self,
        policy,
        *,
        correct: float = 1.0,
        missed_violation: float = -1.0,
        false_alarm: float = -0.5,
        unparseable: float | None = None,
    ) -> None:
        super().__init__(policy)
        lowest_wrong = min(missed_violation, false_alarm)
        unparseable = lowest_wrong if unparseable is None else unparseable
        if not correct > max(missed_violation, false_alarm):
            raise UserError("reward 'verdict': correct must be greater than missed_violation and false_alarm")
        if unparseable > lowest_wrong:
            raise UserError("reward 'verdict': unparseable must not exceed missed_violation or false_alarm")
        self.correct, self.missed_violation, self.false_alarm = correct, missed_violation, false_alarm
        self.unparseable = unparseable

    def score(self, text: Any, label: str) -> float:
        _check_label(self.name, label)
        decision = parsed(text, self.known_categories).decision
        if decision is None:
            return self.unparseable
        if decision == label:
            return self.correct
        return self.missed_violation if label == DISALLOW else self.false_alarm


@register
class CategoriesReward(Reward):
    """Overlap of predicted and gold categories on disallowed rows; None (not applicable) on allowed rows.

    score = overlap (`metric`: "f1" or "jaccard") − `extra_penalty` × predicted names not in the gold set −
    `unknown_penalty` × names outside the policy, floored at `floor`. Naming every category to farm recall therefore
    scores below naming the right one, and below a single honest guess. A DISALLOW with no readable answer scores
    `floor`; an ALLOW scores 0 (the verdict reward charges for the miss).
    """

    name = "categories"
    columns = ("label", "categories")

    def __init__(
        self,
        policy,
        *,
        metric: str = "f1",
        extra_penalty: float = 0.1,
        unknown_penalty: float = 0.25,
        floor: float = -1.0,
    ) -> None:
        super().__init__(policy)
        if metric not in ("f1", "jaccard"):
            raise UserError(f"reward 'categories': metric must be 'f1' or 'jaccard', got {metric!r}")
        if not (extra_penalty >= 0 and unknown_penalty >= 0 and floor <= 0):
            raise UserError("reward 'categories': penalties must be >= 0 and floor <= 0")
        self.metric, self.floor = metric, floor
        self.extra_penalty, self.unknown_penalty = extra_penalty, unknown_penalty

    def score(self, text: Any, label: str, gold: Any) -> float | None:
        _check_label(self.name, label)
        if label == ALLOW:
            return None
        gold_set = frozenset(() if gold is None else gold)
        if not gold_set or not gold_set <= self.known_categories:
            raise UserError(
                f"reward 'categories': a disallowed row needs gold categories from the policy, got {sorted(gold_set)}"
            )
        verdict = parsed(text, self.known_categories)
        if verdict.decision is None:
            return self.floor
        predicted = set(verdict.categories) | set(verdict.unknown_categories)
        hits = len(predicted & gold_set)
        if self.metric == "f1":
            overlap = 2 * hits / (len(predicted) + len(gold_set))
        else:
            overlap = hits / len(predicted | gold_set)
        extra = len(predicted) - hits
        penalty = self.extra_penalty * extra + self.unknown_penalty * len(verdict.unknown_categories)
        return max(self.floor, overlap - penalty)
