"""Moderate a JSONL file of listings into a JSONL file of verdicts: progress bar, resumable, bad rows skipped.

    python -m serve predict --model runs/my-run --in listings.jsonl --out verdicts.jsonl [--mode reasoning]

Each input line is an object with `text` (and optionally `id`; the line number otherwise). Each output line is the
API's result for that listing plus its `id`. Output is appended batch by batch, so a rerun skips the ids already in
`--out` (a line torn by a crash is dropped first). Bad rows (not JSON, no text, duplicate id) are reported with their
line number on stderr and skipped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from pydantic import Field
from tqdm import tqdm

from moderation.errors import UserError, cli_main
from moderation.jsonl import drop_torn_tail
from serve.engine import EngineConfig, load_engine

SHOWN_BAD_ROWS = 20


class PredictConfig(EngineConfig):
    input: Path = Field(Path("listings.jsonl"), alias="in", description="JSONL of {text, id?}")
    out: Path = Field(Path("verdicts.jsonl"), description="JSONL of results; appended to and resumed from")


def read_rows(path: Path) -> Iterator[tuple[int, str | None, object]]:
    """(line number, error or None, row) for each non-blank line."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    for number, raw in enumerate(lines, 1):
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
    """Ids already written to `out`; a torn last line (crash mid-write) is cut off so appending stays valid JSONL."""
    ids = set()
    for line in drop_torn_tail(out).splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{out} is not a verdicts file from this command; choose another --out") from None
    return ids


@cli_main
def main(argv: list[str] | None = None) -> None:
    from serve.__main__ import config_parser

    args = config_parser("python -m serve predict", PredictConfig, __doc__.split("\n\n")[0]).parse_args(argv)
    config = PredictConfig(**vars(args))
    done = done_ids(config.out)
    todo, bad, seen = [], [], set(done)
    for number, error, row in read_rows(config.input):
        if error is None:
            row_id = str(row.get("id", number))
            if row_id in seen and row_id not in done:
                error = f"duplicate id {row_id!r}"
            elif row_id not in done:
                todo.append((row_id, row["text"]))
            seen.add(row_id)
        if error is not None:
            bad.append((number, error))
    for number, error in bad[:SHOWN_BAD_ROWS]:
        print(f"{config.input}:{number}: skipped: {error}", file=sys.stderr)
    if len(bad) > SHOWN_BAD_ROWS:
        print(f"... and {len(bad) - SHOWN_BAD_ROWS} more bad rows", file=sys.stderr)

    engine = load_engine(config) if todo else None
    flagged = 0
    config.out.parent.mkdir(parents=True, exist_ok=True)
    with config.out.open("a", encoding="utf-8") as out, tqdm(total=len(todo), unit="listing") as progress:
        for start in range(0, len(todo), config.max_batch_size):
            batch = todo[start : start + config.max_batch_size]
            results = engine.run([text for _, text in batch], config.mode)
            for (row_id, _), result in zip(batch, results, strict=True):
                out.write(json.dumps({"id": row_id, **asdict(result)}, ensure_ascii=False) + "\n")
                flagged += result.flagged
            out.flush()
            progress.update(len(batch))
    print(
        f"{config.out}: wrote {len(todo)} verdicts ({flagged} flagged), skipped {len(bad)} bad rows, "
        f"{len(done)} already done"
    )
