"""GRPO post-training of a listing moderator: data → model → SFT warm-start → GRPO → save.

Local (CPU or one GPU), with the embedded SmolLM2-135M by default:
    python train_grpo.py --recipe configs/recipes/cpu-smollm2.yaml [key=value ...]
    python train_grpo.py --recipe configs/recipes/cpu-smollm2.yaml resume=true     # continue after a kill
    python train_grpo.py --help                                                     # every recipe field

On a Modal GPU (Unsloth 4-bit + vLLM rollouts; see training/modal_app.py):
    python train_grpo.py --recipe configs/recipes/modal-llama8b.yaml --dry-run     # validate, print the Modal setup
    modal run train_grpo.py --recipe configs/recipes/modal-llama8b.yaml [--overrides "max_steps=20"]

Everything a run produces lands in runs/<name>/ (see moderation/runs.py): merged/ and adapter/ for evals and
serving, sft/merged/ (the warm-start alone, for before/after comparisons), checkpoints/, metrics.jsonl,
completions.jsonl, rewards.png and manifest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from moderation.config import describe_fields, load_config
from moderation.errors import UserError, cli_main
from moderation.paths import PlainName, inside
from moderation.policy import Policy, load_policy
from moderation.prompt import PromptConfig, build_messages, prompt_length
from moderation.runs import ADAPTER, MANIFEST, MERGED
from moderation.verdict import DISALLOW, render
from training.modal_app import ModalSettings, app, describe, launch
from training.resume import (
    COMPLETIONS,
    METRICS,
    append_record,
    read_records,
    resume_point,
    rewind_logs,
)


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    target_modules: str | list[str] = Field("all-linear", description="modules to adapt ('all-linear' or names)")
    top_layers: int | None = Field(
        None, ge=1, description="adapt only the top N decoder layers: backprop stops there (~2x faster on CPU)"
    )

    @model_validator(mode="after")
    def _layers_need_names(self) -> LoraSettings:
        if self.top_layers is not None and isinstance(self.target_modules, str):
            raise ValueError("lora.top_layers needs lora.target_modules as a list of module names")
        return self

    def layers(self, num_layers: int) -> list[int] | None:
        """The decoder layer indices to adapt (None: all of them)."""
        return list(range(max(0, num_layers - self.top_layers), num_layers)) if self.top_layers else None


class SFTSettings(BaseModel):
    """A short supervised pass on rendered gold answers, so a small model learns the format before GRPO."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="run the SFT warm-start before GRPO")
    max_steps: int = Field(60, ge=1, description="SFT optimizer steps")
    batch_size: int = Field(8, ge=1, description="SFT examples per step")
    learning_rate: float = Field(1e-3, gt=0, description="SFT learning rate (LoRA)")
    save_steps: int = Field(20, ge=1, description="checkpoint every N SFT steps (resume loses at most this many)")


