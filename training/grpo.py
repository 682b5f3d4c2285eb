"""GRPO: TRL's GRPOTrainer (or the shared-prefix variant) on the recipe's rewards, resumable, saved as adapter and
merged model."""

from __future__ import annotations

import os
from pathlib import Path

from inference.runs import ADAPTER, MERGED
from moderation.policy import Policy
from training.artifacts import save_merged
from training.models import device_kwargs, lora_config
from training.recipe import Recipe
from training.resume import start_stage
from training.tracking import report_to


def run_grpo(
    recipe: Recipe, start_path: Path | str, rows: list[dict], tokenizer, tracker, policy: Policy, callbacks=()
):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    import rewards
    from training.rollout import SharedPrefixRollout
    from training.shared_prefix import SharedPrefixGRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL 1.x
    checkpoints = recipe.run_dir / "checkpoints"
    args = GRPOConfig(
        output_dir=str(checkpoints),
        num_generations=recipe.num_generations,
        max_completion_length=recipe.max_completion_length,
        temperature=recipe.temperature,
        learning_rate=recipe.learning_rate,
        loss_type=recipe.loss_type,
        beta=recipe.beta,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        reward_weights=recipe.reward_weights,
        save_steps=recipe.save_steps,
        save_strategy="steps",
        save_total_limit=recipe.save_total_limit,
        logging_steps=recipe.logging_steps,
        report_to=report_to(recipe),
        run_name=recipe.name,
        seed=recipe.seed,
        log_completions=False,
        gradient_checkpointing=recipe.gradient_checkpointing,
        use_vllm=recipe.use_vllm,
        vllm_mode=recipe.vllm_mode,
        vllm_server_host=recipe.vllm_server_host,
        vllm_server_port=recipe.vllm_server_port,
        vllm_gpu_memory_utilization=recipe.vllm_gpu_memory_utilization,
        **device_kwargs(recipe),
    )
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
    last, tracker.completions_through = start_stage(recipe.run_dir, "grpo", checkpoints, recipe.resume)
    result = trainer.train(resume_from_checkpoint=last)
    trainer.model.save_pretrained(recipe.run_dir / ADAPTER)
    save_merged(trainer.model, tokenizer, recipe.run_dir / MERGED)
    return result.metrics
