"""What both training stages build their model with: the LoRA adapter from the recipe, the device's precision."""

from __future__ import annotations

from training.recipe import Recipe


def device_kwargs() -> dict:
    """bf16 on GPUs that support it, fp32 on CPU (where bf16 matmuls are slower and less accurate)."""
    import torch

    gpu = torch.cuda.is_available()
    return {"bf16": gpu and torch.cuda.is_bf16_supported(), "use_cpu": not gpu}


def lora_config(recipe: Recipe, num_layers: int):
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora.r,
        lora_alpha=recipe.lora.alpha,
        lora_dropout=recipe.lora.dropout,
        target_modules=recipe.lora.target_modules,
        layers_to_transform=recipe.lora.layers(num_layers),
        task_type="CAUSAL_LM",
    )
