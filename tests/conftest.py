"""Shared fixtures: offline settings, the real SmolLM2 tokenizer, tiny random models built in-process, tiny data."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from inference.models import DEFAULT_MODEL, load_tokenizer
from moderation.policy import load_policy


@pytest.fixture(scope="session")
def policy():
    return load_policy("marketplace")


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's real tokenizer (converted by `make setup`, cached after)."""
    return load_tokenizer(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A random 2-layer Llama (hidden 64) with the real tokenizer, saved like any HF model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


TINY_ROWS = [
    ("Lightroom preset pack, 24 warm film looks for weddings.", "allow", []),
    ("Premium IPTV 12 months, 18,000 channels, M3U link.", "disallow", ["iptv"]),
    ("Poker night art print, vintage playing cards, A3 PDF.", "allow", []),
    ("Fixed-match betting tips, 100% sure wins every weekend.", "disallow", ["gambling"]),
    ("The Bitcoin Story, an illustrated history ebook.", "allow", []),
    ("Bank login clone kit, captures passwords and 2FA codes.", "disallow", ["phishing"]),
    ("Buy 0.05 BTC at a discount, paid by PayPal.", "disallow", ["non_fiat_currency", "spam"]),
    ("Notion budget template for freelancers.", "allow", []),
]


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory):
    """A dataset folder with an 8-row train.parquet (both labels, single- and multi-category)."""
    import pandas as pd

    path = tmp_path_factory.mktemp("data")
    frame = pd.DataFrame(
        [
            {"id": f"r{i}", "text": t, "label": label, "categories": cats, "source": "test", "split": "train"}
            for i, (t, label, cats) in enumerate(TINY_ROWS)
        ]
    )
    frame.to_parquet(path / "train.parquet")
    return path


@pytest.fixture(scope="session")
def tiny_recipe(tiny_model_dir, tiny_dataset_dir):
    """`tiny_recipe(output_root, **extra)`: key=value overrides that shrink any recipe to the tiny model and data."""

    def overrides(output_root, **extra) -> list[str]:
        values = {
            "model": str(tiny_model_dir),
            "dataset": str(tiny_dataset_dir),
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
            "holdout": 0,
            "prompt_pool": 0,
            "wandb": "disabled",
            **extra,
        }
        return [f"{k}={v}" for k, v in values.items()]

    return overrides
