"""Seconds per SFT epoch over the same train rows: random batches (baseline) vs batches of similar length (ours).

    python benchmarks/sft_batches.py [--rows 256] [--model smollm2-135m] [--recipe RECIPE.yaml]

Both variants run the recipe's SFT trainer (training.sft.sft_trainer) for one epoch over the same first `--rows`
training prompts, each in its own process so the peak RSS printed is its own; the only difference is
`sft.bucket_by_length`. Printed: seconds per step (the first step, which warms up, left out), the positions a pass
over its batches computes (padding included), and the ratio. The variants run in ABBA order (`--rounds 2`): whichever
ran first was ~20% slower in trials, whatever it was. ~2 s a step on 2 cores: the default takes ~6 minutes; keep the
machine otherwise idle.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "recipes" / "cpu-smollm2.yaml"
VARIANTS = {"baseline": "false", "ours": "true"}  # sft.bucket_by_length


def run_variant(variant: str, recipe_path: str, model: str, rows: int, queue) -> None:
    os.environ.update(WANDB_MODE="disabled", TRL_EXPERIMENTAL_SILENCE="1")
    from benchmarks.step_timer import StepTimer
    from inference.models import load_tokenizer, resolve_model
    from moderation.policy import load_policy
    from training.data import hold_back, load_rows, to_prompt_rows
    from training.recipe import load_recipe
    from training.sft import sft_trainer

    with tempfile.TemporaryDirectory() as out:
        recipe = load_recipe(
            recipe_path,
            [f"model={model}", f"output_root={out}", "sft.save_steps=1000000",
             f"sft.bucket_by_length={VARIANTS[variant]}", "wandb=disabled"],
        )  # fmt: skip
        path = resolve_model(recipe.model)
        tokenizer = load_tokenizer(path)
        rows_kept = hold_back(load_rows(recipe.dataset), recipe)
        prompts = to_prompt_rows(rows_kept, load_policy(recipe.policy), tokenizer, recipe)[0][:rows]
        timer = StepTimer()
        trainer = sft_trainer(
            recipe, path, prompts, tokenizer, math.ceil(len(prompts) / recipe.sft.batch_size), [timer]
        )
        positions = sum(batch["input_ids"].numel() for batch in trainer.get_train_dataloader())  # padding included
        trainer.train()
    measured = timer.times[1:]
    queue.put(
        {
            "s_per_step": sum(measured) / len(measured),
            "seconds": sum(timer.times),
            "steps": len(timer.times),
            "positions": positions,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=256, help="training prompts in the epoch (the first N)")
    parser.add_argument("--model", default="smollm2-135m", help="base model: embedded name, HF id or local folder")
    parser.add_argument("--recipe", default=str(RECIPE), help="recipe whose SFT settings both variants use")
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs per variant, in ABBA order so a drifting machine favours neither"
    )
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for round_ in range(args.rounds):
        for variant in list(VARIANTS)[:: 1 if round_ % 2 == 0 else -1]:
            queue = context.Queue()
            process = context.Process(target=run_variant, args=(variant, args.recipe, args.model, args.rows, queue))
            process.start()
            r = queue.get()
            process.join()
            runs[variant].append(r)
            print(
                f"{variant + ':':9s} {r['s_per_step']:.2f} s/step, {r['seconds']:.1f} s for {r['steps']} steps, "
                f"{r['positions']:,} padded positions, peak RSS {r['peak_rss_gb']:.2f} GB"
            )
    mean = {variant: sum(r["s_per_step"] for r in done) / len(done) for variant, done in runs.items()}
    for variant, seconds in mean.items():
        print(f"{variant + ':':9s} {seconds:.2f} s/step (mean of {args.rounds})")
    ratio = mean["baseline"] / mean["ours"]
    fewer = 1 - runs["ours"][0]["positions"] / runs["baseline"][0]["positions"]
    print(f"ratio:    {ratio:.2f}x faster per step; {fewer:.1%} fewer positions computed")


if __name__ == "__main__":
    main()
