"""Rollout throughput: vLLM vs HF `generate` on the same GRPO prompts, in tokens/s, measured in one run (GPU).

    python benchmarks/rollout.py --model unsloth/Meta-Llama-3.1-8B-Instruct --n 32 --num-generations 8
    python benchmarks/rollout.py --model smollm2-135m --prompt-style compact

Both sides sample `--num-generations` completions for each of the same `--n` chat prompts (the policy prompt GRPO
trains on), with the same temperature and max new tokens, in one batch each, after a short warm-up, and stop at the
end-of-turn token. Tokens/s counts generated tokens, the end token included. HF runs first and is freed before vLLM
starts. Prints `baseline` (HF generate), `ours` (vLLM) and `ratio`. Needs vllm (the `gpu` extra); a number worth
reporting needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import time

from evals.data import load_dataset
from evals.suite import FIXTURE_LISTINGS
from inference.models import load_model, resolve_model
from moderation.errors import UserError, cli_main
from moderation.policy import load_policy
from moderation.prompt import PromptConfig, build_messages
from training.rollout import until_eos


def hf_tokens_per_s(model, tokenizer, prompts: list[str], args) -> float:
    import torch

    tokenizer.padding_side = "left"
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            do_sample=True,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            num_return_sequences=args.num_generations,
            pad_token_id=tokenizer.pad_token_id,
        )
    elapsed = time.perf_counter() - started
    completions = output[:, inputs["input_ids"].shape[1] :].tolist()
    return sum(len(until_eos(c, model.generation_config)) for c in completions) / elapsed


def vllm_tokens_per_s(llm, prompts: list[str], args) -> float:
    from vllm import SamplingParams

    params = SamplingParams(n=args.num_generations, temperature=args.temperature, max_tokens=args.max_new_tokens)
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    return sum(len(c.token_ids) for output in outputs for c in output.outputs) / elapsed


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", default=str(FIXTURE_LISTINGS), help="split name or file of listings")
    parser.add_argument("--n", type=int, default=32, help="prompts on each side")
    parser.add_argument("--num-generations", type=int, default=8, help="completions per prompt (the GRPO group)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--prompt-style", choices=["full", "compact"], default="full")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vLLM's share of GPU memory")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("vllm") is None:
        raise UserError("benchmarks/rollout.py needs vllm (the `gpu` extra, on a CUDA GPU): pip install -e '.[gpu]'")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(args.model, dtype="bfloat16" if device == "cuda" else "float32", device=device)
    policy, config = load_policy("marketplace"), PromptConfig(style=args.prompt_style)
    texts = [item.text for item in load_dataset(args.data, limit=args.n).items]
    prompts = [
        tokenizer.apply_chat_template(
            build_messages(policy, text, tokenizer, config), tokenize=False, add_generation_prompt=True
        )
        for text in texts
    ]

    hf_tokens_per_s(model, tokenizer, prompts[:2], args)  # warm-up
    baseline = hf_tokens_per_s(model, tokenizer, prompts, args)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()

    from vllm import LLM

    llm = LLM(model=resolve_model(args.model), gpu_memory_utilization=args.gpu_memory_utilization, seed=0)
    vllm_tokens_per_s(llm, prompts[:2], args)  # warm-up
    ours = vllm_tokens_per_s(llm, prompts, args)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(
        f"model {args.model}, {len(prompts)} prompts x {args.num_generations} completions, "
        f"max_new_tokens {args.max_new_tokens}, prompt style {args.prompt_style}, device {gpu}"
    )
    print(f"baseline (HF generate): {baseline:.1f} tokens/s")
    print(f"ours (vLLM):            {ours:.1f} tokens/s")
    print(f"ratio: {ours / baseline:.2f}x")


if __name__ == "__main__":
    main()
