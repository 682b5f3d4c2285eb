"""Grounded reasoning: pays a reasoning that cites the listing's own content words and agrees with its answer.

`reasoning_length` pays length without boilerplate or copying, but "The listing is fine." or a reasoning that calls
the listing a violation above an ALLOW still scored full marks. This reward is the evidence test a trust-and-safety
reviewer applies to an explanation shown to a seller:

- grounded: it names at least `min_cited` distinct content words of the listing (function words and meta words such as
  "listing", "product", "policy" do not count), so boilerplate scores 0;
- not a copy: above `max_copy_share` of its words inside listing trigrams, the score falls linearly to 0 (pasting
  the listing is not reasoning);
- consistent: an ALLOW whose reasoning says the listing violates, or a DISALLOW whose reasoning calls it harmless (or
  says it does not violate), scores 0. A cue counts as negated when one of the three words before it is a negation.

Content words are lowercased `\\w+` runs of 3+ characters (any run of a non-Latin script counts), not digits.
"""

from __future__ import annotations

from typing import Any

from moderation.errors import UserError
from moderation.verdict import ALLOW, DISALLOW
from rewards.reasoning import copied_fraction, words
from rewards.registry import Reward, parsed, register


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


NOT_CONTENT = _wordset(
    """
    the and for with that this these those from into onto over under about above below are was were been
    being has have had does did doing will would could should can may might must shall its it's their
    them they you your our his her she him not nor but yet any all each every some such than then there
    here what which who whom whose when where why how also just only very more most much many other
    others own same too out off again once both few further listing listings product products item items
    seller sellers buyer buyers page offer offers offered offering sell sells sold selling policy
    policies category categories content ordinary digital something nothing thing things one two three
    because while since though although without within via per
    """
)
NEGATIONS = _wordset("not no never without nothing none neither nor isnt doesnt dont arent wasnt cannot")
VIOLATION_CUES = _wordset(
    """
    violates violate violation violating disallowed disallows prohibited banned forbidden illegal
    unlawful
    """
)
BENIGN_CUES = _wordset("harmless fine benign legitimate acceptable allowed permitted innocuous unproblematic")


def content_words(text: str) -> set[str]:
    """The distinct words of `text` that can carry evidence (see the module doc)."""
    return {w for w in words(text) if w not in NOT_CONTENT and not w.isdigit() and (len(w) >= 3 or not w.isascii())}


def stance_cues(reasoning: str) -> tuple[bool, bool]:
    """(says it violates, says it is harmless): cue words, with a negated violation cue counting as harmless."""
    tokens = words(reasoning.replace("n't", "nt").replace("n’t", "nt"))
    violating = harmless = False
    for i, word in enumerate(tokens):
        negated = not NEGATIONS.isdisjoint(tokens[max(0, i - 3) : i])
        if word in VIOLATION_CUES:
            harmless |= negated
            violating |= not negated
        elif word in BENIGN_CUES and not negated:
            harmless = True
    return violating, harmless


def contradicts(decision: str | None, reasoning: str) -> bool:
    """True when the reasoning argues for the other verdict than the answer gives."""
    violating, harmless = stance_cues(reasoning)
    return (decision == ALLOW and violating) or (decision == DISALLOW and harmless)


@register
class ReasoningGrounded(Reward):
    """In [0, 1]: min(1, cited listing words / `min_cited`) × copy factor, or 0 when the reasoning contradicts the
    answer or is empty. See the module doc."""

    name = "reasoning_grounded"
    columns = ("text",)

    def __init__(self, policy, *, min_cited: int = 3, max_copy_share: float = 0.5) -> None:
        super().__init__(policy)
        if min_cited < 1 or not 0 <= max_copy_share < 1:
            raise UserError("reward 'reasoning_grounded': need min_cited >= 1 and 0 <= max_copy_share < 1")
        self.min_cited, self.max_copy_share = min_cited, max_copy_share

    def score(self, text: Any, listing: Any) -> float:
        verdict = parsed(text, self.known_categories)
        reasoning = verdict.reasoning or ""
        if not reasoning.strip() or not isinstance(listing, str) or contradicts(verdict.decision, reasoning):
            return 0.0
        cited = len(content_words(reasoning) & content_words(listing))
        copied = copied_fraction(reasoning, listing)
        copy_factor = min(1.0, (1.0 - copied) / (1.0 - self.max_copy_share))
        return min(1.0, cited / self.min_cited) * copy_factor
