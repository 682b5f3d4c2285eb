"""Audit rewards over a file of completions: are they firing, do groups carry signal, is the policy gaming them?

    python -m rewards.audit completions.jsonl [--policy marketplace] [--rewards verdict,categories] [--json]
    python -m rewards.audit runs/x/completions/          # TRL's logged completions_*.parquet (log_completions=True)

Input rows (JSONL): {"completion": str | chat messages, "label": "allow"|"disallow", "categories": [...],
"text": listing, "group": optional id of the GRPO group, "rewards": optional {name: value} logged in training}.
TRL's parquet logs carry prompt, completion and one column per reward but no labels: the listing is read back from
the prompt's <listing> block, rows are grouped by (step, prompt), and a reward that needs a missing column is
reported from its logged values when there are any.

Reported per reward: mean, std, count, not-applicable count, and the fraction of groups whose values are all equal
(zero variance: no GRPO learning signal); the same for the (weighted) sum; and suspected hacks:
`copied_listing` (most of the reasoning is listing text), `empty_reasoning_right_verdict`, `category_spam`
(more than `spam_margin` categories beyond the gold ones), `template_reasoning` (a reasoning that cites no content word
of its listing: boilerplate such as "The listing is fine." that would read the same for any listing).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from moderation.config import parse_command_line
from moderation.errors import UserError, cli_main
from moderation.jsonl import read_jsonl_lines
from moderation.policy import Policy, load_policy
from rewards.grounding import content_words
from rewards.reasoning import copied_fraction, words
from rewards.registry import REGISTRY, build_rewards, completion_text, parsed, required_columns

HACKS = ("copied_listing", "empty_reasoning_right_verdict", "category_spam", "template_reasoning")
_LISTING = re.compile(r"<listing>\n?(.*?)\n?</listing>", re.DOTALL)


@dataclass
class RewardStats:
    """Summary of one reward (or the sum) over the audited completions."""

    mean: float | None
    std: float | None
    count: int  # completions with a value
    not_applicable: int  # completions where the reward returned None
    zero_variance_groups: float | None  # share of groups with all values equal; None without groups
    source: str = "computed"  # "computed" here, or "logged" (read from TRL's reward column)


@dataclass
class AuditReport:
    completions: int
    groups: int
    rewards: dict[str, RewardStats]
    total: RewardStats
    hacks: dict[str, int]
    hack_rows: dict[str, list[int]] = field(default_factory=dict)  # first row indices of each suspected hack
    skipped: dict[str, str] = field(default_factory=dict)  # reward → why it was not computed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [f"{self.completions} completions, {self.groups} groups", ""]
        lines.append(f"{'reward':<20} {'mean':>8} {'std':>8} {'n':>6} {'n/a':>6} {'zero-var groups':>16}")
        for name, s in [*self.rewards.items(), ("(sum)", self.total)]:
            zero = "-" if s.zero_variance_groups is None else f"{s.zero_variance_groups:.0%}"
            mark = " (logged)" if s.source == "logged" else ""
            lines.append(
                f"{name:<20} {_num(s.mean):>8} {_num(s.std):>8} {s.count:>6} {s.not_applicable:>6} {zero:>16}{mark}"
            )
        lines += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        lines.append("")
        for hack in HACKS:
            rows = self.hack_rows.get(hack, [])
            where = f" (rows {', '.join(map(str, rows))})" if rows else ""
            lines.append(f"suspected {hack}: {self.hacks[hack]}{where}")
        return "\n".join(lines)


def audit(
    records: Sequence[Mapping[str, Any]],
    policy: Policy,
    names: Iterable[str] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    weights: Mapping[str, float] | None = None,
    copy_threshold: float = 0.5,
    spam_margin: int = 2,
    example_rows: int = 5,
) -> AuditReport:
    """Run rewards (default: every registered one) over `records` and summarise them. See the module doc.

    `params` are `build_rewards` params; `weights` (reward name → weight, default 1.0) weigh the total as a recipe's
    `reward_weights` do in TRL.
    """
    if not records:
        raise UserError("no completions to audit")
    names = list(REGISTRY if names is None else names)
    built = dict(zip(names, build_rewards(names, policy, params), strict=True))  # validates names and params
    columns = {key: [r.get(key) for r in records] for key in {k for r in records for k in r}}
    completions = columns.pop("completion", [None] * len(records))
    groups = _group_index(columns.get("group", [None] * len(records)))
    values: dict[str, list[float | None]] = {}
    sources: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name in names:
        missing = [c for c in required_columns(name) if c not in columns or any(v is None for v in columns[c])]
        if not missing:
            values[name], sources[name] = list(built[name](completions, **columns)), "computed"
        elif all(name in (r.get("rewards") or {}) for r in records):
            values[name], sources[name] = [_none_if_nan(r["rewards"][name]) for r in records], "logged"
        else:
            skipped[name] = f"needs column(s) {', '.join(missing)}"
    scale = [(weights or {}).get(name, 1.0) for name in values]
    rows = list(zip(*values.values(), strict=True)) if values else [()] * len(records)
    total = [
        None
        if all(v is None for v in row)
        else math.fsum(w * v for w, v in zip(scale, row, strict=True) if v is not None)
        for row in rows
    ]
    hack_rows = _hacks(records, completions, policy, copy_threshold, spam_margin)
    return AuditReport(
        completions=len(records),
        groups=len(groups),
        rewards={name: _stats(v, groups, sources[name]) for name, v in values.items()},
        total=_stats(total, groups, "computed"),
        hacks={hack: len(hack_rows[hack]) for hack in HACKS},
        hack_rows={hack: hack_rows[hack][:example_rows] for hack in HACKS},
        skipped=skipped,
    )


def _hacks(
    records: Sequence[Mapping[str, Any]], completions: list[Any], policy: Policy, copy_threshold: float, margin: int
) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {hack: [] for hack in HACKS}
    known = frozenset(policy.category_ids)
    for i, (record, completion) in enumerate(zip(records, completions, strict=True)):
        verdict = parsed(completion_text(completion), known)
        listing, label, gold = record.get("text"), record.get("label"), record.get("categories")
        if isinstance(listing, str) and copied_fraction(verdict.reasoning, listing) >= copy_threshold:
            found["copied_listing"].append(i)
        if (
            isinstance(listing, str)
            and words(verdict.reasoning)
            and not content_words(verdict.reasoning) & content_words(listing)
        ):
            found["template_reasoning"].append(i)
        if label is not None and verdict.decision == label and not words(verdict.reasoning):
            found["empty_reasoning_right_verdict"].append(i)
        gold_count = 0 if gold is None else len(gold)
        if len(verdict.categories) + len(verdict.unknown_categories) > gold_count + margin:
            found["category_spam"].append(i)
    return found


def _group_index(group_ids: list[Any]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, group in enumerate(group_ids):
        if group is not None:
            groups[_hashable(group)].append(i)
    return dict(groups)


def _stats(values: list[float | None], groups: dict[Any, list[int]], source: str) -> RewardStats:
    present = [v for v in values if v is not None]
    mean = math.fsum(present) / len(present) if present else None
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in present) / len(present)) if present else None
    scored = [[values[i] for i in rows if values[i] is not None] for rows in groups.values()]
    scored = [g for g in scored if len(g) > 1]
    zero = sum(max(g) - min(g) < 1e-9 for g in scored) / len(scored) if scored else None
    return RewardStats(mean, std, len(present), len(values) - len(present), zero, source)


def load_completions(path: str | Path) -> list[dict[str, Any]]:
    """Rows from a JSONL file, or from TRL's logged `completions_*.parquet` (one file or the folder of them)."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".parquet":
        return _load_trl_parquet(path)
    try:
        lines = read_jsonl_lines(path)
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: invalid JSON: {error.msg}") from None
        if not isinstance(row, dict) or "completion" not in row:
            raise UserError(f"{path}:{number}: each line must be an object with a 'completion' field")
        rows.append(row)
    return rows


