"""What a run leaves behind: its folder, merged models (atomic, READY last) and the manifest."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

from inference.runs import MANIFEST, RECIPE
from moderation.errors import UserError
from moderation.files import atomic_write_text
from moderation.paths import inside
from moderation.provenance import git_commit, versions
from training.recipe import Recipe


def save_merged(peft_model, tokenizer, target: Path) -> None:
    """Merge LoRA into the base weights and save atomically (a READY marker is written last)."""
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if hasattr(peft_model, "save_pretrained_merged"):  # Unsloth: dequantizes the 4-bit base, merges in 16 bit
        peft_model.save_pretrained_merged(str(staging), tokenizer, save_method="merged_16bit")
    else:
        merged = peft_model.merge_and_unload() if hasattr(peft_model, "merge_and_unload") else peft_model
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    (staging / "READY").write_text("complete\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def write_manifest(recipe: Recipe, timings: dict, metrics: dict, counts: dict, mlflow_run_id: str | None) -> None:
    manifest = {
        "policy": recipe.policy,
        "prompt": recipe.prompt.model_dump(),
        "base_model": recipe.model,
        "config": recipe.model_dump(mode="json"),
        "git_commit": git_commit(),
        "seed": recipe.seed,
        "versions": versions(("torch", "transformers", "trl", "peft", "datasets")),
        "timings_s": timings,
        "counts": counts,
        "final_metrics": metrics,
        "peak_rss_gb": peak_rss_gb(),
        "mlflow_run_id": mlflow_run_id,
    }
    atomic_write_text(recipe.run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str))


def peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)


def prepare_run_dir(recipe: Recipe) -> None:
    run_dir = recipe.run_dir
    if run_dir.exists() and any(run_dir.iterdir()) and not recipe.resume:
        if not recipe.overwrite:
            raise UserError(f"{run_dir} already exists: pass resume=true to continue or overwrite=true to restart")
        shutil.rmtree(inside(recipe.output_root, run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RECIPE).write_text(recipe.model_dump_json(indent=2))