class Recipe(BaseModel):
    """Everything a training run needs. YAML keys are these field names; `key=value` on the CLI overrides."""

    model_config = ConfigDict(extra="forbid")

    name: PlainName = Field("cpu-smollm2", description="run name (a plain folder name); outputs go to runs/<name>")
    backend: Literal["transformers", "unsloth"] = Field("transformers", description="training backend")
    model: str = Field("smollm2-135m", description="base model: embedded name, HF id or local folder")
    policy: str = Field("marketplace", description="policy name in configs/policies or a YAML path")
    dataset: Path = Field(Path("data/default"), description="folder with train.parquet (from make generate_data)")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="prompt settings (saved with the run)")
    max_prompt_tokens: int = Field(640, ge=32, description="longer prompts are dropped before training (counted)")

    reward_funcs: list[str] = Field(
        default_factory=lambda: ["format_partial", "verdict", "categories", "reasoning_length"],
        description="reward names from rewards.REGISTRY",
    )
    reward_weights: list[float] | None = Field(None, description="one weight per reward (default: all 1.0)")
    reward_params: dict[str, dict] = Field(default_factory=dict, description="per-reward keyword arguments")

    num_generations: int = Field(4, ge=2, description="completions per prompt (the GRPO group)")
    max_completion_length: int = Field(96, ge=8, description="max new tokens per completion")
    temperature: float = Field(1.0, gt=0, description="sampling temperature for rollouts")
    learning_rate: float = Field(2e-5, gt=0, description="GRPO learning rate")
    loss_type: str = Field("dapo", description="TRL GRPO loss type (dapo, grpo, dr_grpo, bnpo, ...)")
    beta: float = Field(0.0, ge=0, description="KL coefficient (0 = no reference model)")
    max_steps: int = Field(40, ge=1, description="GRPO optimizer steps")
    per_device_train_batch_size: int = Field(8, ge=1, description="completions per device per step")
    gradient_accumulation_steps: int = Field(1, ge=1, description="gradient accumulation steps")
    rollout: Literal["shared_prefix", "trl"] = Field(
        "shared_prefix",
        description="shared_prefix: each prompt runs once per group, in rollouts and in the loss; trl: TRL's own path",
    )
    use_vllm: bool = Field(False, description="generate rollouts with vLLM through TRL (GPU; needs rollout=trl)")
    vllm_mode: Literal["colocate", "server"] = Field(
        "colocate", description="colocate: vLLM shares the training GPU; server: a separate `trl vllm-serve`"
    )
    vllm_server_host: str = Field("0.0.0.0", description="vllm_mode=server: host of the `trl vllm-serve` process")
    vllm_server_port: int = Field(8000, ge=1, le=65535, description="vllm_mode=server: its port")
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0, lt=1, description="vllm_mode=colocate: share of GPU memory vLLM may take"
    )
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    sft: SFTSettings = Field(default_factory=SFTSettings)
    modal: ModalSettings = Field(default_factory=ModalSettings, description="`modal run` resources (unused locally)")

    save_steps: int = Field(5, ge=1, description="checkpoint every N GRPO steps (resume loses at most this many)")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept per stage (older ones are deleted)")
    logging_steps: int = Field(1, ge=1, description="log metrics every N steps")
    log_completions_steps: int = Field(5, ge=1, description="append sample completions every N steps")
    zero_std_warning: float = Field(0.75, gt=0, le=1, description="warn when this share of groups has no signal...")
    zero_std_patience: int = Field(5, ge=1, description="...for this many consecutive logs")
    tracking: list[Literal["wandb", "mlflow"]] = Field(
        default_factory=lambda: ["wandb"],
        description="trackers beside metrics.jsonl: wandb (mode: `wandb`), mlflow (MLFLOW_TRACKING_URI, default the "
        "local store that `make mlflow-ui` opens); one name or a list",
    )
    wandb: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: online with WANDB_API_KEY, else offline"
    )
    output_root: Path = Field(Path("runs"), description="runs/<name> lives here")
    seed: int = Field(42, description="seed for data order, sampling and LoRA init")
    resume: bool = Field(False, description="continue from the latest checkpoint in runs/<name>")
    overwrite: bool = Field(False, description="delete an existing runs/<name> and start over")

    @field_validator("tracking", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_combinations(self) -> Recipe:
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size × gradient_accumulation_steps ({batch}) must be divisible by "
                f"num_generations ({self.num_generations})"
            )
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"{len(self.reward_weights)} reward_weights for {len(self.reward_funcs)} reward_funcs")
        if self.resume and self.overwrite:
            raise ValueError("resume=true and overwrite=true contradict each other")
        if (self.use_vllm or self.backend == "unsloth") and self.rollout != "trl":
            raise ValueError("use_vllm=true and backend=unsloth generate through TRL: set rollout=trl")
        if self.backend == "unsloth" and (self.sft.enabled or self.vllm_mode == "server"):
            raise ValueError("backend=unsloth runs GRPO with colocated vLLM: set sft.enabled=false, vllm_mode=colocate")
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_root / self.name


def load_recipe(path: str | Path | None, overrides: list[str]) -> Recipe:
    """Validate a recipe fully before any model loads: fields, rewards, policy, dataset."""
    recipe = load_config(Recipe, path, overrides)
    import rewards

    rewards.build_rewards(recipe.reward_funcs, load_policy(recipe.policy), recipe.reward_params)
    if not (recipe.dataset / "train.parquet").is_file():
        raise UserError(f"no {recipe.dataset / 'train.parquet'}: run `make generate_data` or set dataset=...")
    return recipe


