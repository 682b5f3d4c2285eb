"""The `unsloth` backend: a 4-bit QLoRA model from Unsloth, with vLLM rollouts inside the trainer process.

Only the model differs from the transformers backend: the pipeline builds the prompts, rewards, GRPOConfig,
checkpoints, tracking and saving for both. Unsloth patches TRL and transformers when it is imported, so `prepare`
imports it before anything else loads them. It needs a CUDA GPU and the `gpu` extra (see pyproject.toml); on any
other machine `prepare` fails with one line before anything is written.
"""

from __future__ import annotations

import importlib.util

from moderation.errors import UserError


def prepare(use_vllm: bool) -> None:
    """Check that this machine can run the backend, then import Unsloth first so it can patch TRL."""
    needed = ["unsloth", "vllm"] if use_vllm else ["unsloth"]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"backend=unsloth needs {' and '.join(missing)} (the `gpu` extra) on a CUDA GPU: "
            "run it with `modal run train_grpo.py --recipe ...`"
        )
    import torch

    if not torch.cuda.is_available():
        raise UserError("backend=unsloth needs a CUDA GPU: run it with `modal run train_grpo.py --recipe ...`")
    import unsloth  # noqa: F401  (patches TRL's GRPOTrainer; must precede trl/transformers/peft imports)


def load_model(recipe, model_path: str):
    """(4-bit model with the recipe's LoRA attached, Unsloth's tokenizer); `fast_inference` starts its vLLM engine."""
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_path,
        max_seq_length=recipe.max_prompt_tokens + recipe.max_completion_length,
        load_in_4bit=True,
        fast_inference=recipe.use_vllm,
        max_lora_rank=recipe.lora.r,
        gpu_memory_utilization=recipe.vllm_gpu_memory_utilization,
        random_state=recipe.seed,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=recipe.lora.r,
        lora_alpha=recipe.lora.alpha,
        lora_dropout=recipe.lora.dropout,
        target_modules=recipe.lora.target_modules,
        layers_to_transform=recipe.lora.layers(model.config.num_hidden_layers),
        use_gradient_checkpointing="unsloth" if recipe.gradient_checkpointing else False,
        random_state=recipe.seed,
    )
    return model, tokenizer
