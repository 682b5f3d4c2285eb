"""Seconds per GRPO step: TRL with its defaults vs our CPU settings, same model, data and batch, in one run.

    python benchmarks/train_step.py [--model smollm2-135m] [--steps 3] [--warmup 1]

baseline: GRPOConfig defaults (bf16 autocast, gradient checkpointing, TRL's generate) with only the shared settings
          below set, plus use_cpu where there is no GPU (TRL's bf16 default refuses to start on CPU without it).
rollout:  fp32, no gradient checkpointing, shared-prefix rollouts (training/rollout.py); TRL's loss forward.
ours:     as rollout, plus the shared-prefix loss forward (training/shared_prefix.py), as in the CPU recipe.
Shared:   the policy's own examples as prompts (compact CPU prompt), 2 prompts × 4 generations per step, 64 new tokens,
          the recipe's rewards, LoRA r16 all-linear, same seed. Each variant runs in its own process, so the peak RSS
          printed is its own.
A step takes 10-20 s on 2 cores, so the whole run takes a few minutes; keep the machine otherwise idle (2 contended
cores slow torch down several-fold).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ["baseline", "rollout", "ours"]
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "recipes" / "cpu-smollm2.yaml"


def run_variant(variant: str, model_name: str, steps: int, warmup: int, queue) -> None:
    os.environ.update(WANDB_MODE="disabled", TRL_EXPERIMENTAL_SILENCE="1")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    import rewards
    from benchmarks.step_timer import StepTimer
    from inference.models import load_tokenizer, resolve_model
    from moderation.config import load_config
    from moderation.policy import load_policy
    from moderation.prompt import build_messages
    from training.models import device_kwargs, lora_config
    from training.recipe import Recipe
    from training.rollout import SharedPrefixRollout
    from training.trl_adapter import SharedPrefixGRPOTrainer

    recipe = load_config(Recipe, RECIPE)
    policy = load_policy(recipe.policy)
    path = resolve_model(model_name)
    tokenizer = load_tokenizer(path)
    rows = [
        {"prompt": build_messages(policy, text, tokenizer, recipe.prompt), "text": text, "label": label,
         "categories": [c.id] if label == "disallow" else []}
        for c in policy.categories
        for label, texts in (("disallow", c.disallowed_examples), ("allow", c.allowed_examples))
        for text in texts
    ]  # fmt: skip

    shared = dict(
        output_dir=f"/tmp/train-step-bench/{variant}",
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=64,
        max_steps=steps + warmup,
        save_strategy="no",
        report_to=[],
        seed=recipe.seed,
        logging_steps=1,
    )
    ours = variant != "baseline"
    if ours:
        extra = dict(gradient_checkpointing=False, **device_kwargs(recipe))
    else:
        extra = {} if torch.cuda.is_available() else {"use_cpu": True}
    torch.manual_seed(recipe.seed)
    timer = StepTimer()
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    trainer = (SharedPrefixGRPOTrainer if variant == "ours" else GRPOTrainer)(
        model=model,
        reward_funcs=rewards.build_rewards(recipe.reward_funcs, policy, recipe.reward_params),
        args=GRPOConfig(**shared, **extra),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(recipe, model.config.num_hidden_layers),
        callbacks=[timer],
        rollout_func=SharedPrefixRollout() if ours else None,
    )
    trainer.train()
    measured = timer.times[warmup:]
    queue.put(
        {
            "variant": variant,
            "s_per_step": sum(measured) / len(measured),
            "steps": measured,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument(
        "--variants", nargs="+", default=VARIANTS, choices=VARIANTS, help="which to run (ratio: ours/baseline)"
    )
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    results = {}
    for variant in args.variants:
        queue = context.Queue()
        process = context.Process(target=run_variant, args=(variant, args.model, args.steps, args.warmup, queue))
        process.start()
        results[variant] = queue.get()
        process.join()
        r = results[variant]
        steps = ", ".join(f"{t:.1f}" for t in r["steps"])
        print(f"{variant:9s} {r['s_per_step']:.2f} s/step  (steps: {steps})  peak RSS {r['peak_rss_gb']:.2f} GB")
    for variant, r in results.items():
        print(f"{variant + ':':9s} {r['s_per_step']:.2f} s/step")
    if {"baseline", "ours"} <= results.keys():
        ratio = results["ours"]["s_per_step"] / results["baseline"]["s_per_step"]
        print(f"ratio:    {ratio:.2f}x of baseline time ({1 / ratio:.2f}x faster)")
    print(json.dumps({k: {**v, "steps": None} for k, v in results.items()}))


if __name__ == "__main__":
    main()