def require_runtime(recipe: Recipe) -> None:
    """Fail with one line, before anything is written, when this machine cannot run what the recipe asks for."""
    if recipe.backend == "unsloth":
        from training import unsloth_backend

        unsloth_backend.prepare(recipe.use_vllm)
    elif recipe.use_vllm and importlib.util.find_spec("vllm") is None:
        raise UserError("use_vllm=true needs vllm (the `gpu` extra) on a CUDA GPU: set use_vllm=false or use Modal")
    if "mlflow" in recipe.tracking and importlib.util.find_spec("mlflow") is None:
        raise UserError("tracking=mlflow needs mlflow: pip install -e '.[track]'")


# ── data ────────────────────────────────────────────────────────────────────────────────────────────────────────


def load_rows(dataset: Path) -> list[dict]:
    import pandas as pd

    frame = pd.read_parquet(dataset / "train.parquet")
    missing = {"text", "label", "categories"} - set(frame.columns)
    if missing:
        raise UserError(f"{dataset / 'train.parquet'} lacks columns: {', '.join(sorted(missing))}")
    frame["categories"] = frame["categories"].map(list)
    return frame.to_dict("records")


def gold_reasoning(row: dict, policy: Policy) -> str:
    """The SFT reasoning target: the row's own rationale when the data has one, else one built from the policy."""
    if isinstance(row.get("rationale"), str) and row["rationale"].strip():
        return row["rationale"].strip()
    if row["label"] == DISALLOW:
        titles = " and ".join(policy.category(c).title.lower() for c in row["categories"])
        return f"The listing offers {titles}, which the policy disallows."
    return "The listing offers an ordinary digital product that no policy category covers."


def to_prompt_rows(rows: list[dict], policy: Policy, tokenizer, recipe: Recipe) -> tuple[list[dict], int]:
    """Rows with a conversational `prompt` (and SFT `completion`); prompts over the budget are dropped and counted."""
    kept, dropped = [], 0
    for row in rows:
        messages = build_messages(policy, row["text"], tokenizer, recipe.prompt)
        if prompt_length(messages, tokenizer) > recipe.max_prompt_tokens:
            dropped += 1
            continue
        answer = render(row["label"], row["categories"], gold_reasoning(row, policy))
        kept.append(
            {
                "prompt": messages,
                "completion": [{"role": "assistant", "content": answer}],
                "text": row["text"],
                "label": row["label"],
                "categories": row["categories"],
            }
        )
    return kept, dropped


# ── tracking ────────────────────────────────────────────────────────────────────────────────────────────────────


def make_tracker(recipe: Recipe, log_dir: Path, rows: list[dict], mlflow_run=None):
    """A TrainerCallback writing metrics.jsonl (and to `mlflow_run`) and completions.jsonl, and warning when groups
    carry no signal."""
    from transformers import TrainerCallback

    from rewards.registry import completion_text

    rows_by_prompt = {completion_text(row["prompt"]): row for row in rows}

    class Tracker(TrainerCallback):
        def __init__(self):
            self.trainer = None  # set after the trainer exists, to read its logged completions
            self.stage = "grpo"
            self.completions_through = 0  # last GRPO step whose completions are written (the end-of-train log
            # repeats the last step's number)
            self.flat_logs = 0
            self.warned = False

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            record = {"stage": self.stage, "step": state.global_step, **logs}
            append_record(log_dir / METRICS, record)
            if mlflow_run:
                mlflow_run.log_record(record)
            self._guard(logs)
            step = state.global_step
            if self.stage == "grpo" and step % recipe.log_completions_steps == 0 and step > self.completions_through:
                self._save_completions(step)
                self.completions_through = step

        def _guard(self, logs: dict) -> None:
            zero_std = logs.get("frac_reward_zero_std")
            if zero_std is None or self.warned:
                return
            self.flat_logs = self.flat_logs + 1 if zero_std >= recipe.zero_std_warning else 0
            if self.flat_logs >= recipe.zero_std_patience:
                self.warned = True
                print(f"WARNING: {learning_signal_advice(logs, recipe)}", file=sys.stderr)

        def _save_completions(self, step: int) -> None:
            """Append the latest generation batch, with the columns `rewards.audit` needs to re-score it."""
            logged = getattr(self.trainer, "_logs", None)  # TRL keeps the latest generation batch here
            if not logged or not logged.get("completion"):
                return
            for i, (prompt, completion) in enumerate(zip(logged["prompt"], logged["completion"], strict=True)):
                row = rows_by_prompt.get(completion_text(prompt), {})
                record = {
                    "step": step,
                    "group": f"{step}:{i // recipe.num_generations}",
                    "completion": completion_text(completion),
                    "rewards": {name: values[i] for name, values in logged["rewards"].items() if i < len(values)},
                    **{key: row.get(key) for key in ("text", "label", "categories")},
                }
                append_record(log_dir / COMPLETIONS, record)

    return Tracker()


