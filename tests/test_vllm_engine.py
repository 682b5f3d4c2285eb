"""The vLLM engine: its fast-mode reading here; against the transformers engine only where vllm and CUDA exist."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from inference import load_moderator
from inference.vllm_engine import candidate_probabilities, require_vllm
from moderation.errors import UserError

LISTINGS = ["Premium IPTV, 18k channels, 12 months", "Hand-knitted wool scarf, blue", "x"]


@dataclass(frozen=True)
class Logprob:
    """The shape of vLLM's per-token entry (vllm.logprobs.Logprob): what the reader takes from it."""

    logprob: float
    rank: int | None = None


def test_candidate_probabilities_are_renormalized_over_the_candidates_in_their_order():
    returned = {7: Logprob(math.log(0.2)), 3: Logprob(math.log(0.6)), 9: Logprob(math.log(0.05))}
    assert candidate_probabilities(returned, [3, 7]) == pytest.approx([0.75, 0.25])
    assert candidate_probabilities(returned, [9, 3, 9]) == pytest.approx([0.05 / 0.7, 0.6 / 0.7, 0.05 / 0.7])


def test_a_candidate_vllm_did_not_return_is_a_loud_error():
    """Raw-logprob mode returns the top-k of the whole vocabulary, which can miss a candidate: never read as 0."""
    with pytest.raises(UserError, match="processed_logprobs"):
        candidate_probabilities({3: Logprob(-0.1)}, [3, 4])


def _vllm_runs() -> bool:
    try:
        require_vllm("bfloat16")
    except UserError:
        return False
    return True


GPU = _vllm_runs()


@pytest.mark.skipif(not GPU, reason="needs vllm and a CUDA GPU")
def test_vllm_reads_what_transformers_reads(tiny_model_dir):
    """Same prompt ids, same verdicts: greedy completions and fast-mode scores agree with the fp32 reference."""
    reference = load_moderator(tiny_model_dir)
    ours = load_moderator(tiny_model_dir, "vllm", "float32")
    for mine, theirs in zip(ours.moderate(LISTINGS), reference.moderate(LISTINGS), strict=True):
        assert mine.verdict == theirs.verdict
    for mine, theirs in zip(ours.fast_scorer().score(LISTINGS), reference.fast_scorer().score(LISTINGS), strict=True):
        assert mine.p_disallow == pytest.approx(theirs.p_disallow, abs=1e-3)
        assert list(mine.category_share.values()) == pytest.approx(list(theirs.category_share.values()), abs=1e-3)


@pytest.mark.skipif(GPU, reason="checks the refusal where vllm cannot run")
def test_without_cuda_or_vllm_the_engine_refuses_in_one_line(tiny_model_dir):
    with pytest.raises(UserError, match="engine vllm needs") as refused:
        load_moderator(tiny_model_dir, "vllm", "bfloat16")
    assert "\n" not in str(refused.value)
