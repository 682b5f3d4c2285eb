"""GRPO post-training of a listing moderator: data → model → SFT warm-start → GRPO → save.

Local (CPU or one GPU), with the embedded SmolLM2-135M by default:
    python train_grpo.py --recipe configs/recipes/cpu-smollm2.yaml [key=value ...]
    python train_grpo.py --recipe configs/recipes/cpu-smollm2.yaml resume=true     # continue after a kill
    python train_grpo.py --help                                                     # every recipe field

On a Modal GPU (Unsloth 4-bit + vLLM rollouts; see training/modal_app.py):
    python train_grpo.py --recipe configs/recipes/modal-llama8b.yaml --dry-run     # validate, print the Modal setup
    modal run train_grpo.py --recipe configs/recipes/modal-llama8b.yaml [--overrides "max_steps=20"]

Everything a run produces lands in runs/<name>/ (see moderation/runs.py): merged/ and adapter/ for evals and
serving, sft/merged/ (the warm-start alone, for before/after comparisons), checkpoints/, metrics.jsonl,
completions.jsonl, rewards.png and manifest.json.

The training library lives in training/: recipe (schema, loading), data (rows → prompts), sft, grpo, tracking
(metrics.jsonl, plots, wandb; MLflow in mlflow_tracking), resume, artifacts (save, merge, manifest) and pipeline
(the stages in order); modal_app is the Modal side.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from moderation.config import describe_fields
from moderation.errors import cli_main
from training.modal_app import app, describe, launch
from training.pipeline import train
from training.recipe import Recipe, load_recipe


@cli_main
def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="train_grpo.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="recipe fields (YAML keys, or key=value overrides):\n" + "\n".join(describe_fields(Recipe)),
    )
    parser.add_argument("--recipe", type=Path, help="recipe YAML (e.g. configs/recipes/cpu-smollm2.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe fields")
    parser.add_argument("--dry-run", action="store_true", help="validate, print the Modal launch setup, and exit")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        print(describe(recipe))
        return
    train(recipe)


@app.local_entrypoint()
@cli_main
def modal_main(recipe: str, overrides: str = "", dry_run: bool = False) -> None:
    """`modal run train_grpo.py --recipe X`: validate the recipe here, then train it on a Modal GPU."""
    launch(load_recipe(recipe, shlex.split(overrides)), dry_run=dry_run)


if __name__ == "__main__":
    cli()
