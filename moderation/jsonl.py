"""Append-only JSONL files that jobs resume from (predictions, verdicts, scraped listings)."""

from __future__ import annotations

from pathlib import Path


def drop_torn_tail(path: Path) -> bytes:
    """Cut a last line left without its newline by a crash, so the next append starts on a line of its own.

    Returns the file's complete lines as bytes (b"" for a missing file).
    """
    if not path.exists():
        return b""
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    return complete
