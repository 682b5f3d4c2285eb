"""The retry policy for plain HTTP fetches (the scraper's pages): tenacity, exponential backoff, a server's wait kept.

Calls to OpenAI-compatible endpoints do not come here: the openai SDK retries those itself (moderation.openai_client).
"""

from __future__ import annotations

from collections.abc import Callable

from tenacity import retry, retry_if_exception_type, stop_after_attempt


class Retryable(Exception):
    """A transient failure worth another attempt (429, 5xx); `wait_s`: how long the server asked us to wait."""

    def __init__(self, message: str, wait_s: float = 0.0):
        super().__init__(message)
        self.wait_s = wait_s


def retrying(max_attempts: int, backoff_s: float, transient: tuple[type[BaseException], ...] = ()) -> Callable:
    """A decorator: retry on Retryable and `transient` errors, at most `max_attempts` attempts in all, waiting
    backoff_s, 2×backoff_s, … or the server's `wait_s` when longer; the last error is re-raised as it was."""

    def wait(state) -> float:
        backoff = backoff_s * 2 ** (state.attempt_number - 1)
        return max(backoff, getattr(state.outcome.exception(), "wait_s", 0.0))

    return retry(
        retry=retry_if_exception_type((Retryable, *transient)),
        stop=stop_after_attempt(max_attempts),
        wait=wait,
        reraise=True,
    )
