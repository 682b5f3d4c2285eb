"""Inference engines behind one moderation interface: `load_moderator(model, engine=...)` returns an object with
`Moderator`'s methods (`prompt`, `moderate`, `moderate_batches`) whichever engine runs it.

    transformers  HF generate, fp32 (the reference path) or bfloat16 (`compute_type="bfloat16"`)
    ct2           CTranslate2 on CPU: int8, int8_float32 or float32 (converted once, cached beside the model)
    vllm          CUDA only (the `gpu` extra): vLLM's offline LLM, bfloat16, float16 or float32
"""

from __future__ import annotations

from pathlib import Path

from inference.compute_types import weights_type
from inference.generate import GenerationConfig, Moderator
from moderation.errors import UserError
from moderation.policy import load_policy
from moderation.prompt import PromptConfig

ENGINES = ("transformers", "ct2", "vllm")


def load_moderator(
    model: str | Path,
    engine: str = "transformers",
    compute_type: str = "int8",
    policy: str | Path | None = None,
    prompt_config: PromptConfig | None = None,
    generation: GenerationConfig | None = None,
    device: str = "cpu",
    threads: int = 0,
) -> Moderator:
    """A moderator for a run folder, model folder or embedded name on the chosen engine. `compute_type`: for ct2 one
    of its COMPUTE_TYPES; for transformers "bfloat16" loads the weights in bf16 and any other value (a ct2 type, such
    as the shared default int8) keeps the float32 reference; for vllm bfloat16, float16 or float32 (else a one-line
    error). `threads`: ct2's intra-op threads (0: its default).

    >>> load_moderator("runs/cpu-smollm2", engine="ct2", compute_type="int8").moderate(["Premium IPTV"])
    """
    # imported here so that `python -m inference.models` does not find its own module already half-imported
    from inference.models import resolve_model
    from inference.runs import load_moderator as load_transformers_moderator
    from inference.runs import read_run

    if engine == "transformers":
        dtype = weights_type(engine, compute_type)
        return load_transformers_moderator(model, policy, prompt_config, generation, device, dtype)
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})")
    if engine == "vllm":  # before any model is resolved or converted
        from inference.vllm_engine import require_vllm

        require_vllm(compute_type)
    run = read_run(model)
    model_dir = run.model_path if run else resolve_model(model)
    rules = load_policy(policy or (run.policy if run else "marketplace"))
    prompt = prompt_config or (run.prompt if run else PromptConfig())
    if engine == "ct2":
        from inference.ct2 import load_ct2_moderator

        return load_ct2_moderator(model_dir, rules, prompt, generation, compute_type, device, threads)
    from inference.vllm_engine import load_vllm_moderator

    return load_vllm_moderator(model_dir, rules, prompt, generation, compute_type)
