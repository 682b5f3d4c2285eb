"""Seconds per SFT step and peak RSS over the same train rows, one training choice at a time (baseline vs ours).

    python benchmarks/sft_step.py [--compare batches|head] [--rows 256] [--model smollm2-135m] [--recipe RECIPE.yaml]

--compare batches: random batches (baseline) vs batches of similar length (ours; `sft.bucket_by_length`).
--compare head:    the answer positions' logits all at once, kept by autograd (baseline) vs a chunk at a time with
                   the hidden-state gradient formed in the forward pass (ours; training.vocab_head). It matters for
                   Gemma 3's 262k vocabulary: `--compare head --model gemma3-270m`.
Both variants run the recipe's SFT trainer (training.sft.sft_trainer) for one epoch over the same first `--rows`
training prompts, each in its own process so the peak RSS printed is its own; they differ in that one choice.
Printed: seconds per step (the first step, which warms up, left out), the positions a pass over its batches computes
(padding included), peak RSS and the ratio. The variants run in ABBA order (`--rounds 2`): whichever ran first was
~20% slower in trials, whatever it was. ~2 s a step on 2 cores (SmolLM2; Gemma ~4-5 s): the default takes ~6
minutes; keep the machine otherwise idle.
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
VARIANTS = ["baseline", "ours"]


def use_full_logits_head() -> None:
    """The baseline of `--compare head`: the SFT loss scores every answer position through the full logits at once."""
    import functools

    from training import answer_only_sft, vocab_head

    answer_only_sft.chosen_token_log_probs = functools.partial(vocab_head.chosen_token_log_probs, chunk=None)


def run_variant(compare: str, variant: str, recipe_path: str, model: str, rows: int, queue) -> None:
    os.environ.update(WANDB_MODE="disabled", TRL_EXPERIMENTAL_SILENCE="1")
    from benchmarks.step_timer import StepTimer
    from inference.models import load_tokenizer, resolve_model
    from moderation.policy import load_policy
    from training.data import hold_back, load_rows, to_prompt_rows
    from training.recipe import load_recipe
    from training.sft import sft_trainer

    overrides = []
    if compare == "batches":
        overrides.append(f"sft.bucket_by_length={variant == 'ours'}")
    elif variant == "baseline":
        use_full_logits_head()
    with tempfile.TemporaryDirectory() as out:
        recipe = load_recipe(
            recipe_path,
            [f"model={model}", f"output_root={out}", "sft.save_steps=1000000", "wandb=disabled", *overrides],
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
    parser.add_argument(
        "--compare", choices=["batches", "head"], default="batches", help="the one choice the variants differ in"
    )
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
            process = context.Process(
                target=run_variant, args=(args.compare, variant, args.recipe, args.model, args.rows, queue)
            )
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
    rss = {variant: max(r["peak_rss_gb"] for r in done) for variant, done in runs.items()}
    print(
        f"ratio:    {ratio:.2f}x faster per step; {fewer:.1%} fewer positions computed; "
        f"peak RSS {rss['ours']:.2f} GB vs {rss['baseline']:.2f} GB"
    )


if __name__ == "__main__":
    main()
