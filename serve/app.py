"""The HTTP API: `POST /v1/moderations` in the shape of OpenAI's moderation endpoint, `GET /health`, `GET /v1/models`.

Every error is a JSON body `{"error": {"message", "type", "param", "code"}}` (OpenAI's shape) with a 4xx status for
anything the client sent (malformed JSON 400, JSON nested deeper than `max_json_depth` 400, non-UTF-8 400, too large
413, invalid fields 422, unknown model 404, a mode the server does not offer 403, no API key 401, a body not sent within
`body_timeout_s` 408), 429 when the queue or the request limit is full, 502 when the model's answer is unreadable and
`on_parse_failure=error`, 503 on timeout or shutdown. No stack trace ever reaches a response or the log for a client's
fault: a client that disconnects or stalls is one log line.

What a result's `category_scores` mean depends on the mode. fast: P(DISALLOW) x the category's share of the model's
next-token probability after `DISALLOW:` (they sum to P(DISALLOW)); `flagged` is P(DISALLOW) >= the threshold (the
request's `threshold`, else the server's). reasoning: the same, read right after the reasoning the model wrote
(inference.reasoned); a flagged listing names the categories its written answer named, if it named any.
The engine (`--engine transformers|ct2`) changes speed, not this contract; /health says which one runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from inference.compute_types import weights_type
from moderation.errors import UserError
from serve.chat import ChatRequest, complete, response_body
from serve.engine import Batcher, Closing, Engine, EngineConfig, Mode, Overloaded
from serve.guard import Guard
from serve.validation import check_modes, measured, serving_threshold

log = logging.getLogger("serve")


class ServeConfig(EngineConfig):
    """Everything the server needs; `python -m serve --help` shows each field as a flag."""

    model_name: str | None = Field(None, description="id reported in responses and /v1/models (default: --model)")
    host: str = Field("127.0.0.1", description="bind address")
    port: int = Field(8000, ge=0, le=65535)
    max_wait_ms: float = Field(5.0, ge=0, description="how long a batch keeps collecting after its first listing")
    max_queue: int = Field(256, ge=1, description="listings waiting at most; beyond that requests get 429")
    max_inputs: int = Field(32, ge=1, description="listings per request at most (413 beyond)")
    max_input_chars: int = Field(20_000, ge=1, description="characters per listing at most (413 beyond)")
    max_body_bytes: int = Field(1_048_576, ge=1, description="request body size at most (413 beyond)")
    request_timeout_s: float = Field(60.0, gt=0, description="a request waiting longer gets 503")
    body_timeout_s: float = Field(10.0, gt=0, description="a client not done sending its body by then is dropped")
    max_concurrent_requests: int = Field(64, ge=1, description="requests in flight at most; beyond that 429")
    max_json_depth: int = Field(400, ge=1, description="JSON nesting depth at most (400 beyond)")
    client_modes: list[Mode] | None = Field(
        None, description="modes a client may ask for per request (default: only --mode; reasoning costs ~50x fast)"
    )
    allow_unvalidated_fast: bool = Field(
        False, description="serve fast mode even with no dev eval of it on record for this model"
    )
    max_chat_tokens: int = Field(512, ge=1, description="/v1/chat/completions: max_tokens at most (400 beyond)")
    api_key_env: str | None = Field(
        None, description="environment variable holding an API key; requests then need 'Authorization: Bearer <key>'"
    )

    @property
    def served_name(self) -> str:
        return self.model_name or self.model

    @property
    def modes(self) -> set[str]:
        return set(self.client_modes or []) | {self.mode}

    @property
    def graceful_shutdown_s(self) -> float:
        """Longer than any request may take, so a SIGTERM drains in-flight requests instead of cutting them off."""
        return self.body_timeout_s + self.request_timeout_s + 5.0

    def api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise UserError(f"--api-key-env {self.api_key_env}: that environment variable is not set or empty")
        return key


class ModerationRequest(BaseModel):
    """OpenAI's request body, plus our optional `mode` and `threshold`."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str]
    model: str | None = None
    mode: Mode | None = None
    threshold: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="flag when P(DISALLOW) >= this (default: the server's)"
    )

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input must be a non-empty string or a non-empty list of strings")
        for index, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"input[{index}] is empty")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"input[{index}] is not valid Unicode (lone surrogate)") from None
        return value


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float] = Field(
        description="fast: P(DISALLOW) x the category's share; reasoning: 1.0 if the parsed answer names it, else 0.0"
    )
    category_applied_input_types: dict[str, list[str]]
    reasoning: str | None = Field(description="the model's reasoning (reasoning mode); null in fast mode")
    status: str = Field(
        description="'ok', or the verdict parser's status (why a reasoning-mode completion is off-format); with no "
        "readable verdict, `flagged` follows the server's on_parse_failure policy (default: flagged for review)"
    )


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.retry_after = status, message, code, param, retry_after


