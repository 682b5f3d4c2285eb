"""The SFT warm-start: LoRA on rendered gold answers (loss on the answer only), merged into a full model."""

from __future__ import annotations

import math
import random
from pathlib import Path

from inference.runs import MERGED
from moderation.errors import UserError
from moderation.verdict import render
from training.artifacts import save_merged
from training.models import device_kwargs, lora_config
from training.recipe import Recipe, sft_args
from training.resume import start_stage


def sft_examples(rows: list[dict], fast_share: float, seed: int) -> list[dict]:
    """Prompt/completion pairs; a seeded `fast_share` of them answer with an empty reasoning, the exact assistant
    prefix fast mode forces, so its single forward pass reads a state the model was trained on."""
    fast = set(random.Random(seed).sample(range(len(rows)), round(fast_share * len(rows))))
    return [
        {
            "prompt": row["prompt"],
            "completion": [
                {"role": "assistant", "content": render(row["label"], row["categories"], "")}
                if index in fast
                else row["completion"][0]
            ],
        }
        for index, row in enumerate(rows)
    ]


def oversampled(rows: list[dict], copies: dict[str, int]) -> list[dict]:
    """`rows` with each row from a source in `copies` repeated that many times (other rows once), in their order. A
    source no row has is refused: a misspelt name would silently train the recipe it meant to change."""
    missing = set(copies) - {row.get("source") for row in rows}
    if missing:
        raise UserError(f"sft.oversample: no train rows from source {', '.join(sorted(missing))}")
    return [row for row in rows for _ in range(copies.get(row.get("source"), 1))]


def sft_steps(recipe: Recipe, rows: int) -> int:
    """Optimizer steps: `sft.max_steps` when set, else `sft.epochs` passes over the rows."""
    return recipe.sft.max_steps or math.ceil(recipe.sft.epochs * rows / recipe.sft.batch_size)


def sft_trainer(recipe: Recipe, base_path: str | Path, rows: list[dict], tokenizer, steps: int, callbacks=()):
    """The warm-start's trainer: LoRA on `base_path`, answer-only loss, `steps` steps over `rows`' SFT examples."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from training.trl_adapter import AnswerOnlySFTTrainer

    model = AutoModelForCausalLM.from_pretrained(base_path, dtype="float32")
    return AnswerOnlySFTTrainer(
        model=model,
        args=sft_args(recipe, steps, device_kwargs(recipe)),
        train_dataset=Dataset.from_list(sft_examples(rows, recipe.sft.fast_share, recipe.seed)),
        processing_class=tokenizer,
        peft_config=lora_config(recipe, model.config.num_hidden_layers),
        callbacks=list(callbacks),
        bucket_by_length=recipe.sft.bucket_by_length,
    )


def run_sft(recipe: Recipe, base_path: str, rows: list[dict], tokenizer, tracker, callbacks=()) -> Path:
    """Warm-start: LoRA SFT on rendered gold answers (loss on the answer only), merged into a full model."""
    from training.trl_adapter import check_trl_version

    out = recipe.run_dir / "sft"
    merged = out / MERGED
    if (merged / "READY").exists():
        print(f"SFT warm-start already done: {merged}")
        return merged
    check_trl_version()
    tracker.stage = "sft"
    if recipe.sft.oversample:
        before, rows = len(rows), oversampled(rows, recipe.sft.oversample)
        print(f"SFT oversample {recipe.sft.oversample}: {before} rows -> {len(rows)} examples an epoch")
    trainer = sft_trainer(recipe, base_path, rows, tokenizer, sft_steps(recipe, len(rows)), [tracker, *callbacks])
    last, _ = start_stage(recipe.run_dir, "sft", out / "checkpoints", recipe.resume)
    trainer.train(resume_from_checkpoint=last)
    save_merged(trainer.model, tokenizer, merged)
    tracker.stage = "grpo"
    return merged
