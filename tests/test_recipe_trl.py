"""The recipe's `trl:` passthrough: any GRPOConfig / SFTConfig option reaches TRL; a bad one fails at load, one line."""

from pathlib import Path

import pytest
import yaml

from moderation.errors import UserError
from training.recipe import CHECK_DEVICE, grpo_args, load_recipe, sft_args

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "recipes" / "cpu-smollm2.yaml"


def recipe_with(tmp_path, dataset, trl: dict):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(RECIPE.read_text()), "dataset": str(dataset), "trl": trl}))
    return load_recipe(path, [])


def test_options_pass_through_to_both_configs(tmp_path, tiny_dataset_dir):
    recipe = recipe_with(tmp_path, tiny_dataset_dir, {"grpo": {"epsilon_high": "0.28"}, "sft": {"weight_decay": 0.01}})
    grpo = grpo_args(recipe, CHECK_DEVICE, [])
    assert grpo.epsilon_high == 0.28  # typed from GRPOConfig's annotation, as a CLI string would be
    assert sft_args(recipe, 10, CHECK_DEVICE).weight_decay == 0.01


def test_without_trl_options_the_configs_are_what_the_recipe_says(tiny_dataset_dir):
    recipe = load_recipe(RECIPE, [f"dataset={tiny_dataset_dir}"])
    grpo = grpo_args(recipe, CHECK_DEVICE, [])
    assert (grpo.num_generations, grpo.max_completion_length, grpo.learning_rate) == (4, 20, 2e-4)
    assert (grpo.save_strategy, grpo.log_completions) == ("steps", False)  # TRL's defaults, no longer restated
    sft = sft_args(recipe, 40, CHECK_DEVICE)
    assert (sft.lr_scheduler_type, sft.warmup_steps, sft.max_length, sft.gradient_checkpointing) == (
        "cosine",
        4,
        288 + 256,
        False,
    )
    assert (sft.save_strategy, sft.completion_only_loss, sft.pad_to_multiple_of) == ("steps", True, 32)


@pytest.mark.parametrize(
    ("trl", "message"),
    [
        ({"grpo": {"epsilon_hihg": 0.28}}, r"^trl\.grpo\.epsilon_hihg: not a GRPOConfig option in TRL \d"),
        ({"sft": {"weight_decay": "heavy"}}, r"^trl\.sft\.weight_decay: .*valid number.* \(got 'heavy'\)$"),
        ({"grpo": {"learning_rate": 1e-4}}, r"^trl\.grpo\.learning_rate: the recipe sets learning_rate itself"),
        ({"sft": {"lr_scheduler_type": "linear"}}, r"^trl\.sft\.lr_scheduler_type: the recipe sets"),
        ({"grpo": {"generation_batch_size": 3}}, r"^trl\.grpo: GRPOConfig refused the options: "),
        ({"ppo": {}}, r"trl\.ppo"),
    ],
)
def test_a_bad_option_is_one_line_at_load(tmp_path, tiny_dataset_dir, trl, message):
    with pytest.raises(UserError, match=message) as caught:
        recipe_with(tmp_path, tiny_dataset_dir, trl)
    assert "\n" not in str(caught.value)


def test_grpo_seed_moves_grpo_alone(tmp_path, tiny_dataset_dir):
    """A second GRPO draw from the same SFT model: GRPO's seed changes, SFT's and the held-back slice's do not."""
    from training.data import hold_back, load_rows

    default = load_recipe(RECIPE, [f"dataset={tiny_dataset_dir}", f"output_root={tmp_path / 'a'}", "holdout=3"])
    repeat = load_recipe(
        RECIPE, [f"dataset={tiny_dataset_dir}", f"output_root={tmp_path / 'b'}", "holdout=3", "grpo_seed=7"]
    )
    assert (grpo_args(default, CHECK_DEVICE, []).seed, grpo_args(repeat, CHECK_DEVICE, []).seed) == (42, 7)
    assert sft_args(repeat, 10, CHECK_DEVICE).seed == 42
    rows = load_rows(tiny_dataset_dir)
    assert hold_back(rows, default) == hold_back(rows, repeat)
