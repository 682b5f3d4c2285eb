"""Rollouts that prefill each prompt once per GRPO group instead of once per completion.

TRL's generate path receives every prompt `num_generations` times (its sampler repeats them) and prefills each copy.
On CPU, the prefill of a ~300-token moderation prompt costs more than decoding a 64-token answer, so we run the
prompt through the model once, copy its KV cache for the group, and sample the completions from the copies. The
sampling distribution is unchanged: same model, same generation config, same tokens in context.
"""

from __future__ import annotations

import contextlib

import torch

from inference.prefix_cache import prefill_repeated


def sample_completions(model, tokenizer, prompts: list, generation_config, autocast=contextlib.nullcontext) -> dict:
    """Sample one completion per entry of `prompts` (repeats share one prefill): prompt_ids and completion_ids."""
    texts = [
        p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    unique = list(dict.fromkeys(texts))
    index = torch.tensor([unique.index(t) for t in texts])
    encoded = tokenizer(unique, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    device = next(model.parameters()).device
    ids, mask, index = ids.to(device), mask.to(device), index.to(device)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), weight_casts_cached(model), autocast():
            # Prefill all but the last prompt token: generate() needs one uncached token to start from.
            _, cache = prefill_repeated(model, ids[:, :-1], mask[:, :-1], index, logits_to_keep=1)
            output = model.generate(
                input_ids=ids[index],
                attention_mask=mask[index],
                past_key_values=cache,
                generation_config=generation_config,
            )
    finally:
        model.train(was_training)

    completions = output[:, ids.shape[1] :].tolist()
    return {
        "prompt_ids": [row[m.bool()].tolist() for row, m in zip(ids[index], mask[index], strict=True)],
        "completion_ids": [until_eos(c, generation_config) for c in completions],
    }


@contextlib.contextmanager
def weight_casts_cached(model):
    """Let autocast cast each weight to bf16 once per rollout instead of at every decoding step. Autocast caches the
    cast of a weight only when it requires grad, and LoRA's frozen base weights do not, so every step re-cast the whole
    model (a third of a rollout's time on CPU). Under no_grad, marking them costs nothing and records no graph; the
    cast values, and so the sampled tokens, are the same."""
    frozen = [parameter for parameter in model.parameters() if not parameter.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(True)
    try:
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(False)


class SharedPrefixRollout:
    """A TRL `rollout_func`: `(prompts, trainer) -> {"prompt_ids", "completion_ids", "logprobs"}`."""

    __name__ = "shared_prefix_rollout"

    def __call__(self, prompts: list, trainer) -> dict:
        sampled = sample_completions(
            trainer.model, trainer.processing_class, prompts, trainer.generation_config, trainer.accelerator.autocast
        )  # the recipe's precision, as in the loss
        return {**sampled, "logprobs": None}


def until_eos(tokens: list[int], config) -> list[int]:
    """Cut a completion after its first end token (kept, as TRL's own path does); the rest is padding."""
    eos = config.eos_token_id
    stops = set(eos if isinstance(eos, list) else [eos])
    for position, token in enumerate(tokens):
        if token in stops:
            return tokens[: position + 1]
    return tokens
