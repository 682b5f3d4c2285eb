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
    """One chat completion over the moderator's model, on its engine (`Moderator.chat_turn`); greedy at temperature 0,
    else sampled from the full distribution."""
    tokenizer = moderator.tokenizer
    prompt = chat_ids(tokenizer, messages)
    new, stopped = moderator.chat_turn(prompt, max_tokens, temperature)
    text = tokenizer.decode(new, skip_special_tokens=True)
    finish = "stop" if stopped or len(new) < max_tokens else "length"
    return Completion(text=text, prompt_tokens=len(prompt), completion_tokens=len(new), finish_reason=finish)


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
