"""Reasoning mode behind the moderator interface the runner saves: the model writes its reasoning and answer, and the
verdict is read after that reasoning at the threshold (inference.reasoned), the rule `serve --mode reasoning` applies;
`--threshold written` keeps the written answer instead (the model's argmax, with no threshold)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from evals.baselines import ScoredModeration
from evals.fast import FastModeration
from inference.fast_answer import Scores
from inference.generate import Moderation, Moderator
from inference.reasoned import reasoned_verdict, score_reasoned
from moderation.verdict import ALLOW, DISALLOW, Verdict


class ReasonedModerator:
    """Generates a local model's answers and reads each verdict after its reasoning, `batch_size` listings a step."""

    def __init__(self, moderator: Moderator, threshold: float):
        self.moderator = moderator
        self.policy = moderator.policy
        self.threshold = threshold
        self.scorer = moderator.fast_scorer()

    def moderate_batches(self, listings: Sequence[str]) -> Iterator[list[ScoredModeration]]:
        size = self.moderator.generation.batch_size
        for start in range(0, len(listings), size):
            batch = listings[start : start + size]
            moderations = self.moderator.moderate(batch)
            readings = score_reasoned(self.scorer, batch, moderations)
            yield [reasoned_moderation(m, r, self.threshold) for m, r in zip(moderations, readings, strict=True)]

    def moderate(self, listings: Sequence[str]) -> list[ScoredModeration]:
        return [result for batch in self.moderate_batches(listings) for result in batch]


def reasoned_moderation(written: Moderation, reading: Scores | None, threshold: float) -> ScoredModeration:
    """One result as evals save it: the written completion and reasoning, the verdict read at `threshold` (an
    unreadable answer stays unparsed, which metrics count as flagged)."""
    if reading is None:
        return ScoredModeration(written.completion, written.verdict, written.latency_s)
    verdict = reasoned_verdict(written.verdict, reading, threshold)
    decision = DISALLOW if verdict.flagged else ALLOW
    named = tuple(c for c, hit in verdict.categories.items() if hit)
    read = Verdict(decision, named, written.verdict.reasoning, written.verdict.status)
    latency = written.latency_s + reading.latency_s
    return FastModeration(written.completion, read, latency, reading.p_disallow, reading.category_share)
