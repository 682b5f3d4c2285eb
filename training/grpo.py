"""GRPO: TRL's GRPOTrainer (or the shared-prefix variant) on the recipe's rewards, resumable, saved as adapter and
merged model."""

from __future__ import annotations

import os
from pathlib import Path

from inference.runs import ADAPTER, MERGED
from moderation.policy import Policy
from training.artifacts import save_merged
from training.models import device_kwargs, lora_config
from training.recipe import Recipe, grpo_args
from training.resume import start_stage
from training.tracking import report_to


def run_grpo(
    recipe: Recipe, start_path: Path | str, rows: list[dict], tokenizer, tracker, policy: Policy, callbacks=()
):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer

    import rewards
    from training.rollout import SharedPrefixRollout
    from training.trl_adapter import SharedPrefixGRPOTrainer, check_trl_version

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL 1.x
    check_trl_version()
    args = grpo_args(recipe, device_kwargs(recipe), report_to(recipe))
    dataset = Dataset.from_list([{k: v for k, v in r.items() if k != "completion"} for r in rows])
    if recipe.backend == "unsloth":
        from training.unsloth_backend import load_model

        model, tokenizer = load_model(recipe, str(start_path))  # LoRA already attached
        peft_config = None
    else:
        model = AutoModelForCausalLM.from_pretrained(str(start_path), dtype="float32")
        peft_config = lora_config(recipe, model.config.num_hidden_layers)
    shared_prefix = recipe.rollout == "shared_prefix"
    trainer = (SharedPrefixGRPOTrainer if shared_prefix else GRPOTrainer)(
        model=model,
        reward_funcs=rewards.build_rewards(recipe.reward_funcs, policy, recipe.reward_params),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[tracker, *callbacks],
        rollout_func=SharedPrefixRollout() if shared_prefix else None,
    )
    tracker.trainer = trainer
    last, tracker.completions_through = start_stage(recipe.run_dir, "grpo", Path(args.output_dir), recipe.resume)
    result = trainer.train(resume_from_checkpoint=last)
    trainer.model.save_pretrained(recipe.run_dir / ADAPTER)
    save_merged(trainer.model, tokenizer, recipe.run_dir / MERGED)
    return result.metrics
