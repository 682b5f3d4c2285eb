"""What both training stages build their model with: the LoRA adapter from the recipe, the device's precision."""

from __future__ import annotations

from training.recipe import Recipe


def bf16_is_fast() -> bool:
    """True on a CUDA GPU with bf16, or a CPU whose oneDNN has bf16 kernels (AVX512-BF16, AMX); elsewhere bf16 is
    emulated and slower than fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


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
