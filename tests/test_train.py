"""train_grpo.py on a tiny random Llama: recipe validation, SFT + GRPO end to end, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import train_grpo
from moderation.errors import UserError

REPO = Path(__file__).resolve().parents[1]

ROWS = [
    ("Lightroom preset pack, 24 warm film looks for weddings.", "allow", []),
    ("Premium IPTV 12 months, 18,000 channels, M3U link.", "disallow", ["iptv"]),
    ("Poker night art print, vintage playing cards, A3 PDF.", "allow", []),
    ("Fixed-match betting tips, 100% sure wins every weekend.", "disallow", ["gambling"]),
    ("The Bitcoin Story, an illustrated history ebook.", "allow", []),
    ("Bank login clone kit, captures passwords and 2FA codes.", "disallow", ["phishing"]),
    ("Buy 0.05 BTC at a discount, paid by PayPal.", "disallow", ["non_fiat_currency", "spam"]),
    ("Notion budget template for freelancers.", "allow", []),
]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    frame = pd.DataFrame(
        [
            {"id": f"r{i}", "text": t, "label": label, "categories": cats, "source": "test", "split": "train"}
            for i, (t, label, cats) in enumerate(ROWS)
        ]
    )
    frame.to_parquet(path / "train.parquet")
    return path


def tiny_overrides(model_dir, dataset_dir, output_root, **extra) -> list[str]:
    values = {
        "model": str(model_dir),
        "dataset": str(dataset_dir),
        "output_root": str(output_root),
        "name": "tiny",
        "num_generations": 2,
        "per_device_train_batch_size": 4,
        "max_completion_length": 8,
        "max_steps": 2,
        "save_steps": 1,
        "log_completions_steps": 1,
        "sft.max_steps": 2,
        "sft.batch_size": 2,
        "wandb": "disabled",
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


RECIPE = REPO / "configs" / "recipes" / "cpu-smollm2.yaml"


class TestRecipeValidation:
    def test_cpu_recipe_is_valid(self, dataset_dir):
        recipe = train_grpo.load_recipe(RECIPE, [f"dataset={dataset_dir}"])
        assert recipe.run_dir == Path("runs/cpu-smollm2")

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            (["num_generations=3"], "must be divisible by num_generations"),
            (["reward_funcs=[verdict, nope, categories, format_partial]"], "nope"),
            (["reward_weights=[1.0]"], "1 reward_weights for 4 reward_funcs"),
            (["dataset=/no/such/dir"], "make generate_data"),
            (["max_step=3"], "max_step: Extra inputs are not permitted"),
            (["resume=true", "overwrite=true"], "contradict"),
            (["backend=unsloth"], "needs a CUDA GPU"),
        ],
    )
    def test_invalid_recipes_fail_at_load(self, dataset_dir, overrides, message):
        with pytest.raises(UserError, match=message.replace("[", r"\[")):
            train_grpo.load_recipe(RECIPE, [f"dataset={dataset_dir}", *overrides])

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


def test_gold_reasoning_uses_rationale_or_policy(policy):
    row = {"label": "disallow", "categories": ["iptv", "gambling"], "text": "x"}
    assert "unlicensed iptv and streaming and gambling" in train_grpo.gold_reasoning(row, policy)
    assert train_grpo.gold_reasoning({**row, "rationale": "Sells M3U links."}, policy) == "Sells M3U links."


def test_sft_then_grpo_end_to_end(tiny_model_dir, dataset_dir, tmp_path):
    recipe = train_grpo.load_recipe(RECIPE, tiny_overrides(tiny_model_dir, dataset_dir, tmp_path))
    run_dir = train_grpo.main(recipe)
    for part in ("merged/model.safetensors", "adapter/adapter_config.json", "sft/merged/READY", "rewards.png"):
        assert (run_dir / part).exists(), part
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["policy"] == "marketplace" and manifest["counts"]["train_prompts"] == len(ROWS)
    stages = [json.loads(line)["stage"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert "sft" in stages and "grpo" in stages
    completions = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
    assert completions and all(c["label"] in ("allow", "disallow") and c["text"] for c in completions)
    assert {c["group"] for c in completions} == {"1:0", "1:1", "2:0", "2:1"}
    audit = subprocess.run(
        [sys.executable, "-m", "rewards.audit", str(run_dir / "completions.jsonl")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    with pytest.raises(UserError, match="already exists"):
        train_grpo.main(recipe)


def test_killed_run_resumes_to_the_same_step_count(tiny_model_dir, dataset_dir, tmp_path, capsys):
    overrides = tiny_overrides(tiny_model_dir, dataset_dir, tmp_path, max_steps=5, **{"sft.enabled": "false"})
    process = subprocess.Popen(
        [sys.executable, "train_grpo.py", "--recipe", str(RECIPE), *overrides],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    checkpoint = tmp_path / "tiny" / "checkpoints" / "checkpoint-2"
    deadline = time.time() + 240
    while not (checkpoint / "trainer_state.json").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (tmp_path / "tiny" / "merged").exists()
    saved = sorted((tmp_path / "tiny" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    latest = [p for p in saved if (p / "trainer_state.json").exists()][-1]

    recipe = train_grpo.load_recipe(RECIPE, [*overrides, "resume=true"])
    train_grpo.main(recipe)
    assert f"resuming GRPO from {latest}" in capsys.readouterr().out
    state = json.loads((tmp_path / "tiny" / "checkpoints" / "checkpoint-5" / "trainer_state.json").read_text())
    assert state["global_step"] == 5
    assert (tmp_path / "tiny" / "merged" / "READY").exists()
