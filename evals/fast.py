"""Fast mode behind the moderator interface the runner saves: one forward pass per listing (`Moderator.fast_scorer`),
read as a verdict by the same rule serving applies (inference.fast_answer.fast_verdict), so an eval of fast mode
measures exactly what `serve --mode fast` answers at that threshold."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from evals.baselines import ScoredModeration
from inference.fast_answer import Scores, fast_verdict
from inference.generate import Moderator
from moderation.verdict import ALLOW, DISALLOW, Verdict, render


@dataclass(frozen=True)
class FastModeration(ScoredModeration):
    """A fast-mode result: `score` is P(DISALLOW), `category_share` each category's share given DISALLOW."""

    category_share: dict[str, float] = field(default_factory=dict)


class FastModerator:
    """Scores a local model's listings in fast mode, `batch_size` listings per progress step."""

    def __init__(self, moderator: Moderator, threshold: float = 0.5, compile: bool = False):
        self.policy = moderator.policy
        self.batch_size = moderator.generation.batch_size
        self.threshold = threshold
        self.scorer = moderator.fast_scorer(compile)

    def moderate_batches(self, listings: Sequence[str]) -> Iterator[list[FastModeration]]:
        for start in range(0, len(listings), self.batch_size):
            yield [
                fast_moderation(scores, self.threshold)
                for scores in self.scorer.score(listings[start : start + self.batch_size])
            ]

    def moderate(self, listings: Sequence[str]) -> list[FastModeration]:
        return [result for batch in self.moderate_batches(listings) for result in batch]


def fast_moderation(scores: Scores, threshold: float) -> FastModeration:
    """One listing's fast-mode reading as the result evals save, at `threshold`: also how `evals recut` reads saved
    scores at another threshold without scoring again."""
    verdict = fast_verdict(scores, threshold)
    decision = DISALLOW if verdict.flagged else ALLOW
    named = tuple(c for c, hit in verdict.categories.items() if hit)
    # The completion is the answer fast mode reads: the empty-reasoning form the model was trained to write.
    return FastModeration(
        render(decision, named), Verdict(decision, named), scores.latency_s, scores.p_disallow, scores.category_share
    )
