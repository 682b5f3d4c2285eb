"""The recipe: everything a training run needs, validated in full before any model loads.

YAML keys are the field names of `Recipe`; `key=value` on the command line overrides them (`lora.r=8`). The recipe
sets the TRL options it has a reason to choose (`grpo_args`, `sft_args`); any other GRPOConfig / SFTConfig option goes
under `trl:` (training.trl_config), and both TRL configs are built once at load time so a bad option fails first.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from moderation.config import load_config
from moderation.errors import UserError
from moderation.paths import PlainName
from moderation.policy import load_policy
from moderation.prompt import PromptConfig
from training.trl_config import TrlOptions, build_config

SFT_ANSWER_TOKENS = 256  # room for the longest gold answer, so no SFT target is cut
# Load-time check of the TRL configs: the device is the training machine's business (training.models.device_kwargs).
CHECK_DEVICE = {"bf16": False, "use_cpu": True}


class ModalSettings(BaseModel):
    """Where `modal run train_grpo.py` runs a recipe; local runs ignore it."""

    model_config = ConfigDict(extra="forbid")

    gpu: str = Field("H100", description="Modal GPU type (L4, A10G, L40S, A100-80GB, H100, H200, ...)")
    timeout_s: int = Field(4 * 3600, ge=60, le=24 * 3600, description="wall-clock limit of one attempt, seconds")
    retries: int = Field(2, ge=0, le=10, description="restarts after a failure; each resumes from the last checkpoint")
    hf_cache_volume: str = Field("grpo-moderation-hf-cache", description="Volume for model weights (HF cache)")
    data_volume: str = Field("grpo-moderation-data", description="Volume the dataset is uploaded to before a launch")
    runs_volume: str = Field("grpo-moderation-runs", description="Volume for runs/<name> (committed per checkpoint)")
    secrets: list[str] = Field(
        default_factory=lambda: ["wandb", "huggingface"],
        description="Modal Secrets attached when they exist; missing ones are skipped (wandb then logs offline)",
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
    epochs: float = Field(1.0, gt=0, description="passes over the train rows (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="SFT optimizer steps; overrides epochs")
    fast_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of SFT targets with an empty reasoning, the form fast mode forces, so its one forward pass "
        "reads a state the model was trained on",
    )
    batch_size: int = Field(8, ge=1, description="SFT examples per step")
    bucket_by_length: bool = Field(
        True,
        description="batch rows of similar length, the batches in random order, every row once per epoch: less "
        "padding (CPU recipe: 7% fewer positions, 1.10x faster steps; benchmarks/sft_step.py)",
    )
    learning_rate: float = Field(1e-3, gt=0, description="SFT learning rate (LoRA)")
    oversample: dict[str, PositiveInt] = Field(
        default_factory=dict,
        description="copies per epoch of the train rows from a source, e.g. {hard_negative: 3}: look-alikes are a "
        "third as many as a category's violations, so a topic alone predicts DISALLOW; more copies mean more steps",
    )
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
    holdout: int = Field(
        0,
        ge=0,
        description="train rows held back from training (saved as runs/<name>/holdout.parquet) to choose thresholds "
        "and step counts on, so dev and test stay untouched; a dataset with validation.parquet (data_gen "
        "validation_fraction) uses that slice instead and trains on every train row",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast where the hardware runs it fast (a CUDA GPU with bf16, a CPU with AVX512-BF16 "
        "or AMX: ~2.5x faster steps on 2 cores), else fp32; weights and LoRA stay fp32 either way",
    )

    reward_funcs: list[str] = Field(
        default_factory=lambda: ["format_partial", "verdict", "categories", "reasoning_length"],
        description="reward names from rewards.REGISTRY",
    )
    reward_weights: list[float] | None = Field(None, description="one weight per reward (default: all 1.0)")
    reward_params: dict[str, dict] = Field(default_factory=dict, description="per-reward keyword arguments")

    num_generations: int = Field(
        4, ge=2, description="completions per prompt, the GRPO group (TRL: 8; 4 fits a CPU step)"
    )
    max_completion_length: int = Field(
        96, ge=8, description="max new tokens per completion (TRL: 512; an answer is ~40)"
    )
    temperature: float = Field(1.0, gt=0, description="sampling temperature for rollouts")
    prompt_pool: int = Field(
        0,
        ge=0,
        description="sample the start model's group on this many train prompts before GRPO and train only on those "
        "whose rewards differ within the group (0: every prompt, unfiltered)",
    )
    prompt_screen: int = Field(
        0,
        ge=0,
        description="prompt_pool: first read this many train prompts in fast mode (one forward pass each) and sample "
        "groups on the prompt_pool of them whose group it expects to disagree most (0: the first prompt_pool prompts)",
    )
    prompt_pool_allowed: float | None = Field(
        None,
        ge=0,
        le=1,
        description="prompt_screen: this share of prompt_pool goes to allowed listings, each label's most likely to "
        "disagree first (None: one ranking over both labels, which filled the mixed CPU recipe's pool with 112 "
        "disallowed listings of 128: their category names are what disagrees). 0.5 keeps P(DISALLOW) from drifting up "
        "but flagged more look-alikes at the served threshold (docs/experiments.md)",
    )
    prompt_pool_balance: bool = Field(
        False,
        description="prompt_screen: deal the pool's places in turn to allowed listings and to each category of the "
        "disallowed ones (a listing by its first gold category), each one's likeliest to disagree first; with "
        "prompt_pool_allowed the categories share the disallowed places. Without it the pool follows what the model "
        "confuses: one Gemma draw kept 15 phishing prompts and 4 spam, and GRPO taught it to stop naming spam",
    )
    prompt_pool_even_verdicts: bool = Field(
        False,
        description="prompt_pool: keep no more disallowed listings in verdict form than allowed ones among the "
        "prompts whose group disagreed (the surplus dropped, pool order): after SFT allowed groups rarely disagree "
        "(one Gemma pool: 12 of 127) and disallowed verdict groups do (54 kept), and GRPO on that pushed "
        "P(DISALLOW) to 1 on allowed listings too",
    )
    fast_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of GRPO prompts whose answer starts with the empty reasoning fast mode forces: their group "
        "samples only the verdict (~8 tokens), so GRPO trains the path fast mode serves",
    )
    grpo_task: Literal["verdict", "categories", "mixed"] = Field(
        "verdict",
        description="categories: GRPO trains only the naming of categories: on the disallowed train prompts, each "
        "answer starting after fast mode's `DISALLOW:`, so the group samples only the names (~9 tokens) and the "
        "verdict is never sampled; mixed: those prompts plus every train prompt in fast form, whose group samples "
        "the verdict too (fast_share must be 0 for both)",
    )
    pool_rewards: list[str] = Field(
        default_factory=lambda: ["verdict", "categories"],
        description="prompt_pool: the rewards whose spread within a group marks a prompt as teaching (some answers "
        "right, some wrong); reasoning rewards nearly always differ a little, so they would keep every prompt",
    )
    learning_rate: float = Field(
        2e-5, gt=0, description="GRPO learning rate (TRL: 1e-6, for full fine-tuning; LoRA takes more)"
    )
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
    gradient_checkpointing: bool = Field(
        False, description="trade compute for activation memory (TRL: on; small LoRA runs fit without)"
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    sft: SFTSettings = Field(default_factory=SFTSettings)
    modal: ModalSettings = Field(default_factory=ModalSettings, description="`modal run` resources (unused locally)")
    trl: TrlOptions = Field(
        default_factory=TrlOptions,
        description="any other GRPOConfig (trl.grpo) / SFTConfig (trl.sft) option, passed through and checked at load",
    )

    save_steps: int = Field(
        5, ge=1, description="checkpoint every N GRPO steps (TRL: 500; resume loses at most this many)"
    )
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept per stage, older ones deleted (TRL: all)")
    logging_steps: int = Field(1, ge=1, description="log metrics every N steps (TRL: 10; runs here are tens of steps)")
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
    grpo_seed: int | None = Field(
        None,
        description="seed of GRPO alone (sampling, the fast_share draw, and for grpo_task=mixed the prompt order and "
        "so the rows screened; default: seed): repeats GRPO from one SFT model without moving the held-back slice",
    )
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
        if self.prompt_screen and self.prompt_screen < self.prompt_pool:
            raise ValueError(f"prompt_screen ({self.prompt_screen}) must be at least prompt_pool ({self.prompt_pool})")
        if self.prompt_pool_allowed is not None and not self.prompt_screen:
            raise ValueError("prompt_pool_allowed chooses among screened prompts: set prompt_screen too")
        if self.prompt_pool_balance and not self.prompt_screen:
            raise ValueError("prompt_pool_balance chooses among screened prompts: set prompt_screen too")
        if self.prompt_pool_even_verdicts and not self.prompt_pool:
            raise ValueError("prompt_pool_even_verdicts chooses among the pool's prompts: set prompt_pool too")
        if self.grpo_task != "verdict" and self.fast_share:
            raise ValueError(f"grpo_task={self.grpo_task} chooses where each answer starts, so fast_share must be 0")
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

    @property
    def grpo_seeded(self) -> int:
        """The seed GRPO runs with: grpo_seed, else seed."""
        return self.seed if self.grpo_seed is None else self.grpo_seed


def grpo_args(recipe: Recipe, device: dict, report_to: list[str]):
    """The GRPOConfig a recipe trains with: its fields (their help says why a default differs from TRL's), the
    machine's precision (`device`), the trackers, then `recipe.trl.grpo`."""
    from trl import GRPOConfig

    ours = {
        "output_dir": str(recipe.run_dir / "checkpoints"),
        "num_generations": recipe.num_generations,
        "max_completion_length": recipe.max_completion_length,
        "temperature": recipe.temperature,
        "learning_rate": recipe.learning_rate,
        "loss_type": recipe.loss_type,
        "beta": recipe.beta,
        "max_steps": recipe.max_steps,
        "per_device_train_batch_size": recipe.per_device_train_batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "reward_weights": recipe.reward_weights,
        "save_steps": recipe.save_steps,
        "save_total_limit": recipe.save_total_limit,
        "logging_steps": recipe.logging_steps,
        "report_to": report_to,
        "run_name": recipe.name,
        "seed": recipe.grpo_seeded,
        "gradient_checkpointing": recipe.gradient_checkpointing,
        "use_vllm": recipe.use_vllm,
        "vllm_mode": recipe.vllm_mode,
        "vllm_server_host": recipe.vllm_server_host,
        "vllm_server_port": recipe.vllm_server_port,
        "vllm_gpu_memory_utilization": recipe.vllm_gpu_memory_utilization,
        **device,
    }
    return build_config(GRPOConfig, "grpo", ours, recipe.trl.grpo)


def sft_args(recipe: Recipe, steps: int, device: dict):
    """The SFTConfig of the warm-start: `recipe.sft`, fixed choices that differ from TRL's defaults (each says why),
    the machine's precision, then `recipe.trl.sft`."""
    from trl import SFTConfig

    ours = {
        "output_dir": str(recipe.run_dir / "sft" / "checkpoints"),
        "max_steps": steps,
        "per_device_train_batch_size": recipe.sft.batch_size,
        "learning_rate": recipe.sft.learning_rate,
        "lr_scheduler_type": "cosine",  # TRL: linear; cosine after a warm-up is what the demo was measured with
        "warmup_steps": max(1, steps // 10),  # TRL: 0; a short ramp before the high LoRA rate (sft.learning_rate)
        "logging_steps": recipe.logging_steps,
        "save_steps": recipe.sft.save_steps,
        "save_total_limit": recipe.save_total_limit,
        "report_to": [],  # our tracker callback logs SFT (metrics.jsonl, wandb, MLflow); no integration callbacks
        "seed": recipe.seed,
        "max_length": recipe.max_prompt_tokens + SFT_ANSWER_TOKENS,  # TRL: 1024; prompts are capped at load
        "completion_only_loss": True,  # the answer-only loss scores exactly the labels this leaves unmasked
        "pad_to_multiple_of": 32,  # few distinct shapes: bf16 RSS grew to 7.9 GB over an epoch with exact lengths
        "gradient_checkpointing": False,  # TRL: True; LoRA on a small model fits, recomputing only costs time
        **device,
    }
    return build_config(SFTConfig, "sft", ours, recipe.trl.sft)


def load_recipe(path: str | Path | None, overrides: list[str]) -> Recipe:
    """Validate a recipe fully before any model loads: fields, rewards, policy, dataset, the TRL configs."""
    recipe = load_config(Recipe, path, overrides)
    import rewards

    policy = load_policy(recipe.policy)
    rewards.build_rewards(recipe.reward_funcs, policy, recipe.reward_params)
    rewards.build_rewards(recipe.pool_rewards, policy, recipe.reward_params)
    if not (recipe.dataset / "train.parquet").is_file():
        raise UserError(f"no {recipe.dataset / 'train.parquet'}: run `make generate_data` or set dataset=...")
    grpo_args(recipe, CHECK_DEVICE, report_to=[])
    sft_args(recipe, recipe.sft.max_steps or 1, CHECK_DEVICE)
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