def learning_signal_advice(logs: dict, recipe: Recipe) -> str:
    """Name the likely cause when most GRPO groups have identical rewards (zero advantage, no gradient)."""
    reward = logs.get("reward", 0.0)
    format_means = [v for k, v in logs.items() if k.startswith("rewards/format") and k.endswith("/mean")]
    if format_means and max(format_means) <= 0.05:
        cause = "the format is never produced: enable the SFT warm-start (sft.enabled=true) or add format_partial"
    elif recipe.temperature < 0.7:
        cause = f"temperature {recipe.temperature} is too low for different completions: try 0.9-1.2"
    else:
        cause = f"the task is too easy or too hard for the model (mean reward {reward:.2f}); check the reward mix"
    patience = recipe.zero_std_patience
    return f"most groups have zero reward variance for {patience} logs: no learning signal. Likely: {cause}."


def plot_metrics(metrics_path: Path, png_path: Path) -> None:
    """Reward curves per reward function and total, and frac_reward_zero_std, from metrics.jsonl (torn tail skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grpo = [r for r in read_records(metrics_path) if r.get("stage") == "grpo" and "reward" in r]
    if not grpo:
        return
    steps = [r["step"] for r in grpo]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    names = sorted({k for r in grpo for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    for name in names:
        top.plot(steps, [r.get(name) for r in grpo], label=name.split("/")[1])
    top.plot(steps, [r["reward"] for r in grpo], label="total (weighted)", color="black", linewidth=2)
    top.set_ylabel("mean reward")
    top.legend(fontsize=8)
    bottom.plot(steps, [r.get("frac_reward_zero_std") for r in grpo], color="tab:red")
    bottom.set_ylabel("frac_reward_zero_std")
    bottom.set_xlabel("GRPO step")
    bottom.set_ylim(-0.05, 1.05)
    fig.suptitle(f"GRPO rewards: {metrics_path.parent.name}")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def report_to(recipe: Recipe) -> list[str]:
    """wandb when asked or when a key is set; offline otherwise; never fails for lack of a key."""
    mode = recipe.wandb
    if "wandb" not in recipe.tracking or os.environ.get("WANDB_MODE") == "disabled" or mode == "disabled":
        return []
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_PROJECT", "grpo-moderation")
    return ["wandb"]


# ── stages ──────────────────────────────────────────────────────────────────────────────────────────────────────


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


SFT_ANSWER_TOKENS = 256  # room for the longest gold answer, so no SFT target is cut


def start_stage(recipe: Recipe, stage: str, checkpoints: Path) -> tuple[Path | None, int]:
    """The checkpoint a stage resumes from and its step ((None, 0): from scratch), with the logs rewound to it."""
    last, step = resume_point(checkpoints) if recipe.resume and checkpoints.is_dir() else (None, 0)
    rewind_logs(recipe.run_dir, stage, step)
    if last:
        print(f"resuming {stage.upper()} from {last}")
    return last, step


def run_sft(recipe: Recipe, base_path: str, rows: list[dict], tokenizer, tracker, callbacks=()) -> Path:
    """Warm-start: LoRA SFT on rendered gold answers (loss on the answer only), merged into a full model."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from training.answer_only_sft import AnswerOnlySFTTrainer

    out = recipe.run_dir / "sft"
    merged = out / MERGED
    if (merged / "READY").exists():
        print(f"SFT warm-start already done: {merged}")
        return merged
    tracker.stage = "sft"
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        max_steps=recipe.sft.max_steps,
        per_device_train_batch_size=recipe.sft.batch_size,
        learning_rate=recipe.sft.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, recipe.sft.max_steps // 10),
        logging_steps=recipe.logging_steps,
        save_strategy="steps",
        save_steps=recipe.sft.save_steps,
        save_total_limit=recipe.save_total_limit,
        report_to=[],
        seed=recipe.seed,
        max_length=recipe.max_prompt_tokens + SFT_ANSWER_TOKENS,
        completion_only_loss=True,
        gradient_checkpointing=False,
        **device_kwargs(),
    )
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype="float32")
    trainer = AnswerOnlySFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(recipe, model.config.num_hidden_layers),
        callbacks=[tracker, *callbacks],
    )
    last, _ = start_stage(recipe, "sft", out / "checkpoints")
    trainer.train(resume_from_checkpoint=last)
    save_merged(trainer.model, tokenizer, merged)
    tracker.stage = "grpo"
    return merged


