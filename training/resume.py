"""Exact resume: continue from the newest *complete* checkpoint, with the logs rewound to it.

A killed run leaves two things behind that a naive resume gets wrong: a checkpoint folder whose save was cut short
(transformers writes `trainer_state.json` last, after the weights and optimizer), and log lines for steps after the
checkpoint it resumes from (those steps run again, so their lines would appear twice). `resume_point` picks the newest
checkpoint that is whole and deletes the torn ones after it; `rewind_logs` cuts metrics.jsonl and completions.jsonl
back to that step, torn last line included, so a resumed run's logs equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from moderation.files import atomic_write_bytes
from moderation.jsonl import drop_torn_tail, read_complete_lines

STAGES = ("sft", "grpo")  # the order the pipeline runs them in
METRICS = "metrics.jsonl"
COMPLETIONS = "completions.jsonl"
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin", "pytorch_model.bin")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int | None:
    """The global step a checkpoint folder holds, or None when it is incomplete (no weights, or no readable state)."""
    if not any((path / name).is_file() for name in WEIGHTS):
        return None
    try:
        step = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


def resume_point(folder: Path) -> tuple[Path | None, int]:
    """The newest complete checkpoint under `folder` and its step ((None, 0) without one).

    Incomplete checkpoints newer than it are deleted: the resumed run saves those steps again, and transformers'
    rotation (`save_total_limit`) would otherwise count a torn folder as a kept checkpoint.
    """
    numbered = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*") if (m := _CHECKPOINT.match(p.name))]
    for _, path in sorted(numbered, reverse=True):
        step = checkpoint_step(path)
        if step is not None:
            return path, step
        print(f"skipping incomplete checkpoint {path} (its save was cut short)")
        shutil.rmtree(path)
    return None, 0


def start_stage(run_dir: Path, stage: str, checkpoints: Path, resume: bool) -> tuple[Path | None, int]:
    """The checkpoint a stage resumes from and its step ((None, 0): from scratch), with the logs rewound to it."""
    last, step = resume_point(checkpoints) if resume and checkpoints.is_dir() else (None, 0)
    rewind_logs(run_dir, stage, step)
    if last:
        print(f"resuming {stage.upper()} from {last}")
    return last, step


def read_records(path: Path) -> Iterator[dict]:
    """The complete records of a JSONL file: split on "\\n" only (text may hold U+2028), a torn last line skipped."""
    for line in read_complete_lines(path):
        if line.strip():
            yield json.loads(line)


def rewind_logs(run_dir: Path, stage: str, step: int) -> None:
    """Keep only what was logged up to `step` of `stage` (earlier stages whole, later ones dropped).

    Called as each stage starts, with the step it starts from (0 for a fresh start), so steps that run again are
    logged once. Completions come from GRPO alone.
    """
    order = STAGES.index(stage)

    def logged_before(record: dict) -> bool:
        index = STAGES.index(record["stage"])
        if index != order:
            return index < order
        # transformers logs step N, then saves checkpoint N, then (at the end) logs the train summary at step N too
        return record["step"] < step or (record["step"] == step and "train_runtime" not in record)

    _keep(run_dir / METRICS, logged_before)
    _keep(run_dir / COMPLETIONS, lambda record: logged_before({"stage": "grpo", **record}))


def _keep(path: Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite `path` atomically with the records `keep` accepts; untouched when all of them are kept."""
    lines = drop_torn_tail(path).splitlines(keepends=True)  # bytes: splits on \n (and \r) only, never on U+2028
    kept = [line for line in lines if keep(json.loads(line))]
    if len(kept) == len(lines):
        return
    atomic_write_bytes(path, b"".join(kept))


def append_record(path: Path, record: dict) -> None:
    """Append one JSON line (flushed with its newline, so a kill leaves at most a torn last line)."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
