"""Credentials stay where they are: API keys come only from variables named like keys, URLs are logged without secrets.

A recipe or eval config is shared as YAML, so `api_key_env` must not be able to name an arbitrary variable (a shared
file could otherwise send `AWS_SECRET_ACCESS_KEY` to any host as a bearer token), and an endpoint URL, which may carry
`user:password@` or `?key=`, is never written to a manifest, data card or report as given.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, PlainSerializer

KEY_NAME = re.compile(r"[A-Z][A-Z0-9_]*(_API_KEY|_TOKEN)")


def check_api_key_env(name: str) -> str:
    """`name` if it names an API key or token variable (`*_API_KEY`, `*_TOKEN`); a ValueError otherwise."""
    if not KEY_NAME.fullmatch(name):
        raise ValueError(f"api_key_env {name!r} must name a variable ending in _API_KEY or _TOKEN (OPENAI_API_KEY)")
    return name


ApiKeyEnv = Annotated[str, AfterValidator(check_api_key_env)]


def redact_url(url: str) -> str:
    """`url` without credentials, query or fragment: safe for manifests, logs and reports."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# A URL field that is used as given but serialised (manifests, saved configs, reports) without its secrets.
RedactedUrl = Annotated[str, PlainSerializer(redact_url, when_used="always")]
