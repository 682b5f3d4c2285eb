"""Log-probabilities of chosen tokens through the LM head, a chunk of positions at a time, for both training losses.

Gemma 3's head has a 262k-token vocabulary. Scoring an SFT batch's ~350 answer positions through it built (350 × 262k)
logits, and autograd kept them, their fp32 copy and their log-softmax for backward: ~1.5 GB that came and went every
step, on top of ~3.5 GB of model and optimizer (GRPO's 16 × 20 completion positions: the same again). LoRA leaves the
head frozen, so the only gradient wanted through it is the one to the hidden states: for position i with chosen token
t, d log p(t) / d h_i = ((onehot(t) - softmax_i) / temperature) · W. It is computed chunk by chunk in the forward
pass and kept (positions × hidden), not the vocabulary-sized tensors: the same matmuls in the same precisions.
A trainable or biased head, or an entropy that must carry gradients, takes the plain full-logits path instead.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

CHUNK = 64  # positions a chunk: 64 × 262k fp32 logits is ~67 MB


class ChosenTokens(NamedTuple):
    """Per scored position: the chosen token's log-probability (differentiable w.r.t. the hidden states), the entropy
    of the next-token distribution and whether the chosen token is its argmax (TRL's logged metrics)."""

    log_probs: torch.Tensor
    entropies: torch.Tensor
    hits: torch.Tensor


def backbone_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the transformer body that returns hidden states, the LM head) of a causal LM, LoRA-wrapped or not; both
    losses run them apart so the head sees only the positions they score. Refused when the model rescales logits past
    the head (Gemma 2's final soft-capping): scoring the head directly would train on logits it never produces."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(causal_lm.config, "final_logit_softcapping", None) is not None:
        raise ValueError(f"{type(causal_lm).__name__} soft-caps its logits; the head-only losses do not support it")
    return causal_lm.base_model, causal_lm.get_output_embeddings()


def chosen_token_log_probs(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
    temperature: float = 1.0,
    entropy_requires_grad: bool = False,
    chunk: int | None = CHUNK,
) -> ChosenTokens:
    """Log-probabilities of `targets` (N,) after `hidden` (N, H) through `head` at `temperature`, in the precision an
    enclosing autocast gives the head's matmul, as calling the head would. `chunk=None` takes the full-logits path
    (the baseline of benchmarks/sft_step.py)."""
    weight = head.weight
    full = chunk is None or entropy_requires_grad or not len(targets)
    if full or weight.requires_grad or getattr(head, "bias", None) is not None:
        return _full_logits(head(hidden), targets, temperature, entropy_requires_grad)
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    hidden, weight = hidden.to(dtype), weight.detach().to(dtype)
    return ChosenTokens(*_FrozenHeadLogProbs.apply(hidden, weight, targets, temperature, chunk))


def _full_logits(logits: torch.Tensor, targets: torch.Tensor, temperature: float, entropy_grad: bool) -> ChosenTokens:
    log_probs = (logits.float() / temperature).log_softmax(-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropies = -(log_probs.exp() * log_probs).sum(-1)
    with torch.no_grad():
        hits = log_probs.argmax(-1) == targets
    return ChosenTokens(log_probs.gather(-1, targets[:, None]).squeeze(-1), entropies, hits)


class _FrozenHeadLogProbs(torch.autograd.Function):
    """Chunked log-softmax through a frozen head; the hidden-state gradient is formed in the forward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk):
        parts: tuple[list, list, list, list] = ([], [], [], [])
        for start in range(0, hidden.size(0), chunk):
            chosen = targets[start : start + chunk, None]
            log_probs = (hidden[start : start + chunk] @ weight.T).float().div_(temperature).log_softmax(-1)
            probs = log_probs.exp()
            parts[0].append(log_probs.gather(-1, chosen).squeeze(-1))
            parts[1].append(-(probs * log_probs).sum(-1))
            parts[2].append(log_probs.argmax(-1) == chosen.squeeze(-1))
            if ctx.needs_input_grad[0]:
                one_hot_minus_probs = probs.neg_().scatter_add_(-1, chosen, torch.ones_like(chosen, dtype=probs.dtype))
                parts[3].append(one_hot_minus_probs.div_(temperature).to(weight.dtype) @ weight)
        log_probs, entropies, hits = (torch.cat(part) for part in parts[:3])
        ctx.mark_non_differentiable(entropies, hits)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(torch.cat(parts[3]))
        return log_probs, entropies, hits

    @staticmethod
    def backward(ctx, grad_log_probs, _grad_entropies, _grad_hits):
        (hidden_grads,) = ctx.saved_tensors
        return (grad_log_probs[:, None] * hidden_grads).to(hidden_grads.dtype), None, None, None, None
