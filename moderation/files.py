"""Atomic writes (every file the project produces appears whole or not at all: a crash leaves the old one intact), and
file digests for manifests."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from moderation.errors import UserError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temp path beside `path` for the with-block to write; renamed onto `path` when the block ends cleanly,
    removed otherwise. Unique per process and call, so concurrent writers (threads, workers) never share a temp file;
    created by the writer with the usual permissions (unlike mkstemp's 0600). Parent folders are created.

    >>> with atomic_path("model.joblib") as temporary:
    ...     joblib.dump(model, temporary)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (fsynced before the rename); a failure is one UserError line."""
    try:
        with atomic_path(path) as temporary, temporary.open("xb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """`text` as UTF-8, atomically (see atomic_write_bytes)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (a model or parquet file need not fit in memory twice)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
