"""moderation.openai_client: the one constructor of OpenAI-compatible clients keeps the key rule, passes retries on."""

from __future__ import annotations

import openai
import pytest

from moderation.errors import UserError
from moderation.openai_client import describe, openai_client


def test_key_comes_from_a_key_variable_only(monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "sk-local")
    client = openai_client("http://127.0.0.1:9/v1", "VLLM_API_KEY", timeout_s=5, max_retries=2)
    assert client.api_key == "sk-local" and client.max_retries == 2 and client.timeout == 5
    monkeypatch.delenv("VLLM_API_KEY")
    assert openai_client("http://127.0.0.1:9/v1", "VLLM_API_KEY", timeout_s=5, max_retries=0).api_key == "not-needed"
    with pytest.raises(UserError, match="_API_KEY or _TOKEN"):
        openai_client("http://127.0.0.1:9/v1", "AWS_SECRET_ACCESS_KEY", timeout_s=5, max_retries=0)


def test_a_failure_is_described_in_one_line():
    client = openai_client("http://127.0.0.1:9/v1", timeout_s=0.5, max_retries=0)  # nothing listens on port 9
    with pytest.raises(openai.APIConnectionError) as raised:
        client.models.list()
    line = describe(raised.value)
    assert line.startswith("APIConnectionError: ") and "\n" not in line
