"""Several datasets as one: a model's finished runs on each dataset of a suite pooled into one evaluation folder.

Paired differences on dev and test together (`make demo`: `runs/<name>/eval/pooled/compare.md`) rest on twice the
items of either split, so a stage's effect (GRPO − SFT) gets a tighter interval than either split alone gives it.
The pooled folder holds what any evaluation folder holds for `compare`: predictions.jsonl and metrics.json with the
ids it scored, so the comparison is rendered and paired exactly as a single dataset's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from evals.files import METRICS, write_evaluation
from evals.metrics import compute_metrics
from evals.report import evaluated_records
from moderation.errors import UserError


def pool_runs(folders: Sequence[Path], out: Path, n_bootstrap: int, seed: int, target_fpr: float) -> dict:
    """Write one model's runs on several datasets (`folders`, one per dataset) as the evaluation folder `out`."""
    runs = [json.loads((folder / METRICS).read_text(encoding="utf-8")) for folder in folders]
    records = [r for folder, m in zip(folders, runs, strict=True) for r in evaluated_records(folder, m).values()]
    ids = [record["id"] for record in records]
    if len(set(ids)) < len(ids):
        raise UserError(f"cannot pool {', '.join(map(str, folders))}: a listing appears in more than one dataset")
    first = runs[0]
    metrics = compute_metrics(records, list(first["per_category"]), n_bootstrap, seed, target_fpr)
    data = " + ".join(Path(m["config"]["data"]).name for m in runs)
    metrics.update(label=first["label"], policy=first.get("policy"), config={**first["config"], "data": data}, ids=ids)
    write_evaluation(out, records, metrics)
    return metrics