def _load_trl_parquet(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    files = sorted(path.glob("completions_*.parquet")) if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        raise UserError(f"no TRL completions parquet at {path} (expected completions_*.parquet)")
    rows = []
    for file in files:
        for logged in pd.read_parquet(file).to_dict("records"):
            logged = {k: _plain(v) for k, v in logged.items()}
            prompt = logged.get("prompt")
            rows.append(
                {
                    "completion": logged.get("completion"),
                    "text": _listing_from_prompt(prompt),
                    "group": json.dumps([logged.get("step"), prompt], default=str),
                    "rewards": {k: v for k, v in logged.items() if k in REGISTRY and isinstance(v, float | int)},
                }
            )
    return rows


def _listing_from_prompt(prompt: Any) -> str | None:
    """The listing inside the last <listing> block of a prompt (string or chat messages), as the model saw it."""
    text = prompt if isinstance(prompt, str) else completion_text(prompt) if isinstance(prompt, list) else None
    matches = _LISTING.findall(text) if isinstance(text, str) else []
    return matches[-1] if matches else None


def _plain(value: Any) -> Any:
    """numpy arrays and scalars from parquet → lists and Python numbers."""
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, list | dict) else value


def _none_if_nan(value: float | int | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class AuditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="JSONL of completions, or TRL's completions_*.parquet (file or folder); positional")
    policy: str = Field("marketplace", description="policy name or path")
    rewards: str | None = Field(
        None, description=f"comma-separated rewards (default: all of {', '.join(sorted(REGISTRY))})"
    )
    as_json: bool = Field(False, alias="json", description="print the report as JSON")


@cli_main
def main(argv: Sequence[str] | None = None) -> AuditReport:
    description = __doc__.split("\n\n")[0]
    _, args = parse_command_line(
        AuditConfig, argv, prog="python -m rewards.audit", description=description, positional="file"
    )
    names = args.rewards.split(",") if args.rewards else None
    report = audit(load_completions(args.file), load_policy(args.policy), names)
    print(json.dumps(report.to_dict(), indent=2) if args.as_json else report.render())
    return report


if __name__ == "__main__":
    main()
