"""Finished fast-mode evaluations read again at another threshold, without scoring again: fast mode saves each
listing's P(disallow) and category shares, so its verdict at any threshold is the serving rule applied to them.

    python -m evals recut runs/cpu-smollm2/eval/pooled/sft-fast runs/cpu-smollm2/eval/pooled/cpu-smollm2-fast \\
        --threshold served --out runs/cpu-smollm2/eval/served

`--threshold served` cuts each model at its own serving threshold, the one `serve` takes from the model's held-back
train slice (5% FPR there; never chosen on dev or test), so stages are compared at the operating point users get
rather than at 0.5, where a stage that only shifts scores up or down looks better or worse than it ranks. Writes
<out>/<folder name>/ (predictions.jsonl, metrics.json, report.md) and <out>/compare.md with the paired differences.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from evals.calibration import write_reliability
from evals.fast import fast_moderation
from evals.files import METRICS, write_evaluation
from evals.metrics import compute_metrics
from evals.report import compare, evaluated_records, write_report
from evals.runner import EvalConfig, FastCut, label_for, policy_of, result_fields
from inference.fast_answer import Scores
from moderation.errors import UserError
from serve.validation import SERVED, Threshold, held_back_threshold


def recut(folders: Sequence[str | Path], threshold: FastCut, out: str | Path) -> Path:
    """Each fast-mode evaluation folder at `threshold` (`served`: each model's own held-back one) into
    <out>/<folder name>/, then their comparison; return compare.md's path."""
    out = Path(out)
    written = []
    for folder in map(Path, folders):
        metrics = read_fast_run(folder)
        model = metrics["config"]["model"]
        cut = held_back_threshold(model) if threshold == SERVED else Threshold(float(threshold), "--threshold")
        print(f"{metrics['label']}: flag at P(disallow) >= {cut.value:.4g}, {cut.source}")
        written.append(recut_run(folder, metrics, cut, out / folder.name))
    return compare(written, out)


def read_fast_run(folder: Path) -> dict:
    """A finished evaluation's metrics, refused (one line) unless fast mode made it: only fast mode saves scores."""
    path = folder / METRICS
    if not path.is_file():
        raise UserError(f"{folder} has no {METRICS}: not a finished evaluation")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    if metrics.get("config", {}).get("mode") != "fast":
        raise UserError(f"{folder} is not a fast-mode evaluation: only fast mode saves the scores a recut reads")
    return metrics


def recut_run(folder: Path, metrics: dict, cut: Threshold, out: Path) -> Path:
    """Write `folder`'s evaluation at `cut` as the evaluation folder `out`; return `out`."""
    if out.resolve() == folder.resolve():
        raise UserError(f"--out would overwrite {folder} itself: choose another folder")
    config = metrics["config"]
    records = [_at(record, cut.value) for record in evaluated_records(folder, metrics).values()]
    categories = list(metrics["per_category"])
    recut_metrics = compute_metrics(
        records, categories, config.get("n_bootstrap", 1000), config.get("seed", 0), config.get("target_fpr", 0.05)
    )
    recut_metrics.update(
        label=label_for(config["model"], "fast", cut.value),
        policy=metrics.get("policy"),
        skipped_rows=metrics.get("skipped_rows", {}),
        config={**config, "threshold": cut.value, "threshold_source": cut.source, "recut_from": str(folder)},
        ids=metrics["ids"],
    )
    write_evaluation(out, records, recut_metrics)
    write_reliability(recut_metrics, out)
    policy = policy_of(EvalConfig(**{k: v for k, v in config.items() if k in EvalConfig.model_fields}))
    write_report(out, recut_metrics, records, policy)
    return out


def _at(record: dict, threshold: float) -> dict:
    """A saved fast-mode record with its verdict read again at `threshold` (the gold fields and scores kept)."""
    if record.get("score") is None or "category_share" not in record:
        raise UserError(f"record {record.get('id')!r} has no saved score: re-run its evaluation in fast mode")
    scores = Scores(record["score"], record["category_share"], record["latency_s"])
    return {**record, **result_fields(fast_moderation(scores, threshold))}
