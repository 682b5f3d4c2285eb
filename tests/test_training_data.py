"""What the trainer is fed: the held-back slice, the SFT epoch and its fast-form share, the GRPO prompt filter."""

from types import SimpleNamespace

import pandas as pd
import pytest

from inference.fast_answer import ANSWER_PREFIX, CATEGORY_START, Scores
from moderation.errors import UserError
from moderation.verdict import render
from tests.test_train import RECIPE
from training.data import HOLDOUT, hold_back, load_rows, start_answers
from training.prompt_filter import (
    even_verdicts,
    expected_disagreement,
    group_rewards,
    likeliest_to_disagree,
    teaching_prompts,
)
from training.recipe import load_recipe
from training.sft import oversampled, sft_examples, sft_steps


def rows_with_completions(n: int) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": f"listing {i}"}],
            "completion": [{"role": "assistant", "content": render("allow", (), f"Why {i}.")}],
            "label": "allow",
            "categories": [],
        }
        for i in range(n)
    ]


def test_a_fast_share_of_sft_targets_is_exactly_the_answer_fast_mode_forces():
    rows = rows_with_completions(10)
    examples = sft_examples(rows, 0.3, seed=1)
    fast = [e for e in examples if e["completion"][0]["content"].startswith(ANSWER_PREFIX)]
    assert len(fast) == 3 and all(e["completion"][0]["content"] == ANSWER_PREFIX + "ALLOW\n</answer>" for e in fast)
    assert [e["prompt"] for e in examples] == [r["prompt"] for r in rows]
    assert examples == sft_examples(rows, 0.3, seed=1) and sft_examples(rows, 0.0, seed=1)[0] == {
        "prompt": rows[0]["prompt"],
        "completion": rows[0]["completion"],
    }


def test_oversample_repeats_only_the_named_sources_in_place():
    rows = [{"id": i, "source": source} for i, source in enumerate(["seed", "hard_negative", None, "synthetic"])]
    ids = [row["id"] for row in oversampled(rows, {"hard_negative": 3, "synthetic": 2})]
    assert ids == [0, 1, 1, 1, 2, 3, 3] and oversampled(rows, {}) == rows
    with pytest.raises(UserError, match="no train rows from source hard_negatives"):
        oversampled(rows, {"hard_negatives": 2})


def test_sft_runs_epochs_unless_max_steps_is_set(tiny_recipe, tmp_path):
    recipe = load_recipe(RECIPE, tiny_recipe(tmp_path, **{"sft.max_steps": "null", "sft.batch_size": 4}))
    assert sft_steps(recipe, 10) == 3
    assert sft_steps(recipe.model_copy(update={"sft": recipe.sft.model_copy(update={"epochs": 2.0})}), 10) == 5
    assert sft_steps(load_recipe(RECIPE, tiny_recipe(tmp_path, **{"sft.max_steps": 7})), 10) == 7


def test_the_holdout_is_saved_and_never_trained_on(tiny_recipe, tiny_dataset_dir, tmp_path):
    recipe = load_recipe(RECIPE, tiny_recipe(tmp_path, holdout=3))
    recipe.run_dir.mkdir(parents=True)
    rows = load_rows(tiny_dataset_dir)
    kept = hold_back(rows, recipe)
    held = pd.read_parquet(recipe.run_dir / HOLDOUT)
    assert len(held) == 3 and len(kept) == len(rows) - 3
    assert set(held["text"]).isdisjoint(r["text"] for r in kept)
    assert set(held["text"]) | {r["text"] for r in kept} == {r["text"] for r in rows}
    again = hold_back(rows, recipe)
    assert [r["text"] for r in again] == [r["text"] for r in kept], "seeded: a resume holds back the same rows"


def test_a_validation_slice_is_the_holdout_and_every_train_row_trains(tiny_recipe, tiny_dataset_dir, tmp_path):
    """A dataset built with a validation slice (its own wording): choices are made there, not on train rows."""
    import shutil

    dataset = tmp_path / "data"
    shutil.copytree(tiny_dataset_dir, dataset)
    validation = pd.read_parquet(dataset / "train.parquet").head(3).assign(text=lambda f: "unseen wording " + f.text)
    validation.to_parquet(dataset / "validation.parquet")
    recipe = load_recipe(RECIPE, tiny_recipe(tmp_path, holdout=2, dataset=str(dataset)))
    recipe.run_dir.mkdir(parents=True)
    rows = load_rows(dataset)
    kept = hold_back(rows, recipe)
    assert sorted(r["text"] for r in kept) == sorted(r["text"] for r in rows)
    assert list(pd.read_parquet(recipe.run_dir / HOLDOUT)["text"]) == list(validation["text"])


