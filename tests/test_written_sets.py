"""The hand-written evaluation sets read as they are: every row allowed, stable ids, nothing skipped."""

from __future__ import annotations

import json

from evals.data import load_dataset
from moderation.ids import text_id
from moderation.paths import CONFIGS
from moderation.verdict import ALLOW

ORDINARY = CONFIGS / "eval" / "ordinary_products.jsonl"


def test_ordinary_products_load_as_allowed_rows_with_stable_ids():
    dataset = load_dataset(ORDINARY, strict=True)
    assert len(dataset.items) == 120 and dataset.n_skipped == 0
    assert {item.label for item in dataset.items} == {ALLOW}
    assert all(item.id == text_id(item.text) for item in dataset.items)  # an edited text gets a new id
    languages = {json.loads(line)["language"] for line in ORDINARY.read_text(encoding="utf-8").splitlines()}
    assert {"en", "de", "es", "fr"} <= languages
