"""The chunked frozen-head log-probabilities must be the full-logits ones, values and hidden-state gradients alike."""

from types import SimpleNamespace

import pytest
import torch
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from training.vocab_head import backbone_and_head, chosen_token_log_probs

VOCAB, HIDDEN, POSITIONS = 50, 8, 10


def reference(hidden, head, targets, temperature):
    logits = head(hidden).float() / temperature
    return selective_log_softmax(logits, targets), entropy_from_logits(logits), logits.argmax(-1) == targets


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False).requires_grad_(False)
    hidden = torch.randn(POSITIONS, HIDDEN, generator=generator, requires_grad=True)
    return hidden, head, torch.randint(0, VOCAB, (POSITIONS,), generator=generator)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunks_give_the_full_logits_values_and_gradients(inputs, temperature):
    hidden, head, targets = inputs
    upstream = torch.linspace(-1, 1, POSITIONS)  # a loss that weighs positions differently, as GRPO's advantages do
    want = reference(hidden, head, targets, temperature)
    (want_grad,) = torch.autograd.grad((want[0] * upstream).sum(), hidden)

    got = chosen_token_log_probs(hidden, head, targets, temperature, chunk=3)  # 4 chunks, the last one short
    (got_grad,) = torch.autograd.grad((got.log_probs * upstream).sum(), hidden)

    torch.testing.assert_close(got.log_probs, want[0])
    torch.testing.assert_close(got.entropies, want[1].detach())
    assert torch.equal(got.hits, want[2]) and not got.entropies.requires_grad
    torch.testing.assert_close(got_grad, want_grad)


def test_under_autocast_the_head_runs_in_the_autocast_precision(inputs):
    hidden, head, targets = inputs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = reference(hidden, head, targets, 1.0)[0]
        got = chosen_token_log_probs(hidden, head, targets, chunk=3).log_probs
    torch.testing.assert_close(got, want)  # the same bf16 logits, the same fp32 log-softmax over them


def test_a_trained_head_or_an_entropy_with_gradients_takes_the_full_logits_path(inputs):
    hidden, head, targets = inputs
    got = chosen_token_log_probs(hidden, head, targets, entropy_requires_grad=True)
    assert got.entropies.requires_grad
    head.requires_grad_(True)
    chosen_token_log_probs(hidden, head, targets).log_probs.sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_a_model_that_soft_caps_its_logits_is_refused():
    capped = SimpleNamespace(
        config=SimpleNamespace(final_logit_softcapping=30.0), base_model=None, get_output_embeddings=lambda: None
    )
    with pytest.raises(ValueError, match="soft-caps"):
        backbone_and_head(capped)
