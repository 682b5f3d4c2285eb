"""The external false-positive set: real package pages, all allowed, readable by the evaluator as they are."""

from __future__ import annotations

import subprocess
import sys

from data_gen.package_pages import MAX_CHARS, MIN_CHARS, OWN_DISTRIBUTION, package_pages
from evals.data import load_dataset
from moderation.verdict import ALLOW


def test_pages_are_allowed_real_descriptions_without_our_own():
    frame = package_pages()
    assert len(frame) >= 20  # the test environment alone installs dozens of documented packages
    assert set(frame.label) == {ALLOW}
    assert frame.id.is_unique
    assert frame.text.str.len().between(MIN_CHARS, MAX_CHARS).all()
    names = {g.split("==")[0] for g in frame.generator}
    assert OWN_DISTRIBUTION not in names and "pydantic" in names


def test_cli_writes_a_file_the_evaluator_reads(tmp_path):
    out = tmp_path / "external" / "pages.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "data_gen.package_pages", "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    dataset = load_dataset(out)
    assert dataset.n_skipped == 0 and len(dataset.items) >= 20
    assert all(item.label == ALLOW and not item.categories for item in dataset.items)
