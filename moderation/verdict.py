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
from functools import lru_cache
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


_TAGS = re.compile(r"<(/?)(reasoning|answer)>", re.IGNORECASE)
_ANSWER_BODY = re.compile(r"^(DISALLOW|ALLOW)\s*(?::(.*))?$", re.IGNORECASE | re.DOTALL)
_CATEGORY_SPLIT = re.compile(r"[,;]|\s+and\s+")


def normalize_category(raw: str) -> str:
    """Map a category as a model might write it ("Weapon components", "non-fiat") to an id form."""
    return "_".join(raw.strip().strip(".`'\"*").lower().replace("-", " ").split())


def render(decision: Decision, categories: Iterable[str] = (), reasoning: str = "") -> str:
    """Render a verdict in the output format. Raises ValueError on contradictory or tag-breaking input."""
    categories = tuple(categories)
    if decision not in (ALLOW, DISALLOW):
        raise ValueError(f"decision must be 'allow' or 'disallow', got {decision!r}")
    if decision == ALLOW and categories:
        raise ValueError("an ALLOW verdict cannot name categories")
    if decision == DISALLOW and not categories:
        raise ValueError("a DISALLOW verdict must name at least one category")
    if _TAGS.search(reasoning):
        raise ValueError("reasoning must not contain <reasoning> or <answer> tags")
    answer = "ALLOW" if decision == ALLOW else "DISALLOW: " + ", ".join(categories)
    body = f"{reasoning.strip()}\n" if reasoning.strip() else ""  # empty: exactly the answer fast mode forces
    return f"<reasoning>\n{body}</reasoning>\n<answer>\n{answer}\n</answer>"


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

    tags = [(m.start(), m.end(), m.group(1) == "/", m.group(2).lower()) for m in _TAGS.finditer(text)]
    reasoning_blocks = _blocks(tags, "reasoning")
    reasoning = text[reasoning_blocks[0][1] : reasoning_blocks[0][2]].strip() if reasoning_blocks else ""
    answer_opens = [tag for tag in tags if tag[3] == "answer" and not tag[2]]
    if not answer_opens:
        return Verdict(None, reasoning=reasoning, status=Status.MISSING_ANSWER)
    if len(answer_opens) > 1:
        return Verdict(None, reasoning=reasoning, status=Status.MULTIPLE_ANSWERS)
    answer_blocks = _blocks(tags, "answer")
    if not answer_blocks:
        return Verdict(None, reasoning=reasoning, status=Status.UNCLOSED_ANSWER)
    answer = answer_blocks[0]

    match = _ANSWER_BODY.match(text[answer[1] : answer[2]].strip())
    if match is None:
        return Verdict(None, reasoning=reasoning, status=Status.BAD_ANSWER)

    keyword, tail = match.group(1).lower(), match.group(2)
    names = _split_categories(tail)
    if keyword == ALLOW:
        if names:
            return Verdict(None, reasoning=reasoning, status=Status.ALLOW_WITH_CATEGORIES)
        return Verdict(ALLOW, (), reasoning, _layout_status(text, reasoning_blocks, answer))
    known = known_categories
    if known is not None and not isinstance(known, (set, frozenset)):
        known = set(known)
    categories = tuple(n for n in names if known is None or n in known)
    unknown = tuple(n for n in names if known is not None and n not in known)
    if unknown:
        status = Status.UNKNOWN_CATEGORY
    elif not categories:
        status = Status.DISALLOW_WITHOUT_CATEGORIES
    else:
        status = _layout_status(text, reasoning_blocks, answer)
    return Verdict(DISALLOW, categories, reasoning, status, unknown)


Block = tuple[int, int, int, int]  # outer start, inner start, inner end, outer end


def _blocks(tags: list[tuple[int, int, bool, str]], name: str) -> list[Block]:
    """Non-overlapping <name>...</name> spans, each from an opening tag to the first closing tag after it."""
    blocks, opened = [], None
    for start, end, closing, tag in tags:
        if tag != name:
            continue
        if opened is None and not closing:
            opened = (start, end)
        elif opened is not None and closing:
            blocks.append((opened[0], opened[1], start, end))
            opened = None
    return blocks


@lru_cache(maxsize=4096)  # a model repeats the same few answer tails: memoise their normalisation
def _split_categories(tail: str | None) -> tuple[str, ...]:
    if not tail:
        return ()
    names = (normalize_category(part) for part in _CATEGORY_SPLIT.split(tail))
    return tuple(dict.fromkeys(n for n in names if n))  # dedupe, keep order


def _layout_status(text: str, reasoning_blocks: list[Block], answer: Block) -> Status:
    """Check the parts around a valid answer: reasoning present, non-empty, first, and nothing outside the tags."""
    if len(reasoning_blocks) != 1:
        return Status.MISSING_REASONING
    reasoning = reasoning_blocks[0]
    if not text[reasoning[1] : reasoning[2]].strip():
        return Status.EMPTY_REASONING
    if answer[0] < reasoning[0]:
        return Status.WRONG_ORDER
    outside = text[: reasoning[0]] + text[reasoning[3] : answer[0]] + text[answer[3] :]
    if outside.strip():
        return Status.TEXT_OUTSIDE_TAGS
    return Status.OK
