"""The weights types `--compute-type` names, per engine: imported by the engines, evals and serve alike, and light
enough that `python -m inference.models` does not pull an engine in before it runs."""

from __future__ import annotations

BFLOAT16 = "bfloat16"  # the transformers engine's one compute type besides float32
CT2_COMPUTE_TYPES = ("int8", "int8_float32", "float32")  # the CPU types CTranslate2 4.8 offers here (no bf16)
VLLM_COMPUTE_TYPES = (BFLOAT16, "float16", "float32")  # vllm's GPU weights types
COMPUTE_TYPES = (*CT2_COMPUTE_TYPES, BFLOAT16, "float16")  # what `--compute-type` accepts across engines


def compute_type_problem(engine: str, compute_type: str) -> str | None:
    """Why `compute_type` does not fit `engine`, or None (transformers reads any type but bfloat16 as float32)."""
    own = {"ct2": CT2_COMPUTE_TYPES, "vllm": VLLM_COMPUTE_TYPES}.get(engine)
    if own and compute_type not in own:
        return f"engine {engine} takes --compute-type {', '.join(own)}, not {compute_type!r}"
    return None


def weights_type(engine: str, compute_type: str) -> str:
    """What `compute_type` means on `engine`, for logs and /health: ct2's own type, transformers' bf16 or fp32."""
    if engine == "transformers":
        return BFLOAT16 if compute_type == BFLOAT16 else "float32"
    return compute_type


def bf16_is_fast() -> bool:
    """True on a CUDA GPU with bf16, or a CPU whose oneDNN has bf16 kernels (AVX512-BF16, AMX); elsewhere bf16 is
    emulated and far slower than fp32 (a 576-wide matmul ~70x on an AVX2-only EPYC)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def fast_transformers_type() -> str:
    """The transformers compute type `make eval` and `make serve` use here: bfloat16 where it is fast, else float32."""
    return BFLOAT16 if bf16_is_fast() else "float32"


def engine_label(engine: str, compute_type: str, compiled: bool = False) -> str:
    """How logs and benchmark lines name what runs the model: "transformers bfloat16, compiled", "ct2 int8"."""
    return f"{engine} {weights_type(engine, compute_type)}" + (", compiled" if compiled else "")
