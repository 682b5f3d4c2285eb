import json
import shutil

import pytest

from inference import load_moderator as load_engine_moderator
from inference.runs import load_moderator, read_run
from moderation.errors import UserError
from moderation.prompt import PromptConfig


def _make_run(tmp_path, tiny_model_dir, manifest):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "merged")
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_plain_model_folder_is_not_a_run(tiny_model_dir):
    assert read_run(tiny_model_dir) is None
    assert read_run("HuggingFaceTB/SmolLM2-135M-Instruct") is None


def test_run_folder_restores_policy_and_prompt(tmp_path, tiny_model_dir):
    run = _make_run(tmp_path, tiny_model_dir, {"policy": "kids-crafts", "prompt": {"max_listing_tokens": 64}})
    moderator = load_moderator(run)
    assert moderator.policy.name == "kids-crafts"
    assert moderator.prompt_config == PromptConfig(max_listing_tokens=64)


def test_explicit_policy_overrides_the_run(tmp_path, tiny_model_dir):
    run = _make_run(tmp_path, tiny_model_dir, {"policy": "kids-crafts"})
    assert load_moderator(run, policy="marketplace").policy.name == "marketplace"


def test_broken_runs_fail_with_one_line(tmp_path, tiny_model_dir):
    run = _make_run(tmp_path, tiny_model_dir, {"prompt": {}})
    with pytest.raises(UserError, match="unreadable run manifest"):
        read_run(run)
    shutil.rmtree(run / "merged")
    with pytest.raises(UserError, match="no merged/ model"):
        read_run(run)


def test_a_stage_inside_a_run_loads_with_the_runs_prompt(tmp_path, tiny_model_dir):
    """`serve --model runs/x/sft` and `evals --model runs/x/sft` resolve alike: the stage's own merged model, the
    run's policy and prompt."""
    run = _make_run(tmp_path, tiny_model_dir, {"policy": "kids-crafts", "prompt": {"max_listing_tokens": 64}})
    shutil.copytree(tiny_model_dir, run / "sft" / "merged")
    assert read_run(run / "sft").model_path == run / "sft" / "merged"
    moderator = load_engine_moderator(run / "sft", engine="transformers")
    assert moderator.policy.name == "kids-crafts"
    assert moderator.prompt_config == PromptConfig(max_listing_tokens=64)


def test_a_stage_of_a_run_stopped_before_its_manifest_loads_with_the_recipes_prompt(tmp_path, tiny_model_dir):
    """A run stopped during GRPO has recipe.json and sft/merged but no manifest: its SFT stage still evaluates with
    the prompt it was trained with (a bare merged/ folder would silently get the default prompt)."""
    from evals.runner import locate_model

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "sft" / "merged")
    (run / "recipe.json").write_text(json.dumps({"policy": "kids-crafts", "prompt": {"max_listing_tokens": 64}}))
    stage = read_run(run / "sft")
    assert (stage.model_path, stage.source) == (run / "sft" / "merged", run / "recipe.json")
    assert locate_model(str(run / "sft")) == (str(run / "sft" / "merged"), stage)
    moderator = load_engine_moderator(run / "sft", engine="transformers")
    assert moderator.prompt_config == PromptConfig(max_listing_tokens=64)
    assert read_run(run) is None  # the run itself has no model yet
