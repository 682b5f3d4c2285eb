"""The hand-written evaluation sets read as they are: one label each, stable ids, nothing skipped."""

from __future__ import annotations

import json

import pytest

from evals.data import load_dataset
from moderation.ids import text_id
from moderation.paths import CONFIGS
from moderation.policy import load_policy
from moderation.verdict import ALLOW, DISALLOW

ORDINARY = CONFIGS / "eval" / "ordinary_products.jsonl"
VIOLATIONS = CONFIGS / "eval" / "written_violations.jsonl"
MIXED = CONFIGS / "eval" / "written_mixed.jsonl"
DIGITAL = CONFIGS / "eval" / "written_digital.jsonl"
SHORT = CONFIGS / "eval" / "written_short.jsonl"


def test_ordinary_products_load_as_allowed_rows_with_stable_ids():
    dataset = load_dataset(ORDINARY, strict=True)
    assert len(dataset.items) == 120 and dataset.n_skipped == 0
    assert {item.label for item in dataset.items} == {ALLOW}
    assert all(item.id == text_id(item.text) for item in dataset.items)  # an edited text gets a new id
    languages = {json.loads(line)["language"] for line in ORDINARY.read_text(encoding="utf-8").splitlines()}
    assert {"en", "de", "es", "fr"} <= languages


def test_written_violations_load_as_disallowed_rows_of_every_category():
    dataset = load_dataset(VIOLATIONS, strict=True)
    assert len(dataset.items) == 90 and dataset.n_skipped == 0
    assert {item.label for item in dataset.items} == {DISALLOW}
    assert all(item.id == text_id(item.text) for item in dataset.items)
    named = {category for item in dataset.items for category in item.categories}
    assert named == set(load_policy("marketplace").category_ids)


@pytest.mark.parametrize(
    ("path", "rows", "allowed"),
    [(MIXED, 180, 100), (DIGITAL, 180, 100), (SHORT, 160, 80)],
    ids=["mixed", "digital", "short"],
)
def test_the_mixed_sets_hold_both_labels_with_consistent_categories(path, rows, allowed):
    dataset = load_dataset(path, strict=True)
    assert len(dataset.items) == rows and dataset.n_skipped == 0
    assert sum(item.label == ALLOW for item in dataset.items) == allowed
    assert all((item.label == ALLOW) == (not item.categories) for item in dataset.items)
    assert all(item.id == text_id(item.text) for item in dataset.items)