def error_response(status: int, message: str, code: str, param: str | None = None, retry_after: int | None = None):
    kind = "invalid_request_error" if status < 429 else "server_error"
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    if status == 408:
        headers["Connection"] = "close"  # the rest of a stalled body must not be read as the next request
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def client_of(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "client"


async def read_body(request: Request, limit: int, timeout_s: float = 10.0) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (declared or streamed), 408 when not complete
    within `timeout_s` (a client that sends part of a body and goes silent would hold its slot forever)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body over {limit} bytes", "body_too_large")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"request body over {limit} bytes", "body_too_large")
                chunks.append(chunk)
    except TimeoutError:
        log.warning("dropped %s: body incomplete after %.0fs (%d bytes)", client_of(request), timeout_s, size)
        raise ApiError(408, f"request body not received within {timeout_s:.0f}s", "body_timeout") from None
    except ClientDisconnect:
        log.info("client %s disconnected while sending its body (%d bytes)", client_of(request), size)
        raise ApiError(400, "client disconnected", "client_disconnected") from None
    return b"".join(chunks)


# JSON strings (escapes included) are skipped, so brackets inside them do not count towards the depth. Possessive and
# with an optional closing quote, the pattern never backtracks: an unterminated string costs one pass, not one a quote.
_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
# Brackets become steps (+1 opens, -1 closes as int8); every other byte is dropped.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[{]}"))


def too_deep(body: bytes, max_depth: int) -> bool:
    """Whether a JSON text nests brackets deeper than `max_depth`, found without parsing (a parser would recurse)."""
    import numpy as np

    steps = np.frombuffer(_STRINGS.sub(b"", body).translate(_STEPS, _NOT_BRACKETS), dtype=np.int8)
    return bool(steps.size) and int(np.cumsum(steps, dtype=np.int32).max()) > max_depth


def load_json(body: bytes, max_depth: int = 400):
    """The decoded JSON body, or the 400 that says why not (encoding, syntax, nesting)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8", "invalid_encoding") from None
    if too_deep(body, max_depth):
        raise ApiError(400, f"JSON nested deeper than {max_depth} levels", "json_too_deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        message = f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}"
        raise ApiError(400, message, "invalid_json") from None


def parse_request(body: bytes, max_depth: int = 400, schema: type[BaseModel] = ModerationRequest):
    data = load_json(body, max_depth)
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        message = first["msg"].removeprefix("Value error, ")
        raise ApiError(422, f"{where}: {message}", "invalid_request", param=where) from None


def create_app(engine: Engine, config: ServeConfig) -> FastAPI:
    """The ASGI app; the batcher starts with it and drains on shutdown.

    Raises UserError (one line at startup) for fast mode with no validation on record or a missing API key.
    """
    check_modes(config.model, config.modes, config.allow_unvalidated_fast, config.eval_dir)
    on_record = measured(config.model, config.mode, config.eval_dir)
    threshold = serving_threshold(config.model, config.threshold, config.eval_dir)
    batcher = Batcher(engine, config.max_batch_size, config.max_wait_ms, config.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.close(drain_timeout_s=config.request_timeout_s)
        stats = batcher.stats
        log.info("shut down cleanly: %d listings in %d batches", stats.items, stats.batches)

    app = FastAPI(title="grpo-moderation", lifespan=lifespan)
    app.add_middleware(Guard, api_key=config.api_key(), max_concurrent=config.max_concurrent_requests)
    app.state.batcher = batcher
    app.state.config = config
    app.state.measured = on_record
    app.state.threshold = threshold

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError):
        return error_response(error.status, error.message, error.code, error.param, error.retry_after)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException):
        return error_response(error.status_code, str(error.detail), "http_error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return error_response(500, "internal error (see the server log)", "internal_error")

    @app.get("/health")
    async def health():
        stats = batcher.stats
        return {
            "status": "closing" if batcher.closing else "ok",
            "model": config.served_name,
            "policy": engine.moderator.policy.name,
            "engine": config.engine,
            "compute_type": weights_type(config.engine, config.compute_type),
            "compiled": config.compile,
            "default_mode": config.mode,
            "threshold": threshold.value,
            "threshold_from": threshold.source,
            "client_modes": sorted(config.modes),
            "on_parse_failure": config.on_parse_failure,
            "measured_dev_accuracy": on_record.accuracy if on_record else None,
            "measured_dev_n": on_record.n if on_record else None,
            "measured_from": str(on_record.path) if on_record else None,
            "queued": batcher.queued,
            "idle": batcher.idle,
            "submitted": stats.submitted,
            "batches": stats.batches,
            "listings": stats.items,
            "mean_batch_size": round(stats.mean_batch_size, 3),
        }

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": config.served_name, "object": "model", "owned_by": "local"}]}

    @app.post("/v1/moderations", response_model=ModerationResponse)
    async def moderations(request: Request):
        body = await read_body(request, config.max_body_bytes, config.body_timeout_s)
        moderation = await asyncio.to_thread(parse_request, body, config.max_json_depth)  # the event loop stays free
        if moderation.model not in (None, config.served_name):
            raise ApiError(404, f"unknown model {moderation.model!r}; this server has {config.served_name!r}", "model")
        mode = moderation.mode or config.mode
        if mode not in config.modes:
            message = f"mode {mode!r} is not offered here; this server allows {sorted(config.modes)}"
            raise ApiError(403, message, "mode_not_allowed", param="mode")
        texts = [moderation.input] if isinstance(moderation.input, str) else moderation.input
        if len(texts) > config.max_inputs:
            raise ApiError(413, f"{len(texts)} inputs; at most {config.max_inputs} per request", "too_many_inputs")
        for index, text in enumerate(texts):
            if len(text) > config.max_input_chars:
                message = f"input[{index}] has {len(text)} characters; at most {config.max_input_chars}"
                raise ApiError(413, message, "input_too_long", param=f"input[{index}]")
        try:
            futures = batcher.submit(texts, mode, moderation.threshold)
        except Overloaded as error:
            raise ApiError(429, f"overloaded: {error}; retry shortly", "overloaded", retry_after=1) from None
        except Closing as error:
            raise ApiError(503, str(error), "shutting_down") from None
        started = time.monotonic()
        try:
            results = await asyncio.wait_for(asyncio.gather(*futures), config.request_timeout_s)
        except TimeoutError:
            message = f"timed out after {time.monotonic() - started:.1f}s waiting for the model"
            raise ApiError(503, message, "timeout", retry_after=5) from None
        if await request.is_disconnected():
            log.info("client %s disconnected before its answer (%d listings)", client_of(request), len(texts))
        unparsed = [f"input[{i}]: {r.status}" for i, r in enumerate(results) if not r.parsed]
        if unparsed and config.on_parse_failure == "error":
            message = "the model's answer has no readable verdict (" + ", ".join(unparsed) + ")"
            raise ApiError(502, message, "unparseable_answer")
        return ModerationResponse(
            id=f"modr-{uuid.uuid4().hex}",
            model=config.served_name,
            results=[
                ModerationResult(
                    flagged=r.flagged,
                    categories=r.categories,
                    category_scores=r.category_scores,
                    category_applied_input_types={c: ["text"] for c in r.categories},
                    reasoning=r.reasoning,
                    status=r.status,
                )
                for r in results
            ],
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request, config.max_body_bytes, config.body_timeout_s)
        chat: ChatRequest = await asyncio.to_thread(parse_request, body, config.max_json_depth, ChatRequest)
        if chat.model not in (None, config.served_name):
            raise ApiError(404, f"unknown model {chat.model!r}; this server has {config.served_name!r}", "model")
        if chat.stream:
            raise ApiError(400, "streaming is not supported; send stream=false", "stream_unsupported", param="stream")
        max_tokens = chat.max_completion_tokens or chat.max_tokens or config.max_new_tokens
        if max_tokens > config.max_chat_tokens:
            message = f"max_tokens {max_tokens} is over this server's {config.max_chat_tokens}"
            raise ApiError(400, message, "max_tokens_too_large", param="max_tokens")
        messages = [m.model_dump() for m in chat.messages]
        try:
            completion = await asyncio.wait_for(
                batcher.call(complete, engine.moderator, messages, max_tokens, chat.temperature),
                config.request_timeout_s,
            )
        except Closing as error:
            raise ApiError(503, str(error), "shutting_down") from None
        except TimeoutError:
            raise ApiError(503, "timed out waiting for the model", "timeout", retry_after=5) from None
        return response_body(completion, config.served_name, int(time.time()))

    return app
