"""What a serving mode is known to score: the dev accuracy that `evals` measured for this model, read from its run.

`make eval` (`python -m evals suite ... --out runs/<name>/eval`) leaves `runs/<name>/eval/<data>/<label>/metrics.json`,
whose `config` names the model and the data. evals generate and parse, so their numbers are reasoning mode's; an eval
whose config says `"mode": "fast"` validates fast mode. Fast mode with no such record is refused unless the user asks
for it: its one forward pass reads a state the model was never trained on and can miss every violation.

A fast-mode eval also scores P(DISALLOW) itself (its `scores` block, evals.calibration): the lowest threshold whose
false-positive rate stays within the eval's `--target-fpr` (5% by default) becomes fast mode's default serving
threshold. It is read from an eval of the run's held-back train slice (`holdout.parquet`, what `make eval` scores
first), so dev and test never choose it; a dev eval stands in when no holdout eval exists, and 0.5 when neither does.
A measured threshold below 0.5 is raised to 0.5: the slice is in training's wording, which the model reads better than
new listings, so a cut below even odds meets the budget there and overshoots it on new text (docs/experiments.md,
"Never below even odds").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from moderation.errors import UserError

EVAL_FOLDER = "eval"
DEV = "dev"
HOLDOUT = "holdout"
DEFAULT_THRESHOLD = 0.5
SERVED = "served"  # evals' name for the threshold serve takes from a model's held-back slice


@dataclass(frozen=True)
class Measured:
    """One eval on record: the mode it measured, its dev accuracy and size, and where it was read from."""

    mode: str
    accuracy: float
    n: int
    path: Path
    # fast-mode evals: the lowest P(DISALLOW) threshold whose dev FPR stays within target_fpr (None: none does)
    threshold: float | None = None
    target_fpr: float | None = None

    def describe(self) -> str:
        return f"measured dev accuracy ({self.mode} mode): {self.accuracy:.3f} on {self.n} items ({self.path})"


def measured(model: str, mode: str, eval_dir: str | None = None, split: str = DEV) -> Measured | None:
    """The largest eval of `model` in `mode` on `split` under `eval_dir` (default: the run's eval folder), or None."""
    folder = Path(eval_dir) if eval_dir else Path(model) / EVAL_FOLDER
    if not folder.is_dir():
        return None
    target = Path(model).resolve()
    found = []
    for path in folder.rglob("metrics.json"):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
            config = metrics["config"]
            same_model = Path(config["model"]).resolve() == target
            accuracy, n, scores = float(metrics["accuracy"]), int(metrics["n"]), metrics.get("scores")
            row = Measured(config.get("mode", "reasoning"), accuracy, n, path, *_fpr_threshold(scores))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a torn or foreign file is no record
        if same_model and row.mode == mode and Path(str(config.get("data", ""))).stem == split:
            found.append(row)
    return max(found, key=lambda row: row.n, default=None)


def check_modes(model: str, modes: set[str], allow_unvalidated_fast: bool, eval_dir: str | None = None) -> None:
    """Refuse serving fast mode (as default or per request) when no eval of it is on record, unless allowed."""
    if "fast" in modes and not allow_unvalidated_fast and measured(model, "fast", eval_dir) is None:
        raise UserError(
            f"fast mode has no dev validation on record for {model} (it can miss every violation); "
            "use --mode reasoning, or pass --allow-unvalidated-fast to serve it anyway"
        )


def _fpr_threshold(scores) -> tuple[float | None, float | None]:
    """(threshold, its FPR budget) from a metrics.json `scores` block's `threshold_at_fpr` (evals.calibration): the
    5% budget's when recorded, else the budget the eval was run with; (None, None) without one."""
    try:
        table = scores["threshold_at_fpr"]
        budget = "0.05" if "0.05" in table else next(iter(table))
        threshold = table[budget]
        return (None if threshold is None else float(threshold)), float(budget)
    except (KeyError, TypeError, ValueError, StopIteration):
        return None, None


@dataclass(frozen=True)
class Threshold:
    """Fast mode's flag threshold and where it came from (shown at startup and in /health)."""

    value: float
    source: str


def serving_threshold(model: str, given: float | None, eval_dir: str | None = None) -> Threshold:
    """`given` (--threshold) when set; else the FPR-budget threshold (5% unless the eval chose another) of the model's
    largest fast-mode eval on its holdout, else on dev; else 0.5."""
    if given is not None:
        return Threshold(given, "--threshold")
    split, record = HOLDOUT, measured(model, "fast", eval_dir, HOLDOUT)
    if record is None:
        split, record = DEV, measured(model, "fast", eval_dir, DEV)
    if record is None or record.target_fpr is None:
        return Threshold(DEFAULT_THRESHOLD, "default (no fast-mode holdout or dev eval with scores on record)")
    if record.threshold is None:
        return Threshold(DEFAULT_THRESHOLD, f"default (no threshold kept {_budget(record, split)})")
    return _at_least_even_odds(record, split)


def held_back_threshold(model: str, eval_dir: str | None = None) -> Threshold:
    """The threshold serve takes from the model's held-back slice, and only from there (a one-line error without one):
    what an honest comparison on dev or test cuts at, since neither chose it."""
    if found := _held_back(model, eval_dir):
        return found
    where = Path(eval_dir) if eval_dir else Path(model) / EVAL_FOLDER
    raise UserError(
        f"{model}: no fast-mode eval of its held-back slice with a threshold under {where} "
        f"(python -m evals run --model {model} --mode fast --data <run>/{HOLDOUT}.parquet --out {where}/{HOLDOUT})"
    )


def held_back_or_default(model: str, eval_dir: str | None = None) -> Threshold:
    """The held-back slice's threshold, else 0.5 (never dev's): what `evals run --mode fast` cuts at by default, so an
    eval scores the verdicts serve would give without tuning on the data it is judged on."""
    return _held_back(model, eval_dir) or Threshold(
        DEFAULT_THRESHOLD, f"default (no fast-mode eval of its held-back slice with a threshold under {model})"
    )


def _held_back(model: str, eval_dir: str | None) -> Threshold | None:
    record = measured(model, "fast", eval_dir, HOLDOUT)
    if record is None or record.threshold is None:
        return None
    return _at_least_even_odds(record, HOLDOUT)


def _at_least_even_odds(record: Measured, split: str) -> Threshold:
    """The record's FPR-budget threshold, raised to 0.5 when below it (see the module docstring for why)."""
    if record.threshold >= DEFAULT_THRESHOLD:
        return Threshold(record.threshold, f"the threshold at {_budget(record, split)}")
    return Threshold(
        DEFAULT_THRESHOLD, f"0.5, raised from {record.threshold:.4g}, the threshold at {_budget(record, split)}"
    )


def _budget(record: Measured, split: str) -> str:
    return f"{record.target_fpr:.0%} FPR on {split} ({record.path})"
