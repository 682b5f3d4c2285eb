"""Moderate the sample listings zero-shot with a model and the default policy, and print the verdicts.

python -m moderation.demo [--model smollm2-135m] [--policy marketplace]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from inference.generate import GenerationConfig, Moderator
from inference.models import DEFAULT_MODEL, load_model
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


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m moderation.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="HF id, local path or embedded name")
    parser.add_argument("--policy", default="marketplace", help="policy name in configs/policies or a YAML path")
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="YAML list of {text, expected}")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args(argv)

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
