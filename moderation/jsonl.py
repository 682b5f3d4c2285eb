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
    complete = _complete(data)
    if len(complete) != len(data):
        with path.open("r+b") as handle:
            handle.truncate(len(complete))
    return complete


def read_complete_lines(path: Path) -> list[str]:
    """The lines a writer finished in an append-only JSONL file (split as split_jsonl does), leaving out a torn last
    line without changing the file; [] for a missing file. For readers that run beside the writer."""
    if not path.exists():
        return []
    return split_jsonl(_complete(path.read_bytes()).decode("utf-8"))


def _complete(data: bytes) -> bytes:
    return data[: data.rfind(b"\n") + 1]


def split_jsonl(text: str) -> list[str]:
    """JSONL text → its lines, split on "\\n" only (a trailing "\\r" is dropped).

    str.splitlines() also splits on U+2028, U+2029, U+0085 and a few control characters; json.dumps(ensure_ascii=False)
    leaves the first three raw inside strings, so splitlines() would cut such a record in two.
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_jsonl_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 JSONL file (see split_jsonl); OSError and UnicodeDecodeError propagate to the caller."""
    return split_jsonl(Path(path).read_text(encoding="utf-8"))