def test_group_rewards_tell_agreeing_groups_from_disagreeing_ones(tiny_recipe, tmp_path, policy):
    recipe = load_recipe(RECIPE, tiny_recipe(tmp_path))
    row = {"label": "disallow", "categories": ["iptv"], "text": "Premium IPTV, 20k channels, M3U links."}
    right = "<reasoning>\nSells IPTV M3U links for 20k channels.\n</reasoning>\n<answer>\nDISALLOW: iptv\n</answer>"
    wrong = "<reasoning>\nA channel guide.\n</reasoning>\n<answer>\nALLOW\n</answer>"
    same = group_rewards(recipe, policy, [row, row], [right, right])
    mixed = group_rewards(recipe, policy, [row, row], [right, wrong])
    assert same[0] == same[1] and mixed[0] > mixed[1]


def test_a_fast_share_of_grpo_prompts_ends_in_the_answer_fast_mode_forces(tokenizer):
    """Fast-form GRPO rows: the prompt is the chat template's text plus the empty reasoning, exactly what fast mode
    scores, and `answer_start` tells the rewards what the model did not sample."""
    rows = [{**row, "text": f"listing {i}"} for i, row in enumerate(rows_with_completions(10))]
    started = start_answers(rows, tokenizer, 0.3, seed=1)
    fast = [r for r in started if r["answer_start"]]
    assert len(fast) == 3 and all(r["answer_start"] == ANSWER_PREFIX for r in fast)
    for row, original in zip(started, rows, strict=True):
        rendered = tokenizer.apply_chat_template(original["prompt"], tokenize=False, add_generation_prompt=True)
        assert row["prompt"] == rendered + row["answer_start"]
    assert started == start_answers(rows, tokenizer, 0.3, seed=1)
    unchanged = start_answers(rows, tokenizer, 0.0, seed=1)
    assert [r["prompt"] for r in unchanged] == [r["prompt"] for r in rows] and not any(
        r["answer_start"] for r in unchanged
    )


def test_the_categories_task_samples_only_the_names_of_disallowed_rows(tokenizer, tiny_recipe, tmp_path, policy):
    """grpo_task=categories: allowed rows leave, every prompt ends after fast mode's `DISALLOW:`, and the rewards
    score the start plus the sampled names, so a right name outscores a wrong one with the verdict never sampled."""
    rows = rows_with_completions(4)
    rows[1] |= {"label": "disallow", "categories": ["iptv"], "text": "Premium IPTV, 20k channels, M3U links."}
    started = start_answers(rows, tokenizer, 0.0, seed=1, task="categories")
    assert len(started) == 1 and started[0]["answer_start"] == CATEGORY_START
    rendered = tokenizer.apply_chat_template(rows[1]["prompt"], tokenize=False, add_generation_prompt=True)
    assert started[0]["prompt"] == rendered + CATEGORY_START
    recipe = load_recipe(RECIPE, tiny_recipe(tmp_path))
    right, wrong = group_rewards(recipe, policy, started * 2, [" iptv\n</answer>", " adult\n</answer>"])
    assert right > wrong


def test_the_mixed_task_adds_every_row_in_fast_form_so_allowed_listings_are_sampled_too(
    tokenizer, tiny_recipe, tmp_path, policy
):
    """grpo_task=mixed: the disallowed rows' names-only prompts plus every row started after fast mode's empty
    reasoning, shuffled by seed; an allowed row's group samples its verdict, so a false alarm scores below ALLOW."""
    rows = rows_with_completions(4)
    rows[1] |= {"label": "disallow", "categories": ["iptv"], "text": "Premium IPTV, 20k channels, M3U links."}
    mixed = start_answers(rows, tokenizer, 0.0, seed=1, task="mixed")
    forms = sorted((row["prompt"], row["answer_start"]) for row in mixed)
    rendered = [
        tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True) for row in rows
    ]
    expected = [(text + ANSWER_PREFIX, ANSWER_PREFIX) for text in rendered] + [
        (rendered[1] + CATEGORY_START, CATEGORY_START)
    ]
    assert forms == sorted(expected)
    assert mixed == start_answers(rows, tokenizer, 0.0, seed=1, task="mixed")
    allowed = next(row for row in mixed if row["label"] != "disallow")
    recipe = load_recipe(RECIPE, tiny_recipe(tmp_path))
    right, wrong = group_rewards(recipe, policy, [allowed] * 2, ["ALLOW\n</answer>", "DISALLOW: iptv\n</answer>"])
    assert right > wrong


