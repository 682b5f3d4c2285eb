"""The training pipeline, stage by stage: data (minus the holdout) → SFT warm-start → GRPO prompt filter → GRPO →
save (plot, manifest, MLflow artifacts)."""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path

from inference.runs import MANIFEST, MERGED, RECIPE
from moderation.errors import UserError
from moderation.policy import load_policy
from moderation.verdict import DISALLOW
from training.artifacts import peak_rss_gb, prepare_run_dir, write_manifest
from training.data import hold_back, load_rows, start_answers, to_prompt_rows
from training.grpo import run_grpo
from training.prompt_filter import disagreeing_prompts
from training.recipe import Recipe, require_runtime
from training.resume import COMPLETIONS, METRICS
from training.sft import run_sft
from training.tracking import make_tracker, plot_metrics


def open_mlflow_run(recipe: Recipe):
    """The run's MLflow side when the recipe tracks with MLflow (a resumed run reopens its MLflow run), else None."""
    if "mlflow" not in recipe.tracking:
        return None
    from training.mlflow_tracking import TrainingRun

    return TrainingRun(recipe.run_dir, recipe.name, recipe.model_dump(mode="json"), resume=recipe.resume)


def train(recipe: Recipe, callbacks=()) -> Path:
    """Train one recipe; `callbacks` are extra TrainerCallbacks (Modal adds a volume commit per checkpoint)."""
    require_runtime(recipe)
    import torch

    from inference.models import load_tokenizer, resolve_model

    timings: dict[str, float] = {}
    start = time.perf_counter()
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    prepare_run_dir(recipe)
    print(f"run: {recipe.run_dir}  (recipe saved to {recipe.run_dir / RECIPE})")

    # data
    policy = load_policy(recipe.policy)
    base_path = resolve_model(recipe.model)
    tokenizer = load_tokenizer(base_path)
    rows = hold_back(load_rows(recipe.dataset), recipe)
    rows, dropped = to_prompt_rows(rows, policy, tokenizer, recipe)
    print(f"data: {len(rows)} training prompts, {dropped} dropped for exceeding {recipe.max_prompt_tokens} tokens")
    if not rows:
        raise UserError("no training prompts left: raise max_prompt_tokens or lower prompt.max_listing_tokens")
    if recipe.grpo_task == "categories" and all(row["label"] != DISALLOW for row in rows):
        raise UserError("grpo_task=categories: no disallowed train rows to name the categories of")
    timings["data"] = time.perf_counter() - start

    # tracking
    mlflow_run = open_mlflow_run(recipe)
    tracker = make_tracker(recipe, recipe.run_dir, mlflow_run)

    with mlflow_run or contextlib.nullcontext():  # a stage that raises marks the MLflow run failed
        # SFT warm-start
        start_path: Path | str = base_path
        if recipe.sft.enabled:
            stage = time.perf_counter()
            start_path = run_sft(recipe, base_path, rows, tokenizer, tracker, callbacks)
            timings["sft"] = time.perf_counter() - stage

        # GRPO, on the prompts where the start model's group disagrees
        stage = time.perf_counter()
        started = start_answers(rows, tokenizer, recipe.fast_share, recipe.grpo_seeded, recipe.grpo_task)
        tracker.track(started)
        grpo_rows, kept_fraction = disagreeing_prompts(recipe, start_path, started, tokenizer, policy)
        timings["prompt_pool"] = time.perf_counter() - stage
        stage = time.perf_counter()
        metrics = run_grpo(recipe, start_path, grpo_rows, tokenizer, tracker, policy, callbacks)
        timings["grpo"] = time.perf_counter() - stage

    # save
    if (recipe.run_dir / METRICS).exists():
        plot_metrics(recipe.run_dir / METRICS, recipe.run_dir / "rewards.png")
    timings["total"] = time.perf_counter() - start
    counts = {"train_prompts": len(rows), "dropped_prompts": dropped, "grpo_prompts": len(grpo_rows)}
    counts["grpo_kept_fraction"] = kept_fraction
    write_manifest(recipe, timings, metrics, counts, mlflow_run.run_id if mlflow_run else None)
    if mlflow_run:
        mlflow_run.finish([recipe.run_dir / name for name in ("rewards.png", MANIFEST, COMPLETIONS)])
        print(f"MLflow run {mlflow_run.run_id} at {mlflow_run.client.tracking_uri}")
    print(f"done in {timings['total'] / 60:.1f} min, peak RSS {peak_rss_gb()} GB; model: {recipe.run_dir / MERGED}")
    return recipe.run_dir
