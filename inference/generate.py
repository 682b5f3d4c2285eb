"""Batched moderation with a local model: prompt → generate → parse. Shared by the demo, evals and serving."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from moderation.errors import UserError
from moderation.policy import Policy
from moderation.prompt import PromptConfig, build_messages
from moderation.verdict import Verdict, parse

ANSWER_END = "</answer>"  # every engine stops a completion here


@dataclass(frozen=True)
class Moderation:
    """One listing's result: the raw completion, its parsed verdict, and this item's share of batch latency."""

    completion: str
    verdict: Verdict
    latency_s: float


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    batch_size: int = 8
    temperature: float = 0.0  # 0 means greedy


class Moderator:
    """Moderates listings with a causal LM under a policy, in left-padded batches.

    >>> moderator = Moderator(model, tokenizer, load_policy("marketplace"))
    >>> moderator.moderate(["Premium IPTV, 18k channels"])[0].verdict.decision
    """

    def __init__(
        self,
        model,
        tokenizer,
        policy: Policy,
        prompt_config: PromptConfig | None = None,
        generation: GenerationConfig | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.policy = policy
        self.prompt_config = prompt_config or PromptConfig()
        self.generation = generation or GenerationConfig()

    def prompt(self, listing: str) -> str:
        messages = build_messages(self.policy, listing, self.tokenizer, self.prompt_config)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, listing: str) -> list[int]:
        """Token ids of `prompt(listing)`; every engine feeds these, so all engines see the same tokens."""
        return self.tokenizer(self.prompt(listing), add_special_tokens=False)["input_ids"]

    def moderate(self, listings: Sequence[str]) -> list[Moderation]:
        return [result for batch in self.moderate_batches(listings) for result in batch]

    def moderate_batches(self, listings: Sequence[str]) -> Iterator[list[Moderation]]:
        """Yield results batch by batch, so callers can show progress and save as they go."""
        size = self.generation.batch_size
        for start in range(0, len(listings), size):
            yield self._moderate_batch(listings[start : start + size])

    def _moderate_batch(self, listings: Sequence[str]) -> list[Moderation]:
        started = time.perf_counter()
        completions = self.complete([self.prompt_ids(text) for text in listings])
        latency = (time.perf_counter() - started) / len(listings)
        known = self.policy.category_ids
        return [Moderation(text, parse(text, known), latency) for text in completions]

    def complete(self, prompts: list[list[int]]) -> list[str]:
        """The completion of each tokenized prompt, up to and including `</answer>`: the engine-specific step."""
        import torch

        self.tokenizer.padding_side = "left"
        inputs = self.tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to(self.model.device)
        sampling = self.generation.temperature > 0
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.generation.max_new_tokens,
                do_sample=sampling,
                temperature=self.generation.temperature if sampling else None,
                top_p=None,
                top_k=None,
                stop_strings=[ANSWER_END],
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def chat_turn(self, prompt: list[int], max_tokens: int, temperature: float) -> tuple[list[int], bool]:
        """One open-ended chat turn after `prompt` (no `</answer>` stop): (new token ids, whether the model ended its
        turn); greedy at temperature 0, else sampled from the full distribution. Serves `/v1/chat/completions`."""
        import torch

        sampling = temperature > 0
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=torch.tensor([prompt], device=self.model.device),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=self.model.device),
                max_new_tokens=max_tokens,
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_p=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = output[0, len(prompt) :].tolist()
        return new, bool(new) and new[-1] == self.tokenizer.eos_token_id

    def fast_scorer(self, compile: bool = False):
        """The one-pass scorer of this engine (`.score(listings) -> list[Scores]`, see inference.fast_answer);
        `compile`: torch.compile the transformers pass (other engines run their own kernels)."""
        from inference.fast_scoring import FastScorer

        return FastScorer(self, compile=compile)


def refuse_compile(compile: bool) -> None:
    """Engines with their own kernels have nothing for torch.compile to fuse: asking for it is a user error."""
    if compile:
        raise UserError("compile applies to the transformers engine (CTranslate2 and vLLM run their own kernels)")


def end_of_turn_ids(tokenizer) -> list[int]:
    """End-of-turn ids, for engines that stop on ids: the tokenizer's eos plus the `<|im_end|>`-style tokens chat
    templates close turns with."""
    ids = [tokenizer.eos_token_id]
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.append(token_id)
    return [i for i in ids if i is not None]
