"""The output-folder check the scraper, the synth cache and the builder run before any long work."""

from __future__ import annotations

import os
from pathlib import Path

from moderation.errors import UserError


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` (and parents) and check we can write there, before any long work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"output directory {path} is not writable: {error.strerror or error}") from None
    return path
