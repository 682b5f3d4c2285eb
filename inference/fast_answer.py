"""What fast mode reads, for every engine: the forced empty-reasoning answer and the first tokens of each verdict word.

The assistant turn is forced to `<reasoning>\\n</reasoning>\\n<answer>\\n` and the next-token logits give P(ALLOW) vs
P(DISALLOW); after `DISALLOW:` they give each category's share. The transformers scorer (inference/fast_scoring.py)
and the CTranslate2 scorer (inference/ct2.py) read the same positions through these helpers, so they cannot drift
apart; `fast_verdict` turns the reading into a verdict for serve and evals alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from moderation.errors import UserError
from moderation.prompt import defang


def answer_prefix(reasoning: str = "") -> str:
    """The assistant turn up to the verdict word, after `reasoning` (none: fast mode's empty form), as
    moderation.verdict.render writes it: reasoning mode reads its verdict here after its own reasoning. The reasoning
    can echo listing text, so it is defanged like a listing: it never closes its block or becomes a control token."""
    reasoning = defang(reasoning).strip()
    body = f"{reasoning}\n" if reasoning else ""
    return f"<reasoning>\n{body}</reasoning>\n<answer>\n"


ANSWER_PREFIX = answer_prefix()
DISALLOW_WORD = "DISALLOW:"
CATEGORY_START = ANSWER_PREFIX + DISALLOW_WORD  # what follows it names the categories


def forced_answers(listings: Sequence[str], reasonings: Sequence[str] | None) -> list[str]:
    """Each listing's forced assistant text up to the verdict word: after its reasoning when given (reasoning mode's
    reading), else fast mode's empty form, shared by every listing so engines can encode it once."""
    if reasonings is None:
        return [ANSWER_PREFIX] * len(listings)
    if len(reasonings) != len(listings):
        raise ValueError(f"{len(listings)} listings but {len(reasonings)} reasonings")
    return [answer_prefix(reasoning) for reasoning in reasonings]


Encode = Callable[[str], list[int]]


def forced_answer_ids(listings: Sequence[str], reasonings: Sequence[str] | None, encode: Encode) -> list[list[int]]:
    """`forced_answers` as token ids, each distinct string encoded once (fast mode: one string for every listing), for
    engines that append them to already-tokenized prompts."""
    answers = forced_answers(listings, reasonings)
    encoded = {answer: encode(answer) for answer in set(answers)}
    return [encoded[answer] for answer in answers]


@dataclass(frozen=True)
class Scores:
    """One listing's fast-mode reading: P(DISALLOW) (renormalized over ALLOW/DISALLOW) and, given DISALLOW, each
    category's share (renormalized over the categories' first tokens)."""

    p_disallow: float
    category_share: dict[str, float]
    latency_s: float


def first_token(encode: Encode, context: str, word: str) -> int:
    """The token that starts `word` right after `context` (a one-line UserError when the tokenizer merges them)."""
    base, full = encode(context), encode(context + word)
    if full[: len(base)] != base or len(full) == len(base):
        raise UserError(f"fast mode: cannot find the first token of {word!r} in this tokenizer")
    return full[len(base)]


def answer_tokens(encode: Encode, category_ids: Sequence[str]) -> tuple[list[int], list[int]]:
    """([first token of ALLOW, of DISALLOW] after the forced answer, [first token of each category after DISALLOW:])."""
    decision = [first_token(encode, ANSWER_PREFIX, "ALLOW"), first_token(encode, ANSWER_PREFIX, "DISALLOW")]
    if decision[0] == decision[1]:
        raise UserError("fast mode: ALLOW and DISALLOW start with the same token in this tokenizer")
    categories = [first_token(encode, CATEGORY_START, " " + c) for c in category_ids]
    return decision, categories


@dataclass(frozen=True)
class FastVerdict:
    """Scores read as a verdict: what serve answers and evals count, so both apply the same rule."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]


def fast_verdict(scores: Scores, flag_threshold: float = 0.5, category_threshold: float = 0.3) -> FastVerdict:
    """Flag when P(DISALLOW) >= flag_threshold; a flagged listing names its top category and any other whose share is
    at least category_threshold (an allowed one names none); a category's score is P(DISALLOW) x its share."""
    flagged = scores.p_disallow >= flag_threshold
    share = scores.category_share
    top = max(share, key=share.__getitem__) if share else None
    categories = {c: flagged and (c == top or s >= category_threshold) for c, s in share.items()}
    return FastVerdict(flagged, categories, {c: scores.p_disallow * s for c, s in share.items()})
