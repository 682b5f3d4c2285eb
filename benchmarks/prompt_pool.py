"""Seconds to sample the GRPO prompt pool's groups: one GRPO step's rows per call (the old way) vs larger calls.

    python benchmarks/prompt_pool.py --model runs/cpu-smollm2/sft/merged [--prompts 64] [--baseline-rows 16]

Both sides sample `num_generations` completions for each of the same `--prompts` train prompts with the CPU recipe's
generation settings and precision, through `training.rollout.sample_completions` (one prefill per prompt). Only the
rows per `generate` call differ: `--baseline-rows` (one GRPO step's 16) against `training.prompt_filter.POOL_ROWS`.
A CPU decoding step reads every weight whatever the batch, so larger calls amortise that read. Prints `baseline`,
`ours`, `ratio` and the peak RSS. Keep the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the `rewards` package, not benchmarks/rewards.py

from moderation.errors import cli_main

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "recipes" / "cpu-smollm2.yaml"


def seconds_to_sample(model, tokenizer, prompts: list, rows_per_call: int, recipe, autocast) -> float:
    from training.prompt_filter import rollout_config
    from training.rollout import sample_completions

    config = rollout_config(recipe, tokenizer)
    repeated = [prompt for prompt in prompts for _ in range(recipe.num_generations)]
    started = time.perf_counter()
    for start in range(0, len(repeated), rows_per_call):
        sample_completions(model, tokenizer, repeated[start : start + rows_per_call], config, autocast)
    return time.perf_counter() - started


@cli_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a merged model folder, e.g. runs/cpu-smollm2/sft/merged")
    parser.add_argument("--prompts", type=int, default=64, help="train prompts to sample groups for")
    parser.add_argument("--baseline-rows", type=int, default=16, help="rows per generate call on the baseline side")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from inference.models import load_tokenizer
    from moderation.policy import load_policy
    from training.data import load_rows, to_prompt_rows
    from training.models import device_kwargs
    from training.prompt_filter import POOL_ROWS
    from training.recipe import load_recipe

    recipe = load_recipe(RECIPE, [])
    tokenizer = load_tokenizer(args.model)
    rows, _ = to_prompt_rows(load_rows(recipe.dataset)[: args.prompts], load_policy(recipe.policy), tokenizer, recipe)
    prompts = [row["prompt"] for row in rows]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="float32")
    bf16 = device_kwargs(recipe)["bf16"]

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    seconds_to_sample(model, tokenizer, prompts[:4], POOL_ROWS, recipe, autocast)  # warm-up
    results = {}
    for name, rows_per_call in (("baseline", args.baseline_rows), ("ours", POOL_ROWS)):
        torch.manual_seed(recipe.seed)
        results[name] = seconds_to_sample(model, tokenizer, prompts, rows_per_call, recipe, autocast)
        print(f"{name + ':':9s} {results[name]:.1f} s for {len(prompts)} groups of {recipe.num_generations}, "
              f"{rows_per_call} rows per call")  # fmt: skip
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"ratio:    {results['baseline'] / results['ours']:.2f}x faster; peak RSS {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
