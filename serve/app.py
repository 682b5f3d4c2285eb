"""The HTTP API: `POST /v1/moderations` in the shape of OpenAI's moderation endpoint, `GET /health`, `GET /v1/models`.

Every error is a JSON body `{"error": {"message", "type", "param", "code"}}` (OpenAI's shape) with a 4xx status for
anything the client sent (malformed JSON 400, non-UTF-8 400, too large 413, invalid fields 422, unknown model 404),
429 when the queue is full, 503 on timeout or shutdown. No stack trace ever reaches a response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.engine import Batcher, Closing, Engine, EngineConfig, Mode, Overloaded

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

    @property
    def served_name(self) -> str:
        return self.model_name or self.model


class ModerationRequest(BaseModel):
    """OpenAI's request body, plus our optional `mode`."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str]
    model: str | None = None
    mode: Mode | None = None

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
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    reasoning: str | None = Field(description="the model's reasoning (reasoning mode); null in fast mode")
    status: str = Field(description="'ok', or why a reasoning-mode completion did not parse")


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
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body over {limit} bytes", "body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body over {limit} bytes", "body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes) -> ModerationRequest:
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8", "invalid_encoding") from None
    except json.JSONDecodeError as error:
        message = f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}"
        raise ApiError(400, message, "invalid_json") from None
    try:
        return ModerationRequest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        message = first["msg"].removeprefix("Value error, ")
        raise ApiError(422, f"{where}: {message}", "invalid_request", param=where) from None


def create_app(engine: Engine, config: ServeConfig) -> FastAPI:
    """The ASGI app; the batcher starts with it and drains on shutdown."""
    batcher = Batcher(engine, config.max_batch_size, config.max_wait_ms, config.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.close(drain_timeout_s=config.request_timeout_s)
        stats = batcher.stats
        log.info("shut down cleanly: %d listings in %d batches", stats.items, stats.batches)

    app = FastAPI(title="grpo-moderation", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.config = config

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
            "default_mode": config.mode,
            "queued": batcher.queued,
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
        moderation = parse_request(await read_body(request, config.max_body_bytes))
        if moderation.model not in (None, config.served_name):
            raise ApiError(404, f"unknown model {moderation.model!r}; this server has {config.served_name!r}", "model")
        texts = [moderation.input] if isinstance(moderation.input, str) else moderation.input
        if len(texts) > config.max_inputs:
            raise ApiError(413, f"{len(texts)} inputs; at most {config.max_inputs} per request", "too_many_inputs")
        for index, text in enumerate(texts):
            if len(text) > config.max_input_chars:
                message = f"input[{index}] has {len(text)} characters; at most {config.max_input_chars}"
                raise ApiError(413, message, "input_too_long", param=f"input[{index}]")
        try:
            futures = batcher.submit(texts, moderation.mode or config.mode)
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

    return app
