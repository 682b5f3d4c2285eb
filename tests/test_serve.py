"""The HTTP API on a tiny random model, served by a real uvicorn server on a loopback port in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import httpx
import pytest
from pydantic import BaseModel, ConfigDict

from inference.generate import GenerationConfig
from inference.runs import load_moderator
from serve.app import ServeConfig, create_app
from serve.engine import Batcher, Closing, Engine, Overloaded, Result, load_engine


class OpenAIResult(BaseModel):
    """OpenAI's moderation result, written independently of serve.app (extra fields allowed, as OpenAI adds them)."""

    model_config = ConfigDict(extra="allow", strict=True)
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]


class OpenAIResponse(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    id: str
    model: str
    results: list[OpenAIResult]


@contextlib.contextmanager
def running(app):
    """Serve `app` on 127.0.0.1 (free port) in a thread; yield its base URL; stop it gracefully."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and server.servers) and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


LIMITS = {
    "max_inputs": 4,
    "max_input_chars": 300,
    "max_body_bytes": 4000,
    "max_new_tokens": 6,
    "model_name": "tiny",
    "mode": "fast",  # a random model: fast mode keeps these tests quick; it is allowed explicitly
    "allow_unvalidated_fast": True,
    "client_modes": ["fast", "reasoning"],
}


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(load_moderator(tiny_model_dir, generation=GenerationConfig(max_new_tokens=6, batch_size=8)))


@pytest.fixture(scope="module")
def url(engine, tiny_model_dir):
    with running(create_app(engine, ServeConfig(model=str(tiny_model_dir), **LIMITS))) as base:
        yield base


def post(url: str, body, **kwargs) -> httpx.Response:
    if isinstance(body, bytes | str):
        return httpx.post(f"{url}/v1/moderations", content=body, headers={"content-type": "application/json"}, **kwargs)
    return httpx.post(f"{url}/v1/moderations", json=body, **kwargs)


def test_single_input_has_the_openai_shape(url, policy):
    response = post(url, {"input": "Buy cheap IPTV 10000 channels"})
    assert response.status_code == 200
    body = OpenAIResponse.model_validate_json(response.text)
    assert body.model == "tiny" and body.id.startswith("modr-") and len(body.results) == 1
    result = body.results[0]
    assert list(result.categories) == list(policy.category_ids) == list(result.category_scores)
    assert all(0.0 <= score <= 1.0 for score in result.category_scores.values())
    assert result.flagged == any(result.categories.values())


def test_list_input_keeps_order_and_matches_single_requests(url):
    texts = ["Poker night art print", "Fixed-match betting tips, VIP Telegram", "Lightroom presets"]
    together = post(url, {"input": texts, "model": "tiny"}).json()["results"]
    alone = [post(url, {"input": text}).json()["results"][0] for text in texts]
    assert len(together) == 3
    for batched, single in zip(together, alone, strict=True):
        for category, score in single["category_scores"].items():
            assert batched["category_scores"][category] == pytest.approx(score, abs=1e-4)


def test_reasoning_mode_generates_and_reports_parse_status(url):
    result = post(url, {"input": "Premium IPTV 12 months", "mode": "reasoning"}).json()["results"][0]
    assert isinstance(result["reasoning"], str)
    assert result["status"] != "ok"  # a random model does not follow the format; the status says why
    assert result["flagged"] is True  # no readable verdict is flagged for review (on_parse_failure=flag)
    assert set(result["category_scores"].values()) == {0.0}


def test_official_openai_client(url):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    response = client.moderations.create(input=["Buy cheap IPTV", "A knitting pattern"], model="tiny")
    assert len(response.results) == 2
    assert isinstance(response.results[0].flagged, bool)
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_health_and_models(url):
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny" and health["default_mode"] == "fast"
    assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "tiny"


def test_compute_type_bfloat16_serves_bf16_weights_and_says_so(tiny_model_dir):
    import torch

    config = ServeConfig(model=str(tiny_model_dir), compute_type="bfloat16", **LIMITS)
    engine = load_engine(config)
    assert engine.moderator.model.dtype == torch.bfloat16
    with running(create_app(engine, config)) as base:
        health = httpx.get(f"{base}/health").json()
        flagged = post(base, {"input": "Premium IPTV, 12 months"}).json()["results"][0]["flagged"]
    assert (health["engine"], health["compute_type"]) == ("transformers", "bfloat16")
    assert isinstance(flagged, bool)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ('{"input": "Buy cheap', 400, "invalid_json"),
        (b'{"input": "caf\xe9"}', 400, "invalid_encoding"),
        ("", 400, "invalid_json"),
        ({"input": ""}, 422, "invalid_request"),
        ({"input": []}, 422, "invalid_request"),
        ({"input": 42}, 422, "invalid_request"),
        ({"input": ["ok", None]}, 422, "invalid_request"),
        ({"inputs": "typo"}, 422, "invalid_request"),
        ({"input": "x", "mode": "slow"}, 422, "invalid_request"),
        ('{"input": "\\ud800"}', 422, "invalid_request"),
        ("[1, 2]", 422, "invalid_request"),
        ({"input": ["a"] * 5}, 413, "too_many_inputs"),
        ({"input": "y" * 301}, 413, "input_too_long"),
        ({"input": ["short"] * 3 + ["z" * 4000]}, 413, "body_too_large"),
        ({"input": "x", "model": "gpt-4o"}, 404, "model"),
    ],
)
def test_client_errors_are_4xx_json_without_traces(url, body, status, code):
    response = post(url, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and "Traceback" not in response.text


def test_unknown_route_and_method_answer_json(url):
    assert httpx.get(f"{url}/v1/nothing").json()["error"]["message"] == "Not Found"
    assert httpx.get(f"{url}/v1/moderations").status_code == 405


def test_many_parallel_requests_are_all_answered_in_batches(url):
    before = httpx.get(f"{url}/health").json()

    async def burst():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            requests = [client.post("/v1/moderations", json={"input": f"listing number {i}"}) for i in range(40)]
            return await asyncio.gather(*requests)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 40
    after = httpx.get(f"{url}/health").json()
    assert after["listings"] - before["listings"] == 40
    assert after["batches"] - before["batches"] < 40  # some requests shared a model call


class SlowEngine:
    """Stands in for Engine: each model call takes `delay` seconds."""

    def __init__(self, policy, delay: float):
        self.moderator = type("M", (), {"policy": policy})()
        self.delay = delay

    def run(self, texts, mode, thresholds=None):
        time.sleep(self.delay)
        return [Result(False, {}, {}, None, "ok") for _ in texts]


def test_overload_and_timeout_answer_429_and_503(policy):
    config = ServeConfig(max_batch_size=1, max_queue=2, request_timeout_s=0.5)
    with running(create_app(SlowEngine(policy, 0.3), config)) as base:

        async def burst():
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                return await asyncio.gather(*[client.post("/v1/moderations", json={"input": "x"}) for _ in range(8)])

        responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429, 503} and 429 in statuses and 200 in statuses, statuses
    assert all(r.json()["error"]["code"] in {"overloaded", "timeout"} for r in responses if r.status_code != 200)
    assert all(r.headers["retry-after"] for r in responses if r.status_code != 200)


def test_health_is_not_idle_while_a_timed_out_requests_batch_still_runs(policy):
    config = ServeConfig(max_batch_size=1, request_timeout_s=0.2)
    with running(create_app(SlowEngine(policy, 1.0), config)) as base:
        timed_out = httpx.post(f"{base}/v1/moderations", json={"input": "x"}, timeout=30)
        during = httpx.get(f"{base}/health").json()["idle"]
        deadline = time.monotonic() + 10
        while not (after := httpx.get(f"{base}/health").json()["idle"]) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert timed_out.status_code == 503 and during is False and after is True


def test_batcher_is_all_or_nothing_and_closes(policy):
    async def scenario():
        batcher = Batcher(SlowEngine(policy, 0.05), max_batch_size=4, max_wait_ms=1, max_queue=3)
        await batcher.start()
        with pytest.raises(Overloaded):
            batcher.submit(["a", "b", "c", "d"], "fast")
        assert batcher.queued == 0
        futures = batcher.submit(["a", "b", "c"], "fast")
        await batcher.close(drain_timeout_s=5)
        assert all(f.done() and not f.exception() for f in futures)  # queued work finished before shutdown
        with pytest.raises(Closing):
            batcher.submit(["e"], "fast")
        return batcher.stats

    stats = asyncio.run(scenario())
    assert stats.items == 3 and stats.batches == 1
