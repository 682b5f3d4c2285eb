"""What a serving mode is known to score: the dev accuracy that `evals` measured for this model, read from its run.

`make eval` (`python -m evals suite ... --out runs/<name>/eval`) leaves `runs/<name>/eval/<data>/<label>/metrics.json`,
whose `config` names the model and the data. evals generate and parse, so their numbers are reasoning mode's; an eval
whose config says `"mode": "fast"` validates fast mode. Fast mode with no such record is refused unless the user asks
for it: its one forward pass reads a state the model was never trained on and can miss every violation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from moderation.errors import UserError

EVAL_FOLDER = "eval"
DEV = "dev"


@dataclass(frozen=True)
class Measured:
    """One eval on record: the mode it measured, its dev accuracy and size, and where it was read from."""

    mode: str
    accuracy: float
    n: int
    path: Path

    def describe(self) -> str:
        return f"measured dev accuracy ({self.mode} mode): {self.accuracy:.3f} on {self.n} items ({self.path})"


def measured(model: str, mode: str, eval_dir: str | None = None) -> Measured | None:
    """The largest dev eval of `model` in `mode` under `eval_dir` (default: the run's eval folder), or None."""
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
            row = Measured(config.get("mode", "reasoning"), float(metrics["accuracy"]), int(metrics["n"]), path)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a torn or foreign file is no record
        if same_model and row.mode == mode and Path(str(config.get("data", ""))).stem == DEV:
            found.append(row)
    return max(found, key=lambda row: row.n, default=None)


def check_modes(model: str, modes: set[str], allow_unvalidated_fast: bool, eval_dir: str | None = None) -> None:
    """Refuse serving fast mode (as default or per request) when no eval of it is on record, unless allowed."""
    if "fast" in modes and not allow_unvalidated_fast and measured(model, "fast", eval_dir) is None:
        raise UserError(
            f"fast mode has no dev validation on record for {model} (it can miss every violation); "
            "use --mode reasoning, or pass --allow-unvalidated-fast to serve it anyway"
        )
