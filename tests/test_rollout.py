"""The shared-prefix rollout must produce exactly what plain generation of the repeated prompts produces."""

import contextlib
from types import SimpleNamespace

import torch
from transformers import GenerationConfig

from inference.models import load_model
from moderation.prompt import build_messages
from training.rollout import SharedPrefixRollout


def test_shared_prefix_matches_plain_generation(tiny_model_dir, policy):
    model, tokenizer = load_model(tiny_model_dir)
    config = GenerationConfig(
        max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    listings = ["short listing", "a rather longer listing about presets and templates for designers"]
    prompts = [build_messages(policy, text) for text in listings for _ in range(3)]  # groups of 3, as TRL sends them
    trainer = SimpleNamespace(
        model=model.train(),
        processing_class=tokenizer,
        generation_config=config,
        accelerator=SimpleNamespace(autocast=contextlib.nullcontext),
    )

    result = SharedPrefixRollout()(prompts, trainer)

    assert model.training, "the rollout must restore train mode"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    assert result["prompt_ids"] == [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    model.eval()
    for prompt_ids, completion in zip(result["prompt_ids"], result["completion_ids"], strict=True):
        with torch.no_grad():
            plain = model.generate(input_ids=torch.tensor([prompt_ids]), generation_config=config)
        expected = plain[0, len(prompt_ids) :].tolist()
        if tokenizer.eos_token_id in expected:
            expected = expected[: expected.index(tokenizer.eos_token_id) + 1]
        assert completion == expected
    assert len(result["completion_ids"]) == 6 and result["logprobs"] is None


def test_a_lora_rollout_under_bf16_autocast_samples_the_same_and_leaves_the_base_frozen(tiny_model_dir, policy):
    """The rollout lets autocast cache its weight casts by marking LoRA's frozen base weights for the rollout only:
    greedy tokens equal a plain bf16-autocast generate, and afterwards exactly the adapter trains again."""
    from peft import LoraConfig, get_peft_model

    from training.rollout import sample_completions

    model, tokenizer = load_model(tiny_model_dir)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    config = GenerationConfig(
        max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id
    )
    prompts = [build_messages(policy, "Premium IPTV, 18k channels")] * 2

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    result = sample_completions(model, tokenizer, prompts, config, autocast)

    assert {name for name, parameter in model.named_parameters() if parameter.requires_grad} == trainable
    assert trainable and all("lora_" in name for name in trainable)
    with torch.no_grad(), autocast():
        plain = model.generate(input_ids=torch.tensor([result["prompt_ids"][0]]), generation_config=config)
    expected = plain[0, len(result["prompt_ids"][0]) :].tolist()
    if tokenizer.eos_token_id in expected:
        expected = expected[: expected.index(tokenizer.eos_token_id) + 1]
    assert result["completion_ids"][0] == expected
