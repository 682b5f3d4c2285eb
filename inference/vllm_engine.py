"""vLLM engine (CUDA): moderation and fast-mode scoring through vLLM's offline `LLM`, for evals and serving on a GPU.

The same prompt ids as every engine (`Moderator.prompt_ids`), the same parser, the same fast-mode reading: vLLM is
started with `logprobs_mode="processed_logprobs"`, so a one-token request restricted by `allowed_token_ids` returns
log-probabilities renormalized over exactly the candidate tokens (ALLOW/DISALLOW, or the categories' first tokens),
which is what the transformers and CTranslate2 scorers compute from raw logits; with vLLM's default (raw) mode those
candidates could fall outside the top-k it returns. `generation_config="vllm"` keeps a checkpoint's own sampling
defaults (top-k, top-p) from silently applying. Automatic prefix caching shares the system prompt across listings.

Not exercised on this project's CPU machines (no CUDA, no vllm wheel): tests/test_vllm_engine.py runs only where both
are present.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Sequence
from pathlib import Path

from inference.compute_types import compute_type_problem
from inference.fast_answer import DISALLOW_WORD, Scores, answer_tokens, forced_answer_ids
from inference.generate import ANSWER_END, GenerationConfig, Moderator, end_of_turn_ids, refuse_compile
from inference.models import load_tokenizer
from moderation.errors import UserError
from moderation.policy import Policy
from moderation.prompt import PromptConfig


def require_vllm(compute_type: str) -> None:
    """A one-line UserError unless vllm is installed, a CUDA device is visible and `compute_type` is a GPU type."""
    if importlib.util.find_spec("vllm") is None:
        raise UserError(
            "engine vllm needs a CUDA machine with vllm installed (pip install -e '.[gpu]'); use --engine ct2 on CPU"
        )
    import torch

    if not torch.cuda.is_available():
        raise UserError("engine vllm needs a CUDA GPU and none is visible; use --engine ct2 or transformers on CPU")
    if problem := compute_type_problem("vllm", compute_type):
        raise UserError(problem)


class VLLMModerator(Moderator):
    """`Moderator` whose completions come from `vllm.LLM.generate` on the prompt ids: greedy (or sampled at the
    configured temperature), stopped at `</answer>` or end of turn. vLLM schedules the whole list itself (continuous
    batching), so `generation.batch_size` only sets how often progress is reported."""

    def complete(self, prompts: list[list[int]]) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=self.generation.temperature,
            max_tokens=self.generation.max_new_tokens,
            stop=[ANSWER_END],
            include_stop_str_in_output=True,
            stop_token_ids=end_of_turn_ids(self.tokenizer),
            skip_special_tokens=True,
        )
        outputs = self.model.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]

    def chat_turn(self, prompt: list[int], max_tokens: int, temperature: float) -> tuple[list[int], bool]:
        """`Moderator.chat_turn` on vLLM, stopping at the same end-of-turn tokens as moderation."""
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=temperature,
            max_tokens=max_tokens,
            stop_token_ids=end_of_turn_ids(self.tokenizer),
            detokenize=False,
        )
        (output,) = self.model.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)
        return list(output.outputs[0].token_ids), output.outputs[0].finish_reason == "stop"

    def fast_scorer(self, compile: bool = False) -> VLLMFastScorer:
        refuse_compile(compile)
        return VLLMFastScorer(self)


def load_vllm_moderator(
    model_dir: str | Path,
    policy: Policy,
    prompt_config: PromptConfig | None,
    generation: GenerationConfig | None,
    compute_type: str = "bfloat16",
) -> VLLMModerator:
    """Start vLLM on `model_dir` (a merged run model or any HF folder/id) in `compute_type` weights."""
    require_vllm(compute_type)
    from vllm import LLM

    llm = LLM(
        model=str(model_dir),
        dtype=compute_type,
        seed=0,
        enable_prefix_caching=True,
        generation_config="vllm",
        logprobs_mode="processed_logprobs",
    )
    return VLLMModerator(llm, load_tokenizer(model_dir), policy, prompt_config, generation)


class VLLMFastScorer:
    """Fast mode on vLLM: one generated token after `<answer>\\n` restricted to ALLOW/DISALLOW's first tokens, and one
    after `DISALLOW:` restricted to the categories' first tokens, both requests for every listing in one call."""

    def __init__(self, moderator: VLLMModerator):
        self.moderator = moderator
        encode = self._encode
        self.disallow = encode(DISALLOW_WORD)
        self.decision_tokens, self.category_tokens = answer_tokens(encode, moderator.policy.category_ids)
        self.decision_read, self.category_read = map(_read_one_of, (self.decision_tokens, self.category_tokens))

    def _encode(self, text: str) -> list[int]:
        return self.moderator.tokenizer(text, add_special_tokens=False)["input_ids"]

    def score(self, listings: Sequence[str], reasonings: Sequence[str] | None = None) -> list[Scores]:
        """Score listings, each after its reasoning when given (else fast mode's empty one)."""
        started = time.perf_counter()
        answers = forced_answer_ids(listings, reasonings, self._encode)
        rows = [self.moderator.prompt_ids(text) + answer for text, answer in zip(listings, answers, strict=True)]
        prompts = [{"prompt_token_ids": row} for row in rows]
        prompts += [{"prompt_token_ids": row + self.disallow} for row in rows]
        params = [self.decision_read] * len(rows) + [self.category_read] * len(rows)
        outputs = self.moderator.model.generate(prompts, params, use_tqdm=False)
        latency = (time.perf_counter() - started) / max(len(listings), 1)
        ids = self.moderator.policy.category_ids
        scores = []
        for decision, category in zip(outputs[: len(rows)], outputs[len(rows) :], strict=True):
            p_disallow = candidate_probabilities(decision.outputs[0].logprobs[0], self.decision_tokens)[1]
            shares = candidate_probabilities(category.outputs[0].logprobs[0], self.category_tokens)
            scores.append(Scores(p_disallow, dict(zip(ids, shares, strict=True)), latency))
        return scores


def _read_one_of(candidates: list[int]):
    """Sampling parameters for one greedy token among `candidates` that return the log-probability of each."""
    from vllm import SamplingParams

    unique = sorted(set(candidates))
    return SamplingParams(
        temperature=0.0, max_tokens=1, allowed_token_ids=unique, logprobs=len(unique), detokenize=False
    )


def candidate_probabilities(logprobs: dict, candidates: Sequence[int]) -> list[float]:
    """Each candidate token's probability from one position's returned log-probabilities ({token id: Logprob}),
    renormalized over the candidates (a no-op when vLLM already restricted them, a guard when it did not)."""
    missing = [token for token in candidates if token not in logprobs]
    if missing:
        raise UserError(
            f"engine vllm returned no log-probability for candidate tokens {missing}: the engine must run with "
            "logprobs_mode='processed_logprobs' (inference.vllm_engine.load_vllm_moderator sets it)"
        )
    values = [logprobs[token].logprob for token in candidates]
    top = max(values)
    weights = [math.exp(value - top) for value in values]
    total = sum(weights)
    return [weight / total for weight in weights]
