"""Reasoning mode's verdict at a threshold: P(DISALLOW) read right after the reasoning the model wrote.

A written answer is the model's argmax, so it carries whatever shift GRPO gave the verdict token (about one constant
in log-odds, docs/experiments.md) with nothing to undo it, while fast mode is cut at the threshold chosen on a
held-back slice. Reading the verdict token's probability after the model's own reasoning, with one more forward pass
over the cached prompt prefix, and cutting it at the same threshold puts both modes at one operating point. Serve and
evals both read reasoning mode through here, so what an eval counts is what `serve --mode reasoning` answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from inference.fast_answer import FastVerdict, Scores, fast_verdict
from inference.generate import Moderation
from moderation.verdict import DISALLOW, Verdict


class Scorer(Protocol):
    def score(self, listings: Sequence[str], reasonings: Sequence[str] | None = None) -> list[Scores]: ...


def score_reasoned(scorer: Scorer, listings: Sequence[str], moderations: Sequence[Moderation]) -> list[Scores | None]:
    """Each listing's scores after its own written reasoning; None where the completion had no readable verdict (those
    follow the parse-failure policy: an answer we cannot read is never scored into "allowed")."""
    parsed = [i for i, moderation in enumerate(moderations) if moderation.verdict.parsed]
    reasonings = [moderations[i].verdict.reasoning or "" for i in parsed]
    scores = scorer.score([listings[i] for i in parsed], reasonings) if parsed else []
    out: list[Scores | None] = [None] * len(listings)
    for index, reading in zip(parsed, scores, strict=True):
        out[index] = reading
    return out


def reasoned_verdict(
    written: Verdict, scores: Scores, flag_threshold: float = 0.5, category_threshold: float = 0.3
) -> FastVerdict:
    """Flag when P(DISALLOW) after the reasoning is at least flag_threshold; a flagged listing names the categories
    its answer named, or, where it answered ALLOW, those fast_verdict reads after `DISALLOW:`."""
    read = fast_verdict(scores, flag_threshold, category_threshold)
    if read.flagged and written.decision == DISALLOW and written.categories:
        named = {c: c in written.categories for c in read.categories}
        return FastVerdict(True, named, read.category_scores)
    return read
