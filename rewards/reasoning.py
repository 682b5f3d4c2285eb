"""Reasoning reward: a reasoning of useful length, where padding does not count.

Length is counted in words (`\\w+` runs, Unicode-aware; a script without spaces counts a run as one word). Words
covered by a word n-gram that already occurred earlier in the reasoning (repetition) or that occurs in the listing
(copying) are padding: they do not count toward reaching the band, they do count toward overshooting it, and a padding
share above `max_padding_share` scales the score down linearly to 0 at all padding. So pasting the listing or saying
one thing ten times scores low, while quoting the listing as evidence inside real reasoning costs nothing.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from moderation.errors import UserError
from rewards.registry import Reward, parsed, register

_WORD = re.compile(r"\w+")
_ASCII_NON_WORD = bytes(c for c in range(128) if chr(c) not in string.ascii_letters + string.digits + "_")
# Lowercases ASCII letters and blanks every ASCII character `\w` does not match, so `split()` yields the `\w+` runs.
_ASCII_WORDS = bytes.maketrans(
    string.ascii_uppercase.encode() + _ASCII_NON_WORD, string.ascii_lowercase.encode() + b" " * len(_ASCII_NON_WORD)
)


def words(text: str) -> list[str]:
    """The lowercased `\\w+` runs of `text`. ASCII text (nearly all of it) takes a bytes translate, about 2x faster
    than the regex and the same words."""
    if text.isascii():
        return text.encode().translate(_ASCII_WORDS).decode().split()
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Iterator[tuple[str, ...]]:
    """The word n-grams of `tokens`, in order (none when there are fewer than n words)."""
    return zip(*[tokens[i:] for i in range(n)], strict=False)


@lru_cache(maxsize=4096)
def listing_ngrams(listing: str, n: int) -> frozenset[tuple[str, ...]]:
    """The listing's word n-grams, memoised: the completions of one GRPO group share one listing."""
    return frozenset(ngrams(words(listing), n))


def padding_words(tokens: list[str], listing_grams: frozenset[tuple[str, ...]], n: int, repeats: bool = True) -> int:
    """How many words lie in an n-gram of the listing or (with `repeats`) in an n-gram seen earlier in `tokens`."""
    distinct = set(ngrams(tokens, n))
    if listing_grams.isdisjoint(distinct) and (not repeats or len(distinct) == len(tokens) - n + 1):
        return 0  # the common case, decided in C
    seen: set[tuple[str, ...]] = set()
    padded = covered_until = 0
    for i, gram in enumerate(ngrams(tokens, n)):
        if gram in listing_grams or (repeats and gram in seen):
            padded += n if i >= covered_until else i + n - covered_until  # not max(): a builtin call per word is slow
            covered_until = i + n
        seen.add(gram)
    return padded


def copied_fraction(reasoning: str, listing: str, n: int = 3) -> float:
    """Share of the reasoning's words that lie in a word n-gram of the listing (0 for an empty reasoning)."""
    tokens = words(reasoning)
    if not tokens:
        return 0.0
    return padding_words(tokens, listing_ngrams(listing, n), n, repeats=False) / len(tokens)


@register
class ReasoningLength(Reward):
    """In [0, 1]: 1.0 for `min_words`..`max_words` words with at least `min_words` of them not padding.

    score = rise × fall × padding factor, where rise = min(1, own words / `min_words`), fall goes linearly from 1 at
    `max_words` total words to 0 at twice that, and the padding factor (see module doc) is 1 up to
    `max_padding_share`. Empty or missing reasoning scores 0.
    """

    name = "reasoning_length"
    columns = ("text",)

    def __init__(
        self, policy, *, min_words: int = 8, max_words: int = 60, ngram: int = 3, max_padding_share: float = 0.5
    ) -> None:
        super().__init__(policy)
        if not (1 <= min_words <= max_words and ngram >= 1 and 0 <= max_padding_share < 1):
            raise UserError(
                "reward 'reasoning_length': need 1 <= min_words <= max_words, ngram >= 1, 0 <= max_padding_share < 1"
            )
        self.min_words, self.max_words, self.ngram = min_words, max_words, ngram
        self.max_padding_share = max_padding_share

    def score(self, text: Any, listing: Any) -> float:
        tokens = words(parsed(text, self.known_categories).reasoning)
        if not tokens:
            return 0.0
        listing_grams = listing_ngrams(listing, self.ngram) if isinstance(listing, str) else frozenset()
        own = len(tokens) - padding_words(tokens, listing_grams, self.ngram)
        rise = min(1.0, own / self.min_words)
        fall = max(0.0, min(1.0, 2.0 - len(tokens) / self.max_words))
        kept = min(1.0, own / len(tokens) / (1.0 - self.max_padding_share))
        return rise * fall * kept
