"""Prefill each distinct prompt once and repeat its KV cache for every row that shares it.

A GRPO group is one prompt with `num_generations` completions: the rollout (sampling) and the loss forward (scoring)
run the ~250-token prompt once here instead of once per completion, and the SFT warm-start runs a batch's shared
system turn once. (Fast scoring keeps its one system-prompt cache for the life of the server: inference.fast_scoring.)
"""

from __future__ import annotations


def mask_positions(attention_mask):
    """Position ids that follow the attention mask, as generation assigns them: a left-padded row starts at 0 on its
    first real token, so a prompt is scored at the positions it was sampled at."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def prefill_repeated(model, input_ids, attention_mask, repeat, **forward_kwargs):
    """Run the distinct prompt rows through `model` (a causal LM or its backbone) once; return (its output, a KV cache
    holding one copy per entry of `repeat`, the prompt row each output row continues). A caller that wants only the
    cache from a causal LM passes `logits_to_keep=1`, so the vocabulary projection runs for one position per row.

    `repeat` may instead be a count: one unpadded prompt row (`attention_mask` None) repeated that many times, as the
    SFT batch's shared system turn is. Its cache is then built with `batch_repeat_interleave`, whose backward sums the
    rows' gradients in the order the SFT loss always has (an index-select sums them in another order, which changes
    the trained weights in the last bits)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    if attention_mask is not None:
        forward_kwargs.update(attention_mask=attention_mask, position_ids=mask_positions(attention_mask))
    output = model(input_ids=input_ids, past_key_values=cache, use_cache=True, **forward_kwargs)
    if isinstance(repeat, int):
        cache.batch_repeat_interleave(repeat)
    else:
        cache.batch_select_indices(repeat)
    return output, cache
