"""The answer-only SFT loss must equal the model's own causal-LM loss on the same labels, gradients included."""

import torch
from peft import LoraConfig, get_peft_model

from moderation.models import load_model
from training.answer_only_sft import answer_only_loss


def labelled_batch(tokenizer):
    """Two right-padded rows whose labels score only the answer, as TRL's completion-only collator builds them."""
    prompts, answers = ["short listing", "a longer listing about presets for designers"], ["ALLOW", "DISALLOW: iptv"]
    texts = [p + " " + a for p, a in zip(prompts, answers, strict=True)]
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    answer_lengths = [len(tokenizer(" " + a, add_special_tokens=False)["input_ids"]) for a in answers]
    width = max(map(len, rows))
    input_ids = torch.full((2, width), tokenizer.pad_token_id)
    attention_mask = torch.zeros((2, width), dtype=torch.long)
    labels = torch.full((2, width), -100)
    for i, (row, n) in enumerate(zip(rows, answer_lengths, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        labels[i, len(row) - n : len(row)] = torch.tensor(row[-n:])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def test_answer_only_loss_and_gradients_match_the_full_logits_loss(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    batch = labelled_batch(tokenizer)
    lora = [p for p in model.parameters() if p.requires_grad]

    reference = model(**batch).loss
    expected = torch.autograd.grad(reference, lora)
    loss, logits, targets = answer_only_loss(model, batch)
    got = torch.autograd.grad(loss, lora)

    assert targets.numel() == int((batch["labels"] != -100).sum()) == logits.size(0)
    torch.testing.assert_close(loss, reference)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


def test_num_items_in_batch_sets_the_denominator(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    batch = labelled_batch(tokenizer)
    mean, _, targets = answer_only_loss(model, batch)
    summed, _, _ = answer_only_loss(model, batch, num_items_in_batch=1)
    torch.testing.assert_close(summed, mean * targets.numel())