def run_grpo(
    recipe: Recipe, start_path: Path | str, rows: list[dict], tokenizer, tracker, policy: Policy, callbacks=()
):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    import rewards
    from training.rollout import SharedPrefixRollout
    from training.shared_prefix import SharedPrefixGRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL 1.x
    checkpoints = recipe.run_dir / "checkpoints"
    args = GRPOConfig(
        output_dir=str(checkpoints),
        num_generations=recipe.num_generations,
        max_completion_length=recipe.max_completion_length,
        temperature=recipe.temperature,
        learning_rate=recipe.learning_rate,
        loss_type=recipe.loss_type,
        beta=recipe.beta,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        reward_weights=recipe.reward_weights,
        save_steps=recipe.save_steps,
        save_strategy="steps",
        save_total_limit=recipe.save_total_limit,
        logging_steps=recipe.logging_steps,
        report_to=report_to(recipe),
        run_name=recipe.name,
        seed=recipe.seed,
        log_completions=False,
        gradient_checkpointing=recipe.gradient_checkpointing,
        use_vllm=recipe.use_vllm,
        vllm_mode=recipe.vllm_mode,
        vllm_server_host=recipe.vllm_server_host,
        vllm_server_port=recipe.vllm_server_port,
        vllm_gpu_memory_utilization=recipe.vllm_gpu_memory_utilization,
        **device_kwargs(),
    )
    dataset = Dataset.from_list([{k: v for k, v in r.items() if k != "completion"} for r in rows])
    if recipe.backend == "unsloth":
        from training.unsloth_backend import load_model

        model, tokenizer = load_model(recipe, str(start_path))  # LoRA already attached
        peft_config = None
    else:
        model = AutoModelForCausalLM.from_pretrained(str(start_path), dtype="float32")
        peft_config = lora_config(recipe, model.config.num_hidden_layers)
    shared_prefix = recipe.rollout == "shared_prefix"
    trainer = (SharedPrefixGRPOTrainer if shared_prefix else GRPOTrainer)(
        model=model,
        reward_funcs=rewards.build_rewards(recipe.reward_funcs, policy, recipe.reward_params),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[tracker, *callbacks],
        rollout_func=SharedPrefixRollout() if shared_prefix else None,
    )
    tracker.trainer = trainer
    last, tracker.completions_through = start_stage(recipe, "grpo", checkpoints)
    result = trainer.train(resume_from_checkpoint=last)
    trainer.model.save_pretrained(recipe.run_dir / ADAPTER)
    save_merged(trainer.model, tokenizer, recipe.run_dir / MERGED)
    return result.metrics


def save_merged(peft_model, tokenizer, target: Path) -> None:
    """Merge LoRA into the base weights and save atomically (a READY marker is written last)."""
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if hasattr(peft_model, "save_pretrained_merged"):  # Unsloth: dequantizes the 4-bit base, merges in 16 bit
        peft_model.save_pretrained_merged(str(staging), tokenizer, save_method="merged_16bit")
    else:
        merged = peft_model.merge_and_unload() if hasattr(peft_model, "merge_and_unload") else peft_model
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    (staging / "READY").write_text("complete\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def write_manifest(recipe: Recipe, timings: dict, metrics: dict, counts: dict, mlflow_run_id: str | None) -> None:
    import importlib.metadata as md

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    manifest = {
        "policy": recipe.policy,
        "prompt": recipe.prompt.model_dump(),
        "base_model": recipe.model,
        "config": recipe.model_dump(mode="json"),
        "git_commit": commit or None,
        "seed": recipe.seed,
        "versions": {p: md.version(p) for p in ("torch", "transformers", "trl", "peft", "datasets")},
        "timings_s": timings,
        "counts": counts,
        "final_metrics": metrics,
        "peak_rss_gb": peak_rss_gb(),
        "mlflow_run_id": mlflow_run_id,
    }
    tmp = recipe.run_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.rename(recipe.run_dir / MANIFEST)


def peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)


