"""Moderate a JSONL file of listings into a JSONL file of verdicts: progress bar, resumable, bad rows skipped.

    python -m serve predict --model runs/my-run --in listings.jsonl --out verdicts.jsonl [--mode reasoning]
    python -m serve predict --model runs/my-run --in listings.jsonl --out verdicts.jsonl --engine ct2 --mode fast

Each input line is an object with `text` and optionally `id`; without one, the id is a hash of the text (as evals
does), so adding, removing or reordering lines never changes which listings a rerun skips. Each output line is the
API's result for that listing plus its `id`. Both files are streamed (read by "\\n" only: a U+2028 inside a listing
is text, not a line break); output is appended batch by batch, so a rerun skips the ids already in `--out` (a line
torn by a crash is cut off first). Bad rows (not JSON, no text, duplicate id) are reported with their line number on
stderr and skipped. With `--on-parse-failure error`, a listing whose answer has no readable verdict gets no row (and is
retried by a rerun); otherwise its row says so in `status` and is flagged (default) or allowed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from pydantic import Field
from tqdm import tqdm

from moderation.config import parse_command_line
from moderation.errors import UserError, cli_main
from moderation.ids import text_id
from serve.engine import Engine, EngineConfig, load_engine

SHOWN_BAD_ROWS = 20


class PredictConfig(EngineConfig):
    input: Path = Field(Path("listings.jsonl"), alias="in", description="JSONL of {text, id?}")
    out: Path = Field(Path("verdicts.jsonl"), description="JSONL of results; appended to and resumed from")


def read_rows(path: Path) -> Iterator[tuple[int, str | None, object]]:
    """(line number, error or None, row) for each non-blank line, streamed."""
    try:
        handle = path.open("rb")
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        for number, raw in enumerate(handle, 1):  # binary lines end at b"\n" only
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield number, "not UTF-8", None
                continue
            except json.JSONDecodeError as error:
                yield number, f"not JSON ({error.msg})", None
                continue
            if not isinstance(row, dict):
                yield number, "not a JSON object", None
            elif not isinstance(row.get("text"), str) or not row["text"].strip():
                yield number, "no non-empty string 'text'", None
            else:
                yield number, None, row


def done_ids(out: Path) -> set[str]:
    """Ids already written to `out`, streamed; a torn last line (crash mid-write) is cut off so appends stay JSONL."""
    ids: set[str] = set()
    if not out.exists():
        return ids
    with out.open("r+b") as handle:
        complete = 0
        for line in handle:
            if not line.endswith(b"\n"):
                handle.truncate(complete)
                break
            complete += len(line)
            try:
                ids.add(str(json.loads(line)["id"]))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                raise UserError(f"{out} is not a verdicts file from this command; choose another --out") from None
    return ids


def todo_rows(config: PredictConfig, done: set[str], bad: list[tuple[int, str]]) -> Iterator[tuple[str, str]]:
    """(id, text) of each usable row not done yet; bad rows are appended to `bad` and shown as they are met."""
    seen = set(done)
    for number, error, row in read_rows(config.input):
        if error is None:
            row_id = str(row["id"]) if row.get("id") not in (None, "") else text_id(row["text"])
            if row_id in seen and row_id not in done:
                error = f"duplicate id {row_id!r}"
            elif row_id not in done:
                yield row_id, row["text"]
            seen.add(row_id)
        if error is not None:
            bad.append((number, error))
            if len(bad) <= SHOWN_BAD_ROWS:
                print(f"{config.input}:{number}: skipped: {error}", file=sys.stderr)


def batches(rows: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@cli_main
def main(argv: list[str] | None = None) -> None:
    description = __doc__.split("\n\n")[0]
    _, config = parse_command_line(PredictConfig, argv, prog="python -m serve predict", description=description)
    done = done_ids(config.out)
    bad: list[tuple[int, str]] = []
    engine: Engine | None = None
    written = flagged = unparsed = 0
    config.out.parent.mkdir(parents=True, exist_ok=True)
    with config.out.open("a", encoding="utf-8") as out, tqdm(unit="listing") as progress:
        for batch in batches(todo_rows(config, done, bad), config.max_batch_size):
            engine = engine or load_engine(config)  # no model load when everything is done already
            results = engine.run([text for _, text in batch], config.mode)
            for (row_id, _), result in zip(batch, results, strict=True):
                if not result.parsed and config.on_parse_failure == "error":
                    unparsed += 1
                    continue
                out.write(json.dumps({"id": row_id, **asdict(result)}, ensure_ascii=False) + "\n")
                written += 1
                flagged += result.flagged
            out.flush()
            progress.update(len(batch))
    if len(bad) > SHOWN_BAD_ROWS:
        print(f"... and {len(bad) - SHOWN_BAD_ROWS} more bad rows", file=sys.stderr)
    left = f", {unparsed} answers unreadable (no row written; rerun to retry)" if unparsed else ""
    print(
        f"{config.out}: wrote {written} verdicts ({flagged} flagged), skipped {len(bad)} bad rows, "
        f"{len(done)} already done{left}"
    )
