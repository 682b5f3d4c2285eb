"""The trained-run folder contract, read by evals and serving, written by train_grpo.py.

    runs/<name>/
      recipe.json     the recipe, written when the run starts (manifest.json: when it ends)
      manifest.json   {"policy": name-or-path, "prompt": PromptConfig fields, "base_model": ..., "config": ...}
      merged/         the merged model (HF folder with tokenizer): what evals and serving load
      adapter/        the LoRA adapter alone
      checkpoints/    trainer checkpoints for resume
      sft/merged/     the SFT warm-start's model: a stage, loaded with the run's policy and prompt (from recipe.json
                      while the run has no manifest yet: stopped or still in GRPO)

Anything that takes a model (evals, serving, the demo) accepts such a folder as well as an HF id, a local model
folder, or an embedded name, and rebuilds the exact prompt the run was trained with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from inference.generate import GenerationConfig, Moderator
from inference.models import load_model
from moderation.errors import UserError
from moderation.policy import load_policy
from moderation.prompt import PromptConfig

MANIFEST = "manifest.json"
RECIPE = "recipe.json"
MERGED = "merged"
ADAPTER = "adapter"


@dataclass(frozen=True)
class RunInfo:
    model_path: Path
    policy: str
    prompt: PromptConfig
    source: Path  # the manifest (or, for a stage of an unfinished run, the recipe) the policy and prompt came from


def read_run(path: str | Path) -> RunInfo | None:
    """The run stored at `path`, or None when `path` is not a run folder (an HF id, a plain model folder). A stage
    inside a run (runs/<name>/sft: merged/ without a manifest of its own) reads as its own merged model with the
    run's policy and prompt, so evals, serving and export accept the same folders; before the run has a manifest
    (stopped during GRPO, or still in it), they come from the recipe it started with."""
    folder = Path(path)
    if (folder / MANIFEST).is_file():
        return _run_from_manifest(folder / MANIFEST, folder / MERGED)
    if (folder / MERGED).is_dir():
        for record in (folder.parent / MANIFEST, folder.parent / RECIPE):
            if record.is_file():
                return _run_from_manifest(record, folder / MERGED)
    return None


def _run_from_manifest(manifest_path: Path, model_path: Path) -> RunInfo:
    if not model_path.is_dir():
        raise UserError(f"{manifest_path.parent} has a manifest but no {MERGED}/ model: the run did not finish saving")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        return RunInfo(model_path, manifest["policy"], PromptConfig(**manifest.get("prompt", {})), manifest_path)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{manifest_path}: unreadable run manifest ({error})") from None


def load_moderator(
    model: str | Path,
    policy: str | Path | None = None,
    prompt_config: PromptConfig | None = None,
    generation: GenerationConfig | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> Moderator:
    """A Moderator for a model or run folder; a run's own policy and prompt settings apply unless overridden.
    `dtype` bfloat16 runs inference ~2.4x faster on CPUs with bf16 support (float32 stays the reference)."""
    run = read_run(model)
    loaded, tokenizer = load_model(run.model_path if run else model, dtype=dtype, device=device)
    return Moderator(
        loaded,
        tokenizer,
        load_policy(policy or (run.policy if run else "marketplace")),
        prompt_config or (run.prompt if run else PromptConfig()),
        generation,
    )
