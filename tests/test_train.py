"""train_grpo.py on a tiny random Llama: recipe validation, SFT + GRPO end to end (kill and resume: test_resume.py)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from inference.fast_answer import ANSWER_PREFIX, CATEGORY_START
from moderation.errors import UserError
from training import shared_prefix
from training.data import gold_reasoning
from training.pipeline import train
from training.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]

RECIPE = REPO / "configs" / "recipes" / "cpu-smollm2.yaml"


class TestRecipeValidation:
    def test_cpu_recipe_is_valid(self, tiny_dataset_dir):
        recipe = load_recipe(RECIPE, [f"dataset={tiny_dataset_dir}"])
        assert recipe.run_dir == Path("runs/cpu-smollm2")

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            (["num_generations=3"], "must be divisible by num_generations"),
            (["reward_funcs=[verdict, nope, categories]"], "nope"),
            (["reward_weights=[1.0]"], "1 reward_weights for 3 reward_funcs"),
            (["dataset=/no/such/dir"], "make generate_data"),
            (["max_step=3"], "unknown field 'max_step'"),
            (["resume=true", "overwrite=true"], "contradict"),
            (["prompt_screen=32"], r"prompt_screen \(32\) must be at least prompt_pool \(128\)"),
            (["prompt_screen=0", "prompt_pool_allowed=0.5"], "set prompt_screen too"),
            (["prompt_screen=0", "prompt_pool_balance=true"], "prompt_pool_balance chooses among screened prompts"),
            (["prompt_pool=0", "prompt_pool_even_verdicts=true"], "set prompt_pool too"),
            (["grpo_task=categories", "fast_share=0.5"], "fast_share must be 0"),
            (["grpo_task=mixed", "fast_share=0.5"], "fast_share must be 0"),
            (["backend=unsloth"], "set rollout=trl"),
            (["use_vllm=true"], "set rollout=trl"),
            (["backend=unsloth", "rollout=trl"], "set sft.enabled=false"),
        ],
    )
    def test_invalid_recipes_fail_at_load(self, tiny_dataset_dir, overrides, message):
        with pytest.raises(UserError, match=message.replace("[", r"\[")):
            load_recipe(RECIPE, [f"dataset={tiny_dataset_dir}", *overrides])

    def test_cli_error_is_one_line(self):
        result = subprocess.run(
            [sys.executable, "train_grpo.py", "--recipe", str(RECIPE), "num_generations=3"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:")

    def test_help_documents_every_field(self):
        result = subprocess.run(
            [sys.executable, "train_grpo.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0
        for field in ("num_generations", "sft.max_steps", "lora.r", "prompt.max_listing_tokens", "resume"):
            assert field in result.stdout


def test_the_categories_task_trains_on_disallowed_prompts_started_after_disallow(tiny_recipe, tmp_path):
    """grpo_task=categories end to end: the screen, the pool and GRPO see only disallowed rows, each answer started
    after `DISALLOW:`, and the logged completions are whole answers."""
    overrides = {"grpo_task": "categories", "sft.enabled": "false", "prompt_pool": 4, "prompt_screen": 6}
    run_dir = train(load_recipe(RECIPE, tiny_recipe(tmp_path, **overrides)))
    completions = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
    assert completions and all(c["label"] == "disallow" for c in completions)
    assert all(c["completion"].startswith(CATEGORY_START) for c in completions)


def test_the_categories_task_needs_disallowed_rows_and_says_so_before_sft(tiny_recipe, tiny_dataset_dir, tmp_path):
    dataset = tmp_path / "allowed-only"
    dataset.mkdir()
    frame = pd.read_parquet(tiny_dataset_dir / "train.parquet")
    frame[frame["label"] == "allow"].to_parquet(dataset / "train.parquet")
    recipe = load_recipe(RECIPE, tiny_recipe(tmp_path, dataset=str(dataset), grpo_task="categories"))
    with pytest.raises(UserError, match="no disallowed train rows"):
        train(recipe)
    assert not (recipe.run_dir / "sft").exists()


def test_gold_reasoning_uses_rationale_or_policy(policy):
    row = {"label": "disallow", "categories": ["iptv", "gambling"], "text": "x"}
    assert "unlicensed iptv and streaming and gambling" in gold_reasoning(row, policy)
    assert gold_reasoning({**row, "rationale": "Sells M3U links."}, policy) == "Sells M3U links."


@pytest.mark.parametrize(
    "overrides",
    [
        {"sft.fast_share": 0.5},  # the recipe's own task (mixed: verdicts and names, all in fast mode's form)
        {"sft.fast_share": 0.5, "grpo_task": "verdict", "fast_share": 0.5},  # half the prompts reason first
    ],
    ids=["recipe", "verdict"],
)
def test_sft_then_grpo_end_to_end(tiny_recipe, tiny_dataset_dir, tmp_path, monkeypatch, capsys, overrides):
    grouped_calls = []
    grouped = shared_prefix.grouped_logps_and_entropies
    monkeypatch.setattr(
        shared_prefix, "grouped_logps_and_entropies", lambda *a, **k: grouped_calls.append(1) or grouped(*a, **k)
    )
    recipe = load_recipe(RECIPE, tiny_recipe(tmp_path, holdout=2, prompt_pool=4, prompt_screen=6, **overrides))
    run_dir = train(recipe)
    assert len(grouped_calls) == recipe.max_steps, "the GRPO loss must take the shared-prefix path"
    for part in ("merged/model.safetensors", "adapter/adapter_config.json", "sft/merged/READY", "rewards.png"):
        assert (run_dir / part).exists(), part
    for part in ("holdout.parquet", "grpo_prompts.json"):
        assert (run_dir / part).exists(), part
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest["counts"]
    assert (
        manifest["policy"] == "marketplace"
        and counts["train_prompts"] == len(pd.read_parquet(tiny_dataset_dir / "train.parquet")) - 2
    )
    pool = json.loads((run_dir / "grpo_prompts.json").read_text())
    assert pool["pool"] == 4 and 0 <= counts["grpo_kept_fraction"] == pool["kept_fraction"] <= 1
    assert len(pool["rows"]) == 4 and set(pool["kept"]) <= set(pool["rows"]) <= set(range(6))  # screened 6, sampled 4
    assert all(0 <= odds <= 1 for odds in pool["expected_disagreement"])
    assert counts["grpo_prompts"] == len(pool["kept"]) >= 1  # GRPO trains on exactly the kept prompts (or the pool)
    said = re.search(
        r"GRPO trains on (\d+) \((\d+) allowed and (\d+) disallowed in verdict form, (\d+) in names form",
        capsys.readouterr().out,
    )
    assert said and int(said[1]) == len(pool["kept"]) == sum(int(said[i]) for i in (2, 3, 4))
    stages = [json.loads(line)["stage"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "sft" in stages and "grpo" in stages
    completions = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
    assert completions and all(c["label"] in ("allow", "disallow") and c["text"] for c in completions)
    assert any(c["completion"].startswith(ANSWER_PREFIX) for c in completions), "fast-form rows log whole answers"
    assert {c["group"] for c in completions} == {"1:0", "1:1", "2:0", "2:1"}
    audit = subprocess.run(
        [sys.executable, "-m", "rewards.audit", str(run_dir / "completions.jsonl")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    with pytest.raises(UserError, match="already exists"):
        train(recipe)
