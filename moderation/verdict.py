"""Render and parse the moderator's output format: the one contract rewards, evals and serving share.

    <reasoning>
    One to a few sentences that cite the listing.
    </reasoning>
    <answer>
    DISALLOW: gambling, phishing
    </answer>

`parse` never raises. It extracts a decision whenever the answer is unambiguous and reports, through `status`, the
most serious way the text departs from the exact format, so a format reward and a parse-failure metric read the
same facts. Matching is anchored: the answer body must be exactly `ALLOW` or `DISALLOW[: categories]`, so
"DISALLOW" can never be read as "ALLOW" and prose around the keyword does not count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Decision = Literal["allow", "disallow"]
ALLOW: Decision = "allow"
DISALLOW: Decision = "disallow"


class Status(StrEnum):
    """What is wrong with a completion, most serious first (a completion reports only its worst problem)."""

    OK = "ok"
    EMPTY = "empty"
    MISSING_ANSWER = "missing_answer"
    UNCLOSED_ANSWER = "unclosed_answer"
    MULTIPLE_ANSWERS = "multiple_answers"
    BAD_ANSWER = "bad_answer"  # answer body is neither ALLOW nor DISALLOW[: ...]
    ALLOW_WITH_CATEGORIES = "allow_with_categories"
    DISALLOW_WITHOUT_CATEGORIES = "disallow_without_categories"
    UNKNOWN_CATEGORY = "unknown_category"
    MISSING_REASONING = "missing_reasoning"
    EMPTY_REASONING = "empty_reasoning"
    WRONG_ORDER = "wrong_order"  # answer before reasoning
    TEXT_OUTSIDE_TAGS = "text_outside_tags"


@dataclass(frozen=True)
class Verdict:
    """A parsed completion. `decision` is None when no unambiguous ALLOW/DISALLOW could be read."""

    decision: Decision | None
    categories: tuple[str, ...] = ()
    reasoning: str = ""
    status: Status = Status.OK
    unknown_categories: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when the completion follows the format exactly."""
        return self.status is Status.OK

    @property
    def parsed(self) -> bool:
        """True when a decision could be read (the complement of a parse failure)."""
        return self.decision is not None


_REASONING = re.compile(r"<reasoning>(.*?)</reasoning>", re.IGNORECASE | re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_BODY = re.compile(r"^(DISALLOW|ALLOW)\s*(?::(.*))?$", re.IGNORECASE | re.DOTALL)
_CATEGORY_SPLIT = re.compile(r"[,;]|\s+and\s+")
_TAG = re.compile(r"</?(?:reasoning|answer)>", re.IGNORECASE)


def normalize_category(raw: str) -> str:
    """Map a category as a model might write it ("Weapon components", "non-fiat") to an id form."""
    return re.sub(r"[\s\-]+", "_", raw.strip().strip(".`'\"*").lower())


def render(decision: Decision, categories: Iterable[str] = (), reasoning: str = "") -> str:
    """Render a verdict in the output format. Raises ValueError on contradictory or tag-breaking input."""
    categories = tuple(categories)
    if decision not in (ALLOW, DISALLOW):
        raise ValueError(f"decision must be 'allow' or 'disallow', got {decision!r}")
    if decision == ALLOW and categories:
        raise ValueError("an ALLOW verdict cannot name categories")
    if decision == DISALLOW and not categories:
        raise ValueError("a DISALLOW verdict must name at least one category")
    if _TAG.search(reasoning):
        raise ValueError("reasoning must not contain <reasoning> or <answer> tags")
    answer = "ALLOW" if decision == ALLOW else "DISALLOW: " + ", ".join(categories)
    return f"<reasoning>\n{reasoning.strip()}\n</reasoning>\n<answer>\n{answer}\n</answer>"


def parse(text: object, known_categories: Iterable[str] | None = None) -> Verdict:
    """Parse a completion; never raises.

    Args:
        text: the completion (anything; non-strings are a parse failure).
        known_categories: the policy's category ids. Names outside it go to `unknown_categories` and set
            status UNKNOWN_CATEGORY; None accepts any name.

    >>> parse("<reasoning>x</reasoning><answer>DISALLOW: gambling</answer>").categories
    ('gambling',)
    """
    if not isinstance(text, str) or not text.strip():
        return Verdict(None, status=Status.EMPTY)

    answers = _ANSWER.findall(text)
    if not answers:
        status = Status.UNCLOSED_ANSWER if _ANSWER_OPEN.search(text) else Status.MISSING_ANSWER
        return Verdict(None, reasoning=_first_reasoning(text), status=status)
    if len(answers) > 1 or len(_ANSWER_OPEN.findall(text)) > 1:
        return Verdict(None, reasoning=_first_reasoning(text), status=Status.MULTIPLE_ANSWERS)

    match = _ANSWER_BODY.match(answers[0].strip())
    reasoning = _first_reasoning(text)
    if match is None:
        return Verdict(None, reasoning=reasoning, status=Status.BAD_ANSWER)

    keyword, tail = match.group(1).lower(), match.group(2)
    names = _split_categories(tail)
    if keyword == ALLOW:
        if names:
            return Verdict(None, reasoning=reasoning, status=Status.ALLOW_WITH_CATEGORIES)
        return Verdict(ALLOW, (), reasoning, _layout_status(text))
    known = None if known_categories is None else set(known_categories)
    categories = tuple(n for n in names if known is None or n in known)
    unknown = tuple(n for n in names if known is not None and n not in known)
    if unknown:
        status = Status.UNKNOWN_CATEGORY
    elif not categories:
        status = Status.DISALLOW_WITHOUT_CATEGORIES
    else:
        status = _layout_status(text)
    return Verdict(DISALLOW, categories, reasoning, status, unknown)


def _first_reasoning(text: str) -> str:
    match = _REASONING.search(text)
    return match.group(1).strip() if match else ""


def _split_categories(tail: str | None) -> tuple[str, ...]:
    if not tail:
        return ()
    names = (normalize_category(part) for part in _CATEGORY_SPLIT.split(tail))
    return tuple(dict.fromkeys(n for n in names if n))  # dedupe, keep order


def _layout_status(text: str) -> Status:
    """Check the parts around a valid answer: reasoning present, non-empty, first, and nothing outside the tags."""
    reasoning_blocks = list(_REASONING.finditer(text))
    if len(reasoning_blocks) != 1:
        return Status.MISSING_REASONING
    reasoning = reasoning_blocks[0]
    if not reasoning.group(1).strip():
        return Status.EMPTY_REASONING
    answer = _ANSWER.search(text)
    assert answer is not None  # parse() only calls this after finding exactly one answer
    if answer.start() < reasoning.start():
        return Status.WRONG_ORDER
    outside = text[: reasoning.start()] + text[reasoning.end() : answer.start()] + text[answer.end() :]
    if outside.strip():
        return Status.TEXT_OUTSIDE_TAGS
    return Status.OK
