"""The one way the project builds a client for an OpenAI-compatible endpoint (vLLM, llama.cpp, a hosted API).

data_gen's synth backend, the endpoint baseline and the LLM judge all talk to such endpoints; they share this so the key
is read under one rule (moderation.secrets: only a `*_API_KEY` / `*_TOKEN` variable) and retries are the SDK's own:
timeouts, connection errors, 408/409/429 and 5xx are retried `max_retries` times with exponential backoff and jitter,
honouring Retry-After. Nothing here retries by hand.
"""

from __future__ import annotations

import os

import httpx
import openai

from moderation.errors import UserError
from moderation.secrets import check_api_key_env


def openai_client(
    base_url: str,
    api_key_env: str = "OPENAI_API_KEY",
    *,
    timeout_s: float,
    max_retries: int,
    http_client: httpx.Client | None = None,
) -> openai.OpenAI:
    """A client for `base_url` (…/v1) with the key from `api_key_env` (a local server accepts any key, so an unset
    variable is allowed). `max_retries`: retries after the first attempt; `http_client`: e.g. one with event hooks."""
    try:
        check_api_key_env(api_key_env)
    except ValueError as error:
        raise UserError(str(error)) from None
    return openai.OpenAI(
        base_url=base_url,
        api_key=os.environ.get(api_key_env) or "not-needed",
        timeout=timeout_s,
        max_retries=max_retries,
        http_client=http_client,
    )


def describe(error: openai.APIError) -> str:
    """One line for a failed request (after the SDK's retries): the error's kind and status, never a response body
    spread over many lines."""
    status = getattr(error, "status_code", None)
    message = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}" + (f" (HTTP {status})" if status else "") + f": {message}"
