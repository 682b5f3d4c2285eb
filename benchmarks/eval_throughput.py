"""Items/s of batched evaluation vs one-at-a-time generation: same model, same items, same settings, one run.

    python benchmarks/eval_throughput.py                       # smollm2-135m, 16 listings, batch 16
    python benchmarks/eval_throughput.py --model runs/cpu-smollm2 --data dev --n 32 --batch-size 32

Both sides use the evals code path (`evals.runner.build_moderator` -> `Moderator.moderate_batches`), greedy, with the
same max_new_tokens; only the batch size differs. A short warm-up runs first so neither side pays one-off costs.
Prints `baseline` (one at a time), `ours` (batched) and `ratio`.
"""

from __future__ import annotations

import argparse
import time

from evals.data import load_dataset
from evals.runner import EvalConfig, build_moderator
from evals.suite import FIXTURE_LISTINGS
from moderation.errors import cli_main


def items_per_s(moderator, texts: list[str]) -> float:
    started = time.perf_counter()
    done = sum(len(batch) for batch in moderator.moderate_batches(texts))
    return done / (time.perf_counter() - started)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default=str(FIXTURE_LISTINGS), help="split name or file of listings")
    parser.add_argument("--n", type=int, default=16, help="listings timed on each side")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt-style", choices=["full", "compact"], help="override the prompt style on both sides")
    args = parser.parse_args(argv)

    texts = [item.text for item in load_dataset(args.data, limit=args.n).items]
    common = {"model": args.model, "data": args.data, "out": "-", "max_new_tokens": args.max_new_tokens}
    batched = build_moderator(EvalConfig(**common, batch_size=args.batch_size, device=args.device))
    if args.prompt_style:
        batched.prompt_config = batched.prompt_config.model_copy(update={"style": args.prompt_style})
    # Same weights and prompt, one listing per generate() call: only the batch size differs.
    single = type(batched)(batched.model, batched.tokenizer, batched.policy, batched.prompt_config)
    single.generation = type(batched.generation)(args.max_new_tokens, 1, batched.generation.temperature)

    items_per_s(batched, texts[:2])  # warm-up
    baseline = items_per_s(single, texts)
    ours = items_per_s(batched, texts)
    prompt_tokens = len(batched.tokenizer(batched.prompt(texts[0]))["input_ids"])
    print(
        f"model {args.model}, {len(texts)} listings, max_new_tokens {args.max_new_tokens}, device {args.device}, "
        f"prompt style {batched.prompt_config.style} (~{prompt_tokens} prompt tokens)"
    )
    print(f"baseline (batch 1):  {baseline:.3f} items/s")
    print(f"ours (batch {args.batch_size}):     {ours:.3f} items/s")
    print(f"ratio: {ours / baseline:.2f}x")


if __name__ == "__main__":
    main()