def test_even_verdicts_keeps_as_many_disallowed_verdict_prompts_as_allowed_ones():
    verdict, names = (
        {"label": "disallow", "answer_start": ANSWER_PREFIX},
        {"label": "disallow", "answer_start": CATEGORY_START},
    )
    allowed = {"label": "allow", "answer_start": ANSWER_PREFIX}
    rows = [verdict, allowed, names, verdict, verdict, names, verdict, allowed]
    kept = list(range(len(rows)))
    assert even_verdicts(kept, rows, per_step=1) == [0, 1, 2, 3, 5, 7]  # two allowed: the first two verdicts stay
    assert even_verdicts([0, 2, 3, 4], rows, per_step=1) == [2]  # no allowed: names only
    assert even_verdicts([0, 2, 3, 4], rows, per_step=3) == [0, 2, 3]  # but never below one step
    assert even_verdicts([1, 2, 5, 7], rows, per_step=1) == [1, 2, 5, 7]  # nothing to cut


def test_teaching_prompts_fill_one_step_so_a_single_disagreeing_prompt_still_trains():
    assert teaching_prompts([0.0, 0.5, 0.0, 0.7, 0.0, 0.2], per_step=2) == [1, 3, 5]
    assert teaching_prompts([0.0, 0.0, 0.4, 0.0, 0.0], per_step=4) == [0, 1, 2, 3]  # one kept + the first others
    assert teaching_prompts([0.0, 0.0, 0.0], per_step=4) == [0, 1, 2]  # all agreed: the whole pool


def test_expected_disagreement_is_the_chance_a_group_does_not_answer_alike():
    def odds(p_disallow, shares, group=4, temperature=1.0):
        return expected_disagreement(Scores(p_disallow, shares, 0.0), group, temperature)

    assert odds(0.0, {"iptv": 0.5, "adult": 0.5}) == pytest.approx(0.0)  # always ALLOW
    assert odds(1.0, {"iptv": 1.0, "adult": 0.0}) == pytest.approx(0.0)  # always DISALLOW: iptv
    assert odds(0.5, {"iptv": 1.0, "adult": 0.0}) == pytest.approx(1 - 2 * 0.5**4)
    assert odds(1.0, {"iptv": 0.5, "adult": 0.5}) == pytest.approx(1 - 2 * 0.5**4)  # the category splits the group
    assert odds(0.9, {"iptv": 1.0}, temperature=0.5) < odds(0.9, {"iptv": 1.0})  # a colder group agrees more
    given = expected_disagreement(Scores(0.5, {"iptv": 1.0, "adult": 0.0}, 0.0), 4, 1.0, verdict_given=True)
    assert given == pytest.approx(0.0)  # grpo_task=categories: the verdict is not sampled, the names agree


ODDS = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]


def screened(strata, size, share, balance=False):
    """The pool likeliest_to_disagree picks from ODDS."""
    recipe = SimpleNamespace(prompt_pool=size, prompt_pool_allowed=share, prompt_pool_balance=balance)
    return likeliest_to_disagree(ODDS, strata, recipe)


def test_the_pool_can_keep_a_share_for_allowed_listings():
    strata = ["spam", "spam", "iptv", "allow", "spam", "allow", "allow", "adult"]

    def pool(size, share):
        return screened(strata, size, share)

    assert pool(4, None) == [0, 1, 2, 3]  # one ranking: disallowed listings fill what they lead
    assert pool(4, 0.5) == [0, 1, 3, 5]  # two places each, each label's likeliest first, back in row order
    assert pool(4, 1.0) == [0, 3, 5, 6]  # only three allowed rows: the fourth place goes to the likeliest disallowed
    assert pool(8, 0.0) == list(range(8))  # fewer disallowed rows than places: allowed ones fill the rest


def test_a_balanced_pool_deals_its_places_to_each_category_in_turn():
    strata = ["spam", "spam", "spam", "iptv", "allow", "spam", "allow", "adult"]

    def pool(size, share):
        return screened(strata, size, share, balance=True)

    assert pool(4, None) == [0, 3, 4, 7]  # each stratum's likeliest, however far down the ranking, before a second spam
    assert pool(5, None) == [0, 1, 3, 4, 7]  # then each one's second, by rank: spam's before allow's
    assert pool(4, 0.5) == [0, 3, 4, 6]  # two allowed places; the categories deal the other two in turn
    assert pool(8, None) == list(range(8))  # a stratum short of rows leaves its places to the others
