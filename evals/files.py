"""The files an evaluation folder holds, and how they are read and written (atomically).

Kept apart from the runner so the report, robustness and compare read and write them without importing the runner.
"""

from __future__ import annotations

import json
from pathlib import Path

from moderation.files import atomic_write_text
from moderation.jsonl import read_jsonl_lines

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
RELIABILITY = "reliability_diagram.png"  # P(disallow) calibration, for scored runs (fast mode, tfidf)


def read_predictions(path: Path) -> dict[str, dict]:
    """Records already scored, by id. A last line cut short by a crash is ignored (that batch is redone).

    Lines are split on "\\n" only: completions may hold U+2028 and other characters `str.splitlines` breaks on.
    """
    records: dict[str, dict] = {}
    if not path.exists():
        return records
    for line in read_jsonl_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[record["id"]] = record
    return records


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Every evaluation file is written whole or not at all (moderation.files)."""
    atomic_write_text(path, text)


def write_evaluation(out: Path, records: list[dict], metrics: dict) -> None:
    """An evaluation folder made from records already scored elsewhere (pooled, recut): predictions, then metrics."""
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / PREDICTIONS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    write_json(out / METRICS, metrics)
