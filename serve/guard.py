"""The server's front door, as plain ASGI middleware: an optional API key and a limit on requests in flight.

It runs before routing, so a refused request costs no body read and no model time; its answers are the API's JSON
errors. `/health` passes without a key and outside the limit, so monitoring works on a busy or locked server.
"""

from __future__ import annotations

import hmac
import json

OPEN_PATHS = ("/health",)


async def send_error(send, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
    """An OpenAI-shaped JSON error, sent straight on the ASGI channel."""
    kind = "invalid_request_error" if status < 429 else "server_error"
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Refuses requests without the API key (401) and requests beyond `max_concurrent` in flight (429)."""

    def __init__(self, app, api_key: str | None, max_concurrent: int):
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else None
        self.max_concurrent = max_concurrent
        self.in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self.expected is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                message = "missing or wrong API key (send 'Authorization: Bearer <key>')"
                return await send_error(send, 401, message, "invalid_api_key", {"WWW-Authenticate": "Bearer"})
        if self.in_flight >= self.max_concurrent:
            message = f"{self.in_flight} requests in flight (at most {self.max_concurrent}); retry shortly"
            return await send_error(send, 429, message, "too_many_requests", {"Retry-After": "1"})
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
