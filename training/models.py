"""What both training stages build their model with: the LoRA adapter from the recipe, the device's precision."""

from __future__ import annotations

from inference.compute_types import bf16_is_fast
from training.recipe import Recipe


def device_kwargs(recipe: Recipe) -> dict:
    """Trainer precision and device: mixed bf16 (fp32 master weights) when the recipe asks or `auto` finds it fast."""
    import torch

    bf16 = recipe.precision == "bf16" or (recipe.precision == "auto" and bf16_is_fast())
    return {"bf16": bf16, "use_cpu": not torch.cuda.is_available()}


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
