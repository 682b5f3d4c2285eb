"""The shared-prefix loss forward must give the log-probs (and gradients) of scoring every row on its own."""

import pytest
import torch
from trl.trainer.utils import selective_log_softmax

from inference.models import load_model
from training.shared_prefix import grouped_logps_and_entropies, shared_prompts

GROUP = 3


def padded_batch(tokenizer):
    """Two prompts of different lengths (left-padded), three completions each (right-padded), shuffled as TRL does."""
    prompts = ["short listing", "a rather longer listing about presets and templates for designers"]
    completions = ["<answer>ALLOW</answer>", "DISALLOW: iptv", "ok", "no", "<reasoning>fine</reasoning>", "x y z"]
    p = tokenizer(prompts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    c = tokenizer(completions, padding=True, padding_side="right", add_special_tokens=False, return_tensors="pt")
    prompt_ids = p["input_ids"].repeat_interleave(GROUP, dim=0)
    prompt_mask = p["attention_mask"].repeat_interleave(GROUP, dim=0)
    input_ids = torch.cat([prompt_ids, c["input_ids"]], dim=1)
    attention_mask = torch.cat([prompt_mask, c["attention_mask"]], dim=1)
    order = torch.tensor([4, 0, 2, 5, 1, 3])
    return input_ids[order], attention_mask[order], c["input_ids"].size(1)


def row_by_row_logps(model, input_ids, attention_mask, completion_length, temperature):
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits
    logits = logits[:, -completion_length - 1 : -1] / temperature
    return selective_log_softmax(logits, input_ids[:, -completion_length:])


@pytest.mark.parametrize("frozen_head", [True, False], ids=["frozen head (LoRA): chunked", "trained head: full logits"])
def test_grouped_logps_and_gradients_match_row_by_row(tiny_model_dir, frozen_head):
    model, tokenizer = load_model(tiny_model_dir)
    model.train()
    model.get_output_embeddings().weight.requires_grad_(not frozen_head)
    input_ids, attention_mask, completion_length = padded_batch(tokenizer)
    groups = shared_prompts(input_ids, input_ids.size(1) - completion_length)
    firsts, inverse = groups
    prompt_length = input_ids.size(1) - completion_length
    assert firsts.numel() == 2 and torch.equal(input_ids[firsts[inverse], :prompt_length], input_ids[:, :prompt_length])
    mask = attention_mask[:, -completion_length:].bool()

    expected = row_by_row_logps(model, input_ids, attention_mask, completion_length, 0.8)
    expected[mask].sum().backward()
    expected_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()

    logps, entropies = grouped_logps_and_entropies(
        model, input_ids, attention_mask, completion_length, *groups, 0.8, entropy_requires_grad=False
    )
    logps[mask].sum().backward()

    torch.testing.assert_close(logps[mask], expected[mask], rtol=1e-4, atol=1e-4)
    assert entropies.shape == logps.shape and (entropies[mask] > 0).all()
    for got, want in zip((p.grad for p in model.parameters() if p.requires_grad), expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_rows_that_do_not_share_a_prompt_are_left_to_trl(tiny_model_dir):
    _, tokenizer = load_model(tiny_model_dir)
    input_ids, _, completion_length = padded_batch(tokenizer)
    distinct = input_ids[[0, 1]]  # rows 4 and 0 of the batch: one from each group
    assert shared_prompts(distinct, distinct.size(1) - completion_length) is None
