"""Items/s of batched moderation per engine: transformers fp32 (baseline) vs CTranslate2 per compute type and
transformers bfloat16 on the CPU, or vs vLLM per compute type on a CUDA GPU (`--engine vllm`), one run.

    python benchmarks/eval_throughput.py                                   # smollm2-135m, 200 dev rows
    python benchmarks/eval_throughput.py --model runs/cpu-smollm2 --limit 64 --compute-types int8 float32
    python benchmarks/eval_throughput.py --limit 32 --compute-types bfloat16   # transformers bf16 vs fp32
    python benchmarks/eval_throughput.py --model runs/cpu-smollm2 --mode fast  # the one-pass scorer `make eval` uses
    python benchmarks/eval_throughput.py --model runs/cpu-smollm2 --mode fast --compute-types bfloat16 --compile
    python benchmarks/eval_throughput.py --model runs/cpu-smollm2 --engine vllm          # CUDA: vLLM vs transformers

Every engine gets the same rows, prompts (`Moderator.prompt_ids`) and batch size; in reasoning mode also greedy
decoding, max_new_tokens and the stop at `</answer>`; in fast mode the one-pass scorer of each engine read at
P(DISALLOW) >= 0.5 (evals.fast's rule; `make eval` and `serve --mode fast` apply it at the served threshold). A
2-listing warm-up runs first.
Prints, per engine: items/s, `ratio` against the baseline, verdict agreement with the baseline (decision, categories
and parse status all equal), and accuracy (ALLOW / DISALLOW vs the label; no readable decision counts as wrong) with a
95% Wilson interval. The goal is a ratio >= 3 at >= 98% agreement. `--compile` (fast mode) adds transformers bf16
through torch.compile, as `serve --compile` runs it: its one-off compile time is printed, not counted in items/s.
"""

from __future__ import annotations

import argparse
import math
import time

from evals.data import load_dataset
from evals.fast import FastModerator
from inference import load_moderator
from inference.compute_types import BFLOAT16, COMPUTE_TYPES, CT2_COMPUTE_TYPES, VLLM_COMPUTE_TYPES, engine_label
from inference.generate import GenerationConfig
from inference.vllm_engine import require_vllm
from moderation.errors import UserError, cli_main

CPU_TYPES = (*CT2_COMPUTE_TYPES, BFLOAT16)  # bfloat16 on the CPU: the transformers engine in bf16; the rest: ct2


