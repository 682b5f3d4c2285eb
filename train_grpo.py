"""GRPO post-training of a listing moderator: data → model → SFT warm-start → GRPO → save.

Local (CPU or one GPU), with the embedded SmolLM2-135M by default:
    python train_grpo.py --recipe configs/recipes/cpu-smollm2.yaml [key=value ...]
    python train_grpo.py --recipe configs/recipes/cpu-smollm2.yaml resume=true     # continue after a kill
    python train_grpo.py --help                                                     # every recipe field

On a Modal GPU (Unsloth 4-bit + vLLM rollouts; see training/modal_app.py):
    python train_grpo.py --recipe configs/recipes/modal-llama8b.yaml --dry-run     # validate, print the Modal setup
    modal run train_grpo.py --recipe configs/recipes/modal-llama8b.yaml [--overrides "max_steps=20"]

Everything a run produces lands in runs/<name>/ (see inference/runs.py): merged/ and adapter/ for evals and
serving, sft/merged/ (the warm-start alone, for before/after comparisons), checkpoints/, metrics.jsonl,
completions.jsonl, rewards.png and manifest.json.

The training library lives in training/: recipe (schema, loading), data (rows → prompts), sft, grpo, tracking
(metrics.jsonl, plots, wandb; MLflow in mlflow_tracking), resume, artifacts (save, merge, manifest) and pipeline
(the stages in order); modal_app is the Modal side.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from pydantic import BaseModel, Field

from moderation.config import split_options
from moderation.errors import cli_main
from training.modal_app import app, describe, launch
from training.pipeline import train
from training.recipe import Recipe, load_recipe


class Options(BaseModel):
    """train_grpo.py's own options; every other argument sets a recipe field (`max_steps=4` or `--max_steps 4`)."""

    recipe: Path | None = Field(None, description="recipe YAML (e.g. configs/recipes/cpu-smollm2.yaml)")
    dry_run: bool = Field(False, description="validate, print the Modal launch setup, and exit")


@cli_main
def cli(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    description = __doc__.split("\n\n")[0]
    args, overrides = split_options(Options, argv, prog="train_grpo.py", description=description, config=Recipe)
    recipe = load_recipe(args.recipe, overrides)
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
