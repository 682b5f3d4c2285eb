"""`data_gen more-eval`: more rows in a dataset's held-out wording, none of them already in it; and the nearness to
train that backs the claim, checked against a build with another seed."""

from __future__ import annotations

import random
import statistics

import pandas as pd
import pytest

from data_gen.__main__ import main
from data_gen.build import BuildConfig, build
from data_gen.dedup import nearest_similarity, shingles
from data_gen.more_eval import EVAL_FILE, MoreEvalConfig, more_eval
from moderation.errors import UserError

SMALL = {
    "seed_listings": 120,
    "disallowed_per_category": 12,
    "multi_label": 18,
    "hard_negatives_per_category": 6,
    "min_train_disallowed_per_category": 6,
}


def frame(folder, *splits) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(folder / f"{split}.parquet") for split in splits], ignore_index=True)


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("more")
    build(BuildConfig(out_dir=str(tmp), **SMALL))
    summary = more_eval(MoreEvalConfig(dataset=tmp / "default", per_label=20))
    return tmp, summary


def test_nearest_similarity_is_the_best_jaccard():
    rng = random.Random(0)
    words = ["red", "blue", "green", "card", "game", "key", "code", "page", "gift", "pack"]
    texts = [" ".join(rng.choices(words, k=rng.randint(2, 12))) for _ in range(30)]
    queries, references = texts[:10], texts[10:]

    def jaccard(a, b):
        a, b = shingles(a), shingles(b)
        return len(a & b) / len(a | b)

    expected = [max(jaccard(q, r) for r in references) for q in queries]
    assert nearest_similarity(queries, references) == pytest.approx(expected)
    assert list(nearest_similarity(queries, [])) == [0.0] * len(queries)


def test_rows_are_new_held_out_rows_sampled_per_label(extended):
    tmp, summary = extended
    rows = pd.read_parquet(summary["path"])
    assert summary["path"] == tmp / "default-more" / EVAL_FILE
    assert rows.label.value_counts().to_dict() == {"allow": 20, "disallow": 20} == summary["labels"]
    assert not set(rows.text) & set(frame(tmp / "default", "train", "dev", "test").text)
    assert set(rows.text) <= set(frame(tmp / "default-more", "dev", "test").text)
    assert rows.text.is_unique


def test_new_rows_are_as_far_from_train_as_dev_and_test_and_another_seed_is_not(extended):
    tmp, summary = extended
    train = frame(tmp / "default", "train").text.tolist()
    build(BuildConfig(out_dir=str(tmp), name="seed7", seed=7, **SMALL))
    other_seed = statistics.median(nearest_similarity(frame(tmp / "seed7", "dev", "test").text.tolist(), train))
    assert summary["nearest_train_median"] < other_seed
    assert summary["nearest_train_median"] < 2 * summary["dev_test_nearest_train_median"]


def test_refusals_are_one_line_and_write_nothing(tmp_path, extended, capsys):
    tmp, _ = extended
    with pytest.raises(SystemExit) as stopped:
        main(["more-eval", f"dataset={tmp_path / 'missing'}"])
    assert stopped.value.code != 0
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="overwrite"):
        more_eval(MoreEvalConfig(dataset=tmp / "default", name="default"))
    with pytest.raises(UserError, match="raise scale"):
        more_eval(MoreEvalConfig(dataset=tmp / "default", name="huge", per_label=100_000))
    with pytest.raises(UserError, match=r"exclude: .* not a more-eval set"):
        more_eval(MoreEvalConfig(dataset=tmp / "default", name="second", exclude=[tmp_path / "missing.parquet"]))
    assert not (tmp / "second").exists()  # refused before the rebuild


def test_a_second_set_shares_no_row_with_the_excluded_first(extended):
    tmp, summary = extended
    first = pd.read_parquet(summary["path"])
    second = more_eval(MoreEvalConfig(dataset=tmp / "default", name="second", per_label=10, exclude=[summary["path"]]))
    rows = pd.read_parquet(second["path"])
    assert len(rows) == 20 and not set(rows.text) & set(first.text)
