"""Format rewards: how well a completion follows the `<reasoning>…</reasoning><answer>…</answer>` contract.

All three read `moderation.verdict.parse`, so the format reward and the eval's parse-failure metric cannot drift. They
judge structure only: a category name outside the policy is the categories reward's business, not a format error.

- `format_strict`: 1 for exactly the format (status ok), else 0.
- `format_soft`: 1 when a reasoning block is followed by an answer block with a readable verdict, text around them
  tolerated, else 0.
- `format_partial`: dense shaping for a model that starts at zero compliance: credit per tag present exactly once, for
  the order, for a readable answer and for the exact format, minus a penalty for text after `</answer>`.
"""

from __future__ import annotations

from typing import Any

from moderation.errors import UserError
from moderation.verdict import Status, Verdict
from rewards.registry import Reward, parsed, register

_SOFT_OK = frozenset({Status.OK, Status.TEXT_OUTSIDE_TAGS})
_TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")


class _FormatReward(Reward):
    def structure(self, text: Any) -> Verdict:
        """Parse against the policy (the cached parse the other rewards share); re-parse without it only when an
        unknown category hides the layout status, so a made-up category is not a format error."""
        verdict = parsed(text, self.known_categories)
        return parsed(text, None) if verdict.status is Status.UNKNOWN_CATEGORY else verdict


@register
class FormatStrict(_FormatReward):
    """1.0 when the completion is exactly reasoning then answer with nothing outside the tags, else 0.0."""

    name = "format_strict"

    def score(self, text: Any) -> float:
        return 1.0 if self.structure(text).ok else 0.0


@register
class FormatSoft(_FormatReward):
    """1.0 when a non-empty reasoning block precedes an answer with a readable verdict (stray text allowed), else 0."""

    name = "format_soft"

    def score(self, text: Any) -> float:
        return 1.0 if self.structure(text).status in _SOFT_OK else 0.0


@register
class FormatPartial(_FormatReward):
    """Shaping reward in [-trailing_cap, 1]: partial credit a model near zero compliance can climb.

    `tag_credit` for each of the four tags present exactly once (a repeated tag earns nothing, so tag spam does not
    pay), `order_credit` when `</reasoning>` comes before `<answer>`, `answer_credit` when the answer holds a readable
    ALLOW/DISALLOW verdict, `exact_credit` for the exact format; minus `trailing_penalty` per character after the last
    `</answer>`, capped at `trailing_cap` (rambling after the answer wastes generation budget).
    """

    name = "format_partial"

    def __init__(
        self,
        policy,
        *,
        tag_credit: float = 0.1,
        order_credit: float = 0.1,
        answer_credit: float = 0.2,
        exact_credit: float = 0.3,
        trailing_penalty: float = 0.002,
        trailing_cap: float = 0.3,
    ) -> None:
        super().__init__(policy)
        credits = dict(tag_credit=tag_credit, order_credit=order_credit, answer_credit=answer_credit)
        credits |= dict(exact_credit=exact_credit, trailing_penalty=trailing_penalty, trailing_cap=trailing_cap)
        negative = [k for k, v in credits.items() if not v >= 0]
        if negative:
            raise UserError(f"reward 'format_partial': {', '.join(negative)} must be >= 0")
        self.tag_credit, self.order_credit, self.answer_credit = tag_credit, order_credit, answer_credit
        self.exact_credit, self.trailing_penalty, self.trailing_cap = exact_credit, trailing_penalty, trailing_cap

    def score(self, text: Any) -> float:
        if not isinstance(text, str):
            return 0.0
        lower = text.lower()
        counts = list(map(lower.count, _TAGS))
        score = self.tag_credit * counts.count(1)
        close_reasoning, open_answer = lower.find("</reasoning>"), lower.find("<answer>")
        if counts[1] == 1 and counts[2] == 1 and close_reasoning < open_answer:
            score += self.order_credit
        verdict = self.structure(text)
        if verdict.parsed:
            score += self.answer_credit
        if verdict.ok:
            score += self.exact_credit
        end = lower.rfind("</answer>")
        if end >= 0:
            trailing = len(lower[end + len("</answer>") :].strip())
            score -= min(self.trailing_cap, self.trailing_penalty * trailing)
        return score
