"""SFT loss that projects through the LM head only where a label is scored (the gold answer, not the prompt).

TRL's fused LM head scores every position off Triton devices, so on CPU a batch of 8 prompts of ~300 tokens builds
(8 × 300 × 49k-vocab) logits in fp32 (~0.5 GB, several copies in backward) to train ~40 answer tokens per row. Here
the backbone runs as usual and the head sees only the answer positions, a chunk at a time (training.vocab_head): the
same loss, less memory and time.

Every row of a batch also starts with the same system turn (~110 of ~300 tokens with the compact prompt). That shared
prefix runs once per batch, with gradients, and its key/value cache is repeated for the rows, as the GRPO loss does.

The trainer subclass that plugs this loss into TRL lives in training.trl_adapter (it keeps TRL's private metrics).
"""

from __future__ import annotations

import torch

from inference.prefix_cache import prefill_repeated
from training.vocab_head import ChosenTokens, backbone_and_head, chosen_token_log_probs

MIN_SHARED_PREFIX = 16  # below this, one more forward call costs more than it saves


def shared_prefix_length(inputs: dict) -> int:
    """Leading tokens every row shares, unpadded and unscored, keeping at least one uncached token per row; else 0."""
    input_ids, labels = inputs["input_ids"], inputs["labels"]
    mask = inputs.get("attention_mask")
    same = (input_ids == input_ids[:1]).all(0) & (labels == -100).all(0)
    if mask is not None:
        same &= mask.bool().all(0)
    length = min(int(same.long().cumprod(0).sum()), input_ids.size(1) - 1) - 1  # the next label reads position n
    return length if input_ids.size(0) > 1 and length >= MIN_SHARED_PREFIX else 0


def answer_only_loss(model, inputs: dict, num_items_in_batch=None) -> tuple[torch.Tensor, ChosenTokens]:
    """(loss, the answer positions' ChosenTokens): next-token cross-entropy over the labels that are not -100. The
    head runs a chunk of answer positions at a time (training.vocab_head); the logged entropy and token accuracy come
    from the same pass: over a 262k vocabulary (Gemma 3) a second one cost ~15% of the step."""
    backbone, head = backbone_and_head(model)
    input_ids, attention_mask = inputs["input_ids"], inputs.get("attention_mask")
    shared = shared_prefix_length(inputs)
    if shared:
        _, cache = prefill_repeated(backbone, input_ids[:1, :shared], None, input_ids.size(0))
        positions = torch.arange(shared, input_ids.size(1), device=input_ids.device).expand(input_ids.size(0), -1)
        hidden = backbone(
            input_ids=input_ids[:, shared:],
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state
    else:
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    labels = inputs["labels"][:, shared + 1 :]
    mask = labels != -100
    chosen = chosen_token_log_probs(hidden[:, :-1][mask], head, labels[mask])
    count = chosen.log_probs.numel() if num_items_in_batch is None else num_items_in_batch
    loss = -chosen.log_probs.sum() / torch.as_tensor(count).clamp(min=1)
    return loss, chosen
