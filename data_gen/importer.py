"""Import external listings (JSONL or CSV) with a label mapping, for use in a build (`imported=[...]`).

    python -m data_gen import my_listings.csv --map spam=disallow/spam --map ham=allow --map scam=disallow/phishing,spam

Each source label must map to `allow` or `disallow/<category>[,<category>...]` with categories from the policy;
a label with no mapping, an unknown category or an empty text is an error naming the line. Output: JSONL rows
(text, label, categories, generator) written atomically to --out (default data/imports/<file stem>.jsonl).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from moderation.config import parse_command_line
from moderation.errors import UserError
from moderation.files import atomic_write_text
from moderation.jsonl import split_jsonl
from moderation.policy import Policy, load_policy

CSV_FIELD_LIMIT = 16 * 1024 * 1024  # the csv module's default (128 KiB) rejects long listings


def parse_mapping(items: list[str], policy: Policy) -> dict[str, tuple[str, list[str]]]:
    """["spam=disallow/spam", "ham=allow"] → {"spam": ("disallow", ["spam"]), "ham": ("allow", [])}."""
    mapping: dict[str, tuple[str, list[str]]] = {}
    for item in items:
        source, sep, target = item.partition("=")
        if not sep:
            raise UserError(f"--map expects SOURCE=allow or SOURCE=disallow/CATEGORY, got {item!r}")
        mapping[source.strip()] = parse_target(target.strip(), policy)
    return mapping


def parse_target(target: str, policy: Policy) -> tuple[str, list[str]]:
    if target == "allow":
        return "allow", []
    label, _, cats = target.partition("/")
    categories = [c.strip() for c in cats.split(",") if c.strip()]
    if label != "disallow" or not categories:
        raise UserError(f"label target must be allow or disallow/<category>[,...], got {target!r}")
    for category in categories:
        policy.category(category)  # raises UserError naming the known ids
    return "disallow", categories


def read_records(path: Path) -> list[dict]:
    """JSONL (.jsonl/.json lines) or CSV (.csv) → list of dicts. A UTF-8 byte-order mark is skipped."""
    try:
        if path.suffix.lower() == ".csv":
            return read_csv(path)
        lines = split_jsonl(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                raise UserError(f"{path}:{number}: not valid JSON") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{number}: expected a JSON object")
            records.append(record)
    return records


def read_csv(path: Path) -> list[dict]:
    """CSV rows through the csv module (newline="" keeps line breaks inside quoted cells), cells up to 16 MiB."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            return list(reader)
        except csv.Error as error:
            raise UserError(f"{path}:{reader.line_num}: {error}") from None


def convert(records: list[dict], path: Path, text_column: str, label_column: str, mapping: dict) -> list[dict]:
    if not records:
        raise UserError(f"{path}: no records")
    rows = []
    for number, record in enumerate(records, 1):
        if text_column not in record or label_column not in record:
            raise UserError(f"{path}: record {number} has no {text_column!r} or {label_column!r} column")
        text, source_label = str(record[text_column] or "").strip(), str(record[label_column]).strip()
        if not text:
            continue
        if source_label not in mapping:
            raise UserError(
                f"{path}: record {number}: label {source_label!r} has no mapping (add --map {source_label}=...)"
            )
        label, categories = mapping[source_label]
        rows.append({"text": text, "label": label, "categories": categories, "generator": f"import:{path.name}"})
    return rows


class ImportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[Path] = Field(min_length=1, description="JSONL or CSV files (positional)")
    text_column: str = Field("text", description="the listing text's column")
    label_column: str = Field("label", description="the source label's column")
    map: list[str] = Field(
        [], description="label mapping SOURCE=allow or SOURCE=disallow/<category>[,...], one --map each"
    )
    policy: str = Field("marketplace", description="policy name or path (categories are checked)")
    out: Path | None = Field(None, description="output JSONL (one input file only)")


def main(argv: list[str]) -> None:
    description = __doc__.split("\n")[0]
    _, args = parse_command_line(
        ImportConfig, argv, prog="python -m data_gen import", description=description, positional="files"
    )
    if args.out and len(args.files) > 1:
        raise UserError("--out works with one input file; omit it to write data/imports/<stem>.jsonl per file")
    policy = load_policy(args.policy)
    mapping = parse_mapping(args.map, policy)
    for path in args.files:
        rows = convert(read_records(path), path, args.text_column, args.label_column, mapping)
        out = args.out or Path("data/imports") / f"{path.stem}.jsonl"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create {out.parent}: {error.strerror or error}") from None
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        counts = {label: sum(1 for r in rows if r["label"] == label) for label in ("allow", "disallow")}
        print(f"wrote {len(rows)} rows to {out} ({counts}); add it to a build with imported='[{out}]'")
