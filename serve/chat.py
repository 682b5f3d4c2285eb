"""`POST /v1/chat/completions` (non-streaming) over the loaded model: OpenAI's request and response shapes.

The messages go through the model's own chat template, but their content is tokenized as data: a `<|im_end|>` typed
by a client stays the characters `<|im_end|>`, never the control token, so no message can close its turn or open
another role's. The template is rendered with a placeholder per message, its own text tokenized as usual (its control
tokens are real), and each content tokenized with special-token splitting on. Generation runs on whichever engine
serves the moderator: transformers' `generate`, CTranslate2's `generate_batch` (`--engine ct2`) or vLLM's
`LLM.generate` (`--engine vllm`, CUDA), same prompt ids.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients may send `name` and other fields we do not use

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    stream: bool = False


class Completion(BaseModel):
    """What the engine returns for one chat request."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


def chat_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the chat-templated conversation ending in an open assistant turn; content is data."""
    marks = [f"\x00{uuid.uuid4().hex}\x00" for _ in messages]
    placeholders = [{"role": m["role"], "content": mark} for m, mark in zip(messages, marks, strict=True)]
    rendered = tokenizer.apply_chat_template(placeholders, tokenize=False, add_generation_prompt=True)
    ids: list[int] = []
    for message, mark in zip(messages, marks, strict=True):
        head, found, rendered = rendered.partition(mark)
        if not found:
            raise ValueError("the chat template dropped or rewrote a message")
        ids += tokenizer(head, add_special_tokens=False)["input_ids"]
        ids += tokenizer(message["content"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids + tokenizer(rendered, add_special_tokens=False)["input_ids"]


def complete(moderator, messages: list[dict[str, str]], max_tokens: int, temperature: float = 0.0) -> Completion:
    """One chat completion over the moderator's model, on its engine; greedy at temperature 0, else sampled from the
    full distribution."""
    from inference.ct2 import CT2Moderator
    from inference.vllm_engine import VLLMModerator

    tokenizer = moderator.tokenizer
    prompt = chat_ids(tokenizer, messages)
    engines = {CT2Moderator: _ct2_generate, VLLMModerator: _vllm_generate}
    generate = next((fn for kind, fn in engines.items() if isinstance(moderator, kind)), _transformers_generate)
    new, stopped = generate(moderator, prompt, max_tokens, temperature)
    text = tokenizer.decode(new, skip_special_tokens=True)
    finish = "stop" if stopped or len(new) < max_tokens else "length"
    return Completion(text=text, prompt_tokens=len(prompt), completion_tokens=len(new), finish_reason=finish)


def _transformers_generate(moderator, prompt: list[int], max_tokens: int, temperature: float) -> tuple[list[int], bool]:
    """(new token ids, whether the model ended its turn)."""
    import torch

    model, tokenizer = moderator.model, moderator.tokenizer
    sampling = temperature > 0
    with torch.inference_mode():
        output = model.generate(
            input_ids=torch.tensor([prompt], device=model.device),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=model.device),
            max_new_tokens=max_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
        )
    new = output[0, len(prompt) :].tolist()
    return new, bool(new) and new[-1] == tokenizer.eos_token_id


def _ct2_generate(moderator, prompt: list[int], max_tokens: int, temperature: float) -> tuple[list[int], bool]:
    """(new token ids, whether the model ended its turn), stopping at the same end-of-turn tokens as moderation."""
    sampling = temperature > 0
    (result,) = moderator.model.generate_batch(
        [moderator.tokenizer.convert_ids_to_tokens(prompt)],
        max_length=max_tokens,
        include_prompt_in_result=False,
        end_token=moderator.end_tokens,
        return_end_token=True,
        sampling_topk=0 if sampling else 1,
        sampling_temperature=temperature if sampling else 1.0,
    )
    new = result.sequences_ids[0]
    return new, bool(new) and moderator.tokenizer.convert_ids_to_tokens(new[-1]) in moderator.end_tokens


def _vllm_generate(moderator, prompt: list[int], max_tokens: int, temperature: float) -> tuple[list[int], bool]:
    """(new token ids, whether the model ended its turn), stopping at the same end-of-turn tokens as moderation."""
    from vllm import SamplingParams

    from inference.generate import end_of_turn_ids

    params = SamplingParams(
        temperature=temperature,
        max_tokens=max_tokens,
        stop_token_ids=end_of_turn_ids(moderator.tokenizer),
        detokenize=False,
    )
    (output,) = moderator.model.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)
    return list(output.outputs[0].token_ids), output.outputs[0].finish_reason == "stop"


def response_body(completion: Completion, model: str, created: int) -> dict:
    """OpenAI's chat.completion object."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "finish_reason": completion.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
    }
