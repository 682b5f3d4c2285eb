"""`fast` mode on transformers: read the verdict from next-token probabilities in ONE forward pass, no generation.

The assistant turn is forced to `<reasoning>\n</reasoning>\n<answer>\nDISALLOW:` and the model runs once over it:
the logits at the position before `DISALLOW` give P(ALLOW) vs P(DISALLOW) (the first token of each word), and the
logits after `DISALLOW:` give how the model would name the category (the first token of each category id). Causal
attention means the forced `DISALLOW:` cannot influence the decision position, so both readings are honest and come
from the same pass. This needs no change to the output format the model was trained on: it is the format with an
empty reasoning. Serve and evals both score through here (`Moderator.fast_scorer` picks this or its engine's scorer).

The system prompt (policy, format instructions) is the same for every listing, so its key/value cache is computed
once at startup and shared by every batch: a request costs only its listing plus ~30 template tokens (~800 otherwise).

`compile=True` runs the cached pass through `torch.compile` (dynamic shapes): inductor fuses the norms, rotary
embeddings and cache copies that take about a third of a bf16 pass on CPU. Compiling costs 1-2 minutes on 2 cores,
paid in the constructor (a batch of one and one of two: dynamo specialises size 1), so it suits a server, not a
200-row eval; benchmarks/eval_throughput.py --compile measures both sides.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import Any, Protocol

from inference.fast_answer import ANSWER_PREFIX, CATEGORY_START, DISALLOW_WORD, Scores, answer_tokens, forced_answers
from moderation.errors import UserError
from moderation.policy import Policy


class PromptedModel(Protocol):
    """What the scorer reads from a transformers `inference.generate.Moderator`, whose `fast_scorer` builds it (so
    this module does not import that one back)."""

    model: Any
    tokenizer: Any
    policy: Policy

    def prompt(self, listing: str) -> str: ...


class FastScorer:
    """Scores listings with one forward pass each, in right-padded batches over a cached shared prompt prefix."""

    def __init__(self, moderator: PromptedModel, max_batch_tokens: int = 2048, compile: bool = False):
        import torch

        self.moderator = moderator
        self.tokenizer = moderator.tokenizer
        self.decoder = moderator.model.get_decoder()
        self.max_batch_tokens = max_batch_tokens
        self.category_ids = moderator.policy.category_ids

        # The tail tokens (forced answer + "DISALLOW:") must not depend on the listing; checked on two listings.
        first, second = (self._ids(text) for text in ("x", "A completely different listing, 12 words long."))
        self.disallow_len = len(self._encode(CATEGORY_START)) - len(self._encode(ANSWER_PREFIX))
        if first[-self.disallow_len - 8 :] != second[-self.disallow_len - 8 :]:
            raise UserError("fast mode: the tokenizer merges the forced answer with the listing; use mode=reasoning")
        self.decision_tokens, self.category_tokens = answer_tokens(self._encode, self.category_ids)
        # Only these rows of the output head are ever read, so only they are multiplied, in fp32 whatever the model's
        # dtype: bf16 logits round to ~1/128 of their size, enough to flip a category name near a cut.
        head = moderator.model.get_output_embeddings()
        self.decision_head = head_rows(head, self.decision_tokens)
        self.category_head = head_rows(head, self.category_tokens)

        common = next((i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), len(first))
        self.prefix = first[: max(common - 1, 0)]  # one token of margin: the last shared token could merge
        # transformers renamed `past_key_values` to `cache` (5.2x); the GPU image's older version has only the former.
        parameters = inspect.signature(self.decoder.forward).parameters
        self.cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        self.device = moderator.model.device
        with torch.inference_mode():
            output = self.decoder(input_ids=torch.tensor([self.prefix], device=self.device), use_cache=True)
            cache = getattr(output, "cache", None) or output.past_key_values
        self.prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        self.uncached = 0  # listings whose tokens did not start with the cached prefix (scored without it)
        self.cached_decoder = self.decoder
        self.compile_s = 0.0
        if compile:
            started = time.perf_counter()
            self.cached_decoder = torch.compile(self.decoder, dynamic=True)
            self.score(["Compile warm-up: a batch of one."])
            self.score(["Warm-up, a batch of two:", "the second listing, a few words longer than the first."])
            self.compile_s = time.perf_counter() - started

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _ids(self, listing: str, answer: str = ANSWER_PREFIX) -> list[int]:
        return self._encode(self.moderator.prompt(listing) + answer + DISALLOW_WORD)

    def score(self, listings: Sequence[str], reasonings: Sequence[str] | None = None) -> list[Scores]:
        """Score listings, each after its reasoning when given (else fast mode's empty one); batches are formed by
        length so padding stays small and memory bounded."""
        started = time.perf_counter()
        answers = forced_answers(listings, reasonings)
        ids = [self._ids(text, answer) for text, answer in zip(listings, answers, strict=True)]
        p = len(self.prefix)
        cached = [i for i, row in enumerate(ids) if row[:p] == self.prefix and len(row) > p]
        results: dict[int, tuple[float, list[float]]] = {}
        order = sorted(cached, key=lambda i: len(ids[i]))
        batch: list[int] = []
        for index in order:
            if batch and (len(batch) + 1) * (len(ids[index]) - p) > self.max_batch_tokens:
                results.update(self._forward([ids[i][p:] for i in batch], batch, cached=True))
                batch = []
            batch.append(index)
        if batch:
            results.update(self._forward([ids[i][p:] for i in batch], batch, cached=True))
        for index in sorted(set(range(len(ids))) - set(cached)):
            self.uncached += 1
            results.update(self._forward([ids[index]], [index], cached=False))
        latency = (time.perf_counter() - started) / max(len(listings), 1)
        return [
            Scores(results[i][0], dict(zip(self.category_ids, results[i][1], strict=True)), latency)
            for i in range(len(listings))
        ]

    def _forward(self, rows: list[list[int]], indices: list[int], cached: bool) -> dict[int, tuple[float, list[float]]]:
        import torch
        from transformers import DynamicCache

        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id
        # Right padding: with causal attention no real token can see the pads after it, so no mask is needed.
        input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], device=self.device)
        offset = len(self.prefix) if cached else 0
        kwargs = {"position_ids": torch.arange(offset, offset + width, device=self.device).expand(len(rows), -1)}
        if cached:
            kv = [(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in self.prefix_kv]
            kwargs[self.cache_kwarg] = DynamicCache(ddp_cache_data=kv)
        decoder = self.cached_decoder if cached else self.decoder  # compiled for the cached pass only (the common one)
        with torch.inference_mode():
            hidden = decoder(input_ids=input_ids, use_cache=cached, **kwargs).last_hidden_state
            last = torch.tensor([len(row) - 1 for row in rows], device=self.device)
            batch = torch.arange(len(rows), device=self.device)
            decision = torch.nn.functional.linear(hidden[batch, last - self.disallow_len].float(), *self.decision_head)
            category = torch.nn.functional.linear(hidden[batch, last].float(), *self.category_head)
            p_disallow = decision.softmax(-1)[:, 1].tolist()
            shares = category.softmax(-1).tolist()
        return {index: (p_disallow[j], shares[j]) for j, index in enumerate(indices)}


def head_rows(head, tokens: Sequence[int]):
    """(weight, bias) of the output head `head` for `tokens` alone, in fp32."""
    weight = head.weight[list(tokens)].detach().float()
    bias = None if head.bias is None else head.bias[list(tokens)].detach().float()
    return weight, bias
