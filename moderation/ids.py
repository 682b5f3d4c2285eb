"""Listing ids: a row without one is named by a hash of its text, so evals, `predict` and resume agree on it."""

from __future__ import annotations

import hashlib


def text_id(text: str) -> str:
    """`t` + the first 12 hex digits of the text's SHA-1: stable across files, line order and reruns."""
    return "t" + hashlib.sha1(text.encode()).hexdigest()[:12]