def timed(moderator, texts: list[str]) -> tuple[float, list]:
    moderator.moderate(texts[:2])  # warm-up: one-off allocation and caching costs
    started = time.perf_counter()
    results = moderator.moderate(texts)
    return len(texts) / (time.perf_counter() - started), results


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at the extremes, unlike the normal approximation)."""
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def accuracy_line(results, labels: list[str]) -> str:
    correct = sum(r.verdict.decision == label for r, label in zip(results, labels, strict=True))
    low, high = wilson(correct, len(labels))
    return f"accuracy {correct / len(labels):.3f} [{low:.3f}, {high:.3f}]"


def agreement(results, reference) -> float:
    same = sum(
        (r.verdict.decision, r.verdict.categories, r.verdict.status)
        == (b.verdict.decision, b.verdict.categories, b.verdict.status)
        for r, b in zip(results, reference, strict=True)
    )
    return same / len(reference)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="embedded name, model folder or runs/<name>")
    parser.add_argument("--data", default="dev", help="split name or file of labelled listings")
    parser.add_argument("--limit", type=int, default=200, help="rows timed on every engine")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--engine",
        choices=["ct2", "vllm"],
        default="ct2",
        help="ct2: CPU, CTranslate2 per compute type and transformers bf16 against transformers fp32 on the CPU; "
        "vllm: CUDA, vLLM per compute type against transformers fp32 on the GPU",
    )
    parser.add_argument(
        "--compute-types",
        nargs="+",
        choices=COMPUTE_TYPES,
        help=f"ct2: any of {', '.join(CPU_TYPES)} (bfloat16: transformers; the default: all); "
        f"vllm: any of {', '.join(VLLM_COMPUTE_TYPES)} (default: bfloat16 float16)",
    )
    parser.add_argument(
        "--mode", choices=["reasoning", "fast"], default="reasoning", help="generate the answer, or one forward pass"
    )
    parser.add_argument("--compile", action="store_true", help="fast mode: also time bf16 through torch.compile")
    parser.add_argument(
        "--min-agreement",
        type=float,
        help="stop (one line, exit 2) when an engine agrees with the fp32 baseline on fewer rows than this share: how "
        "`make eval` checks that the engine it evaluates with keeps fp32's verdicts (0.98 there)",
    )
    args = parser.parse_args(argv)
    if args.compile and args.mode != "fast":
        parser.error("--compile needs --mode fast (it compiles the one-pass scorer)")
    allowed = VLLM_COMPUTE_TYPES if args.engine == "vllm" else CPU_TYPES
    compute_types = args.compute_types or (["bfloat16", "float16"] if args.engine == "vllm" else list(CPU_TYPES))
    if wrong := [t for t in compute_types if t not in allowed]:
        parser.error(f"--engine {args.engine} takes --compute-types from {', '.join(allowed)}, not {', '.join(wrong)}")
    if args.compile and args.engine == "vllm":
        parser.error("--compile compiles the transformers bf16 scorer on the CPU; not with --engine vllm")
    device = "cpu"
    if args.engine == "vllm":
        require_vllm(compute_types[0])  # before the baseline loads onto a GPU that may not be there
        device = "cuda"

    items = load_dataset(args.data, limit=args.limit).items
    texts, labels = [item.text for item in items], [item.label for item in items]
    generation = GenerationConfig(args.max_new_tokens, args.batch_size)

    def load(engine: str, compute_type: str, compile: bool = False):
        moderator = load_moderator(args.model, engine, compute_type, generation=generation, device=device)
        return FastModerator(moderator, compile=compile) if args.mode == "fast" else moderator

    shape = f"batch {args.batch_size}, " + (
        "fast mode (one pass)" if args.mode == "fast" else f"max_new_tokens {args.max_new_tokens}, greedy"
    )
    print(f"model {args.model}, {len(texts)} rows of {args.data}, {shape}, {device}")

    base_rate, reference = timed(load("transformers", "float32"), texts)
    print(f"baseline transformers fp32: {base_rate:.3f} items/s, {accuracy_line(reference, labels)}")

    agreements = {}

    def report(name: str, moderator) -> None:
        rate, results = timed(moderator, texts)
        agreements[name] = agreement(results, reference)
        print(
            f"ours {name}: {rate:.3f} items/s, ratio {rate / base_rate:.2f}x, "
            f"agreement {agreements[name]:.1%}, {accuracy_line(results, labels)}"
        )

    for compute_type in compute_types:
        engine = args.engine if compute_type != BFLOAT16 or args.engine == "vllm" else "transformers"
        report(engine_label(engine, compute_type), load(engine, compute_type))
    if args.compile:
        compiled = load("transformers", BFLOAT16, compile=True)
        print(f"torch.compile of the bf16 scorer: {compiled.scorer.compile_s:.0f}s once (not in items/s)")
        report(engine_label("transformers", BFLOAT16, compiled=True), compiled)
    if args.min_agreement is not None:
        if short := {name: share for name, share in agreements.items() if share < args.min_agreement}:
            listed = ", ".join(f"{name} {share:.1%}" for name, share in short.items())
            raise UserError(f"agreement with fp32 below {args.min_agreement:.0%}: {listed}; use the fp32 reference")
        print(f"every engine agrees with fp32 on at least {args.min_agreement:.0%} of the rows")


if __name__ == "__main__":
    main()