def open_mlflow_run(recipe: Recipe):
    """The run's MLflow side when the recipe tracks with MLflow (a resumed run reopens its MLflow run), else None."""
    if "mlflow" not in recipe.tracking:
        return None
    from training.mlflow_tracking import TrainingRun

    return TrainingRun(recipe.run_dir, recipe.name, recipe.model_dump(mode="json"), resume=recipe.resume)


def prepare_run_dir(recipe: Recipe) -> None:
    run_dir = recipe.run_dir
    if run_dir.exists() and any(run_dir.iterdir()) and not recipe.resume:
        if not recipe.overwrite:
            raise UserError(f"{run_dir} already exists: pass resume=true to continue or overwrite=true to restart")
        shutil.rmtree(inside(recipe.output_root, run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.json").write_text(recipe.model_dump_json(indent=2))


# ── main ────────────────────────────────────────────────────────────────────────────────────────────────────────


def main(recipe: Recipe, callbacks=()) -> Path:
    """Train one recipe; `callbacks` are extra TrainerCallbacks (Modal adds a volume commit per checkpoint)."""
    require_runtime(recipe)
    import torch

    from moderation.models import load_tokenizer, resolve_model

    timings: dict[str, float] = {}
    start = time.perf_counter()
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    prepare_run_dir(recipe)
    print(f"run: {recipe.run_dir}  (recipe saved to {recipe.run_dir / 'recipe.json'})")

    # data
    policy = load_policy(recipe.policy)
    base_path = resolve_model(recipe.model)
    tokenizer = load_tokenizer(base_path)
    rows, dropped = to_prompt_rows(load_rows(recipe.dataset), policy, tokenizer, recipe)
    random.Random(recipe.seed).shuffle(rows)
    print(f"data: {len(rows)} training prompts, {dropped} dropped for exceeding {recipe.max_prompt_tokens} tokens")
    if not rows:
        raise UserError("no training prompts left: raise max_prompt_tokens or lower prompt.max_listing_tokens")
    timings["data"] = time.perf_counter() - start

    # tracking
    mlflow_run = open_mlflow_run(recipe)
    tracker = make_tracker(recipe, recipe.run_dir, rows, mlflow_run)

    with mlflow_run or contextlib.nullcontext():  # a stage that raises marks the MLflow run failed
        # SFT warm-start
        start_path: Path | str = base_path
        if recipe.sft.enabled:
            stage = time.perf_counter()
            start_path = run_sft(recipe, base_path, rows, tokenizer, tracker, callbacks)
            timings["sft"] = time.perf_counter() - stage

        # GRPO
        stage = time.perf_counter()
        metrics = run_grpo(recipe, start_path, rows, tokenizer, tracker, policy, callbacks)
        timings["grpo"] = time.perf_counter() - stage

    # save
    if (recipe.run_dir / METRICS).exists():
        plot_metrics(recipe.run_dir / METRICS, recipe.run_dir / "rewards.png")
    timings["total"] = time.perf_counter() - start
    counts = {"train_prompts": len(rows), "dropped_prompts": dropped}
    write_manifest(recipe, timings, metrics, counts, mlflow_run.run_id if mlflow_run else None)
    if mlflow_run:
        mlflow_run.finish([recipe.run_dir / name for name in ("rewards.png", MANIFEST, COMPLETIONS)])
        print(f"MLflow run {mlflow_run.run_id} at {mlflow_run.client.tracking_uri}")
    print(f"done in {timings['total'] / 60:.1f} min, peak RSS {peak_rss_gb()} GB; model: {recipe.run_dir / MERGED}")
    return recipe.run_dir


@cli_main
def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="train_grpo.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="recipe fields (YAML keys, or key=value overrides):\n" + "\n".join(describe_fields(Recipe)),
    )
    parser.add_argument("--recipe", type=Path, help="recipe YAML (e.g. configs/recipes/cpu-smollm2.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override recipe fields")
    parser.add_argument("--dry-run", action="store_true", help="validate, print the Modal launch setup, and exit")
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        print(describe(recipe))
        return
    main(recipe)


@app.local_entrypoint()
@cli_main
def modal_main(recipe: str, overrides: str = "", dry_run: bool = False) -> None:
    """`modal run train_grpo.py --recipe X`: validate the recipe here, then train it on a Modal GPU."""
    launch(load_recipe(recipe, shlex.split(overrides)), dry_run=dry_run)


if __name__ == "__main__":
    cli()
