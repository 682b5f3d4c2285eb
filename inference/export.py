"""Export a trained run (or any local Llama model folder) for the tools people deploy small models with.

    python -m inference.export ct2 runs/cpu-smollm2 --quant int8        # -> runs/cpu-smollm2/ct2-int8/
    python -m inference.export gguf runs/cpu-smollm2 --quant q8_0       # -> runs/cpu-smollm2/gguf/

The GGUF folder also gets an Ollama `Modelfile` whose SYSTEM is the run's own moderator instructions (its policy and
prompt settings), so `ollama create moderator -f runs/cpu-smollm2/gguf/Modelfile` serves the same prompt the model
was trained on; the user turn is the listing between <listing> and </listing>.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from inference.compute_types import CT2_COMPUTE_TYPES
from inference.ct2 import convert
from inference.gguf_export import DEFAULT_PRE_TOKENIZER, QUANTS, export_gguf
from inference.models import load_tokenizer, resolve_model
from inference.runs import read_run
from moderation.config import parse_command_line, pick_command
from moderation.errors import UserError, cli_main
from moderation.policy import load_policy
from moderation.prompt import PromptConfig, system_prompt

CHATML = '''TEMPLATE """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""'''


def modelfile(gguf_name: str, system: str, chat_template: str) -> str:
    """An Ollama Modelfile: the GGUF, the moderator's system prompt, greedy decoding, stop at end of turn."""
    lines = [f"FROM ./{gguf_name}"]
    if "<|im_start|>" in chat_template:  # ChatML (SmolLM2); other templates: Ollama reads the GGUF's own
        lines.append(CHATML)
    lines += [f'SYSTEM """{system}"""', "PARAMETER temperature 0", 'PARAMETER stop "<|im_end|>"']
    return "\n".join(lines) + "\n"


def export(kind: str, model: str, quant: str | None, out: Path | None, pre_tokenizer: str) -> Path:
    """Export `model` (run folder, model folder or embedded name); returns the written file or folder."""
    run = read_run(model)
    source = run.model_path if run else Path(resolve_model(model))
    if not source.is_dir():
        raise UserError(f"{model}: not a run folder or local model folder")
    if kind == "ct2":
        return convert(source, quant or "int8", out)
    quant = quant or "f16"
    home = Path(model) if run else source.parent / f"{source.name}-gguf"
    folder = out or (home / "gguf" if run else home)
    name = f"{(Path(model) if run else source).resolve().name}-{quant}.gguf"
    path = export_gguf(source, folder / name, quant, pre_tokenizer)
    policy = load_policy(run.policy if run else "marketplace")
    system = system_prompt(policy, run.prompt if run else PromptConfig())
    template = load_tokenizer(source).chat_template or ""
    (folder / "Modelfile").write_text(modelfile(name, system, template), encoding="utf-8")
    return path


KINDS = {"ct2": "CTranslate2 folder (CPU serving)", "gguf": "GGUF file and Ollama Modelfile (llama.cpp, Ollama)"}


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="runs/<name>, a local HF model folder, or an embedded name; positional")
    quant: str | None = Field(
        None, description=f"ct2: {', '.join(CT2_COMPUTE_TYPES)} (int8); gguf: {', '.join(QUANTS)} (f16)"
    )
    out: Path | None = Field(None, description="output folder (default: beside the model)")
    tokenizer_pre: str = Field(DEFAULT_PRE_TOKENIZER, description="gguf: llama.cpp pre-tokenizer name")


@cli_main
def main(argv: list[str] | None = None) -> None:
    prog, description = "python -m inference.export", __doc__.split("\n\n")[0]
    kind, argv = pick_command(sys.argv[1:] if argv is None else argv, KINDS, prog=prog, description=description)
    _, args = parse_command_line(ExportConfig, argv, prog=f"{prog} {kind}", description=KINDS[kind], positional="model")
    allowed = CT2_COMPUTE_TYPES if kind == "ct2" else QUANTS
    if args.quant and args.quant not in allowed:
        raise UserError(f"--quant {args.quant}: {kind} takes {', '.join(allowed)}")

    started = time.perf_counter()
    path = export(kind, args.model, args.quant, args.out, args.tokenizer_pre)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    print(f"wrote {path} ({size / 2**20:.1f} MiB) in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
