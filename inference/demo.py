"""Moderate the sample listings zero-shot with a model and the default policy, and print the verdicts.

python -m inference.demo [--model smollm2-135m] [--policy marketplace]
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from inference.generate import GenerationConfig, Moderator
from inference.models import DEFAULT_MODEL, load_model
from moderation.config import parse_command_line
from moderation.errors import UserError, cli_main
from moderation.paths import CONFIGS
from moderation.policy import load_policy

SAMPLES = CONFIGS / "samples" / "listings.yaml"


def load_samples(path: Path) -> list[dict]:
    try:
        samples = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"cannot read samples {path}: {error}") from None
    if not isinstance(samples, list) or not all(isinstance(s, dict) and "text" in s for s in samples):
        raise UserError(f"{path}: expected a list of mappings with a 'text' key")
    return samples


class DemoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="HF id, local path or embedded name")
    policy: str = Field("marketplace", description="policy name in configs/policies or a YAML path")
    samples: Path = Field(SAMPLES, description="YAML list of {text, expected}")
    max_new_tokens: int = Field(96, ge=1, description="generation budget per listing")


@cli_main
def main(argv: list[str] | None = None) -> None:
    description = __doc__.split("\n\n")[0]
    _, args = parse_command_line(DemoConfig, argv, prog="python -m inference.demo", description=description)

    console = Console()
    policy = load_policy(args.policy)
    samples = load_samples(args.samples)
    with console.status(f"loading {args.model}"):
        model, tokenizer = load_model(args.model)
    moderator = Moderator(model, tokenizer, policy, generation=GenerationConfig(max_new_tokens=args.max_new_tokens))
    with console.status(f"moderating {len(samples)} listings"):
        results = moderator.moderate([s["text"] for s in samples])

    table = Table(title=f"{args.model} zero-shot on policy '{policy.name}'", show_lines=True)
    for column in ("listing", "expected", "verdict", "status", "raw completion"):
        table.add_column(column, overflow="fold")
    for sample, result in zip(samples, results, strict=True):
        verdict = result.verdict
        shown = verdict.decision or "-"
        if verdict.categories:
            shown += ": " + ", ".join(verdict.categories)
        table.add_row(
            sample["text"][:90],
            sample.get("expected", "?"),
            shown,
            verdict.status,
            result.completion.replace("\n", " ⏎ ")[:200],
        )
    console.print(table)
    parsed = sum(r.verdict.parsed for r in results)
    console.print(f"{parsed}/{len(results)} completions parsed; an untrained 135M model rarely follows the format.")


if __name__ == "__main__":
    main()
