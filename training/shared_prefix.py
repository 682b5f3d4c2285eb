"""GRPO loss forward that runs each group's prompt through the model once instead of once per completion.

TRL scores a batch as `num_generations` copies of every prompt, each followed by its own completion. A moderation
prompt is ~250 tokens and an answer ~40, so ~85% of the policy forward and backward is the same prompt again. Here the
unique prompts go through the model once (with gradients), their KV cache is repeated for the group, and only the
completion tokens run per row. The log-probabilities are the same quantity TRL computes; positions follow the
attention mask, as in generation, so left-padded prompts are scored exactly as they were sampled.

The trainer subclass that plugs this loss into TRL lives in training.trl_adapter (it overrides a private method).
"""

from __future__ import annotations

import torch

from inference.prefix_cache import mask_positions, prefill_repeated
from training.vocab_head import backbone_and_head, chosen_token_log_probs


def shared_prompts(input_ids: torch.Tensor, prompt_length: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(unique prompt rows, row → unique index) when some rows repeat a prompt, else None.

    TRL shuffles a generation batch before it splits it into micro-batches, so a group's rows need not be adjacent.
    """
    unique, inverse = torch.unique(input_ids[:, :prompt_length], dim=0, return_inverse=True)
    if unique.size(0) == input_ids.size(0):
        return None
    firsts = torch.full((unique.size(0),), input_ids.size(0), dtype=torch.long, device=input_ids.device)
    firsts = firsts.scatter_reduce(0, inverse, torch.arange(input_ids.size(0), device=input_ids.device), "amin")
    return firsts, inverse


def grouped_logps_and_entropies(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_length: int,
    firsts: torch.Tensor,
    inverse: torch.Tensor,
    temperature: float,
    entropy_requires_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs and entropies of the last `completion_length` tokens, prefilling each prompt once; the
    head scores the completion positions a chunk at a time (training.vocab_head).

    `firsts` holds one row index per distinct prompt and `inverse` maps every row to its prompt (see shared_prompts).
    """
    backbone, head = backbone_and_head(model)
    prompt_length = input_ids.size(1) - completion_length
    prefix, cache = prefill_repeated(
        backbone, input_ids[firsts, :prompt_length], attention_mask[firsts, :prompt_length], inverse
    )
    completion_ids = input_ids[:, prompt_length:]
    rest = backbone(
        input_ids=completion_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=mask_positions(attention_mask)[:, prompt_length:-1],
        past_key_values=cache,
        use_cache=True,
    )
    hidden = torch.cat([prefix.last_hidden_state[:, -1:][inverse], rest.last_hidden_state], dim=1)
    chosen = chosen_token_log_probs(
        hidden.flatten(0, 1), head, completion_ids.flatten(), temperature, entropy_requires_grad
    )
    return chosen.log_probs.view_as(completion_ids), chosen.entropies.view_as(completion_ids)
