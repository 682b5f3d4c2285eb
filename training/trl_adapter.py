"""Every use of TRL's private API, in one module, checked against the TRL versions pyproject.toml pins.

TRL offers no public hook for these, so they are reached here and nowhere else:

    GRPOTrainer._get_per_token_logps_and_entropies   overridden: the loss forward that runs each group's prompt once
    GRPOTrainer._entropy_bonus_enabled               read by that override when present: do entropies need gradients
    GRPOTrainer._logs                                the latest generation batch (prompts, completions, rewards)
    SFTTrainer._metrics, SFTTrainer._total_train_tokens   the metrics TRL's compute_loss logs, kept by ours
    Trainer._get_train_sampler (transformers)        overridden: SFT batches of similar length (length_buckets)

tests/test_trl_adapter.py fails loudly when the installed TRL no longer has them in the shape used here; training warns
when it runs on a TRL that pyproject does not pin.
"""

from __future__ import annotations

import re
import tomllib
import warnings
from pathlib import Path

import trl
from trl.trainer.grpo_trainer import GRPOTrainer  # the defining modules, where the private members live
from trl.trainer.sft_trainer import SFTTrainer

from moderation.paths import REPO_ROOT
from training import shared_prefix
from training.answer_only_sft import answer_only_loss
from training.length_buckets import LengthBucketSampler

PRIVATE_MEMBERS = {  # required: training cannot run without them
    GRPOTrainer: ("_get_per_token_logps_and_entropies", "_logs"),
    SFTTrainer: ("_metrics", "_total_train_tokens"),
}
ENTROPY_BONUS = "_entropy_bonus_enabled"  # optional: without it, entropies keep their gradients (the safe choice)


def pinned_trl_versions(pyproject: Path = REPO_ROOT / "pyproject.toml") -> dict[str, str]:
    """{version: dependency group} for every `trl==` pin in pyproject.toml (the core list and each extra)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    groups = {"dependencies": project.get("dependencies", []), **project.get("optional-dependencies", {})}
    return {
        match.group(1): group
        for group, pins in groups.items()
        for pin in pins
        if (match := re.match(r"trl==([^;\s]+)", pin))
    }


def check_trl_version() -> str:
    """The installed TRL version; warns when pyproject does not pin it (the private members above were checked on
    the pinned versions only)."""
    pinned = pinned_trl_versions()
    if trl.__version__ not in pinned:
        versions = ", ".join(f"{version} ({group})" for version, group in sorted(pinned.items()))
        warnings.warn(
            f"TRL {trl.__version__} is not a version pyproject.toml pins ({versions}): training/trl_adapter.py uses "
            f"TRL private members checked only there; run tests/test_trl_adapter.py before trusting this run",
            stacklevel=2,
        )
    return trl.__version__


def require_private_members(trainer) -> None:
    """Raise, naming them, when a constructed trainer lacks the private members this module reads."""
    for base, names in PRIVATE_MEMBERS.items():
        missing = [name for name in names if isinstance(trainer, base) and not hasattr(trainer, name)]
        if missing:
            raise RuntimeError(
                f"TRL {trl.__version__}: {base.__name__} has no {', '.join(missing)} (training/trl_adapter.py); "
                f"install a pinned TRL ({', '.join(sorted(pinned_trl_versions()))})"
            )


def latest_generation_batch(trainer) -> dict | None:
    """TRL's record of the latest generation batch: {"prompt": [...], "completion": [...], "rewards": {name: [...]},
    ...}; None before a trainer exists."""
    if trainer is None:
        return None
    require_private_members(trainer)
    return trainer._logs


class SharedPrefixGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose policy forward shares each group's prompt (training.shared_prefix); anything it cannot group
    (images, MoE aux loss, rows that do not repeat a prompt) goes to TRL's own path."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        require_private_members(self)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        extras = {key for key, value in kwargs.items() if value not in (None, False)} - {
            "batch_size",
            "compute_entropy",
        }
        groups = None
        if not (args or extras):
            groups = shared_prefix.shared_prompts(input_ids, input_ids.size(1) - logits_to_keep)
        if groups is None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
            )
        with self.accelerator.autocast():  # the backbone is called directly, past the autocast-wrapped forward
            logps, entropies = shared_prefix.grouped_logps_and_entropies(
                model,
                input_ids,
                attention_mask,
                logits_to_keep,
                *groups,
                self.temperature,
                entropy_requires_grad=getattr(self, ENTROPY_BONUS, True),
            )
        return logps, (entropies if kwargs.get("compute_entropy") else None), None


class AnswerOnlySFTTrainer(SFTTrainer):
    """SFTTrainer whose loss computes logits at the answer positions only (training.answer_only_sft); logs TRL's
    entropy, token accuracy and token count as TRL's own compute_loss does. With `bucket_by_length` its batches hold
    rows of similar length, in random batch order (training.length_buckets)."""

    def __init__(self, *args, bucket_by_length: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        require_private_members(self)
        self.bucket_by_length = bucket_by_length

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if not self.bucket_by_length or dataset is None:
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        return LengthBucketSampler(lengths, self.args.train_batch_size, self.args.seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with self.accelerator.autocast():  # the backbone is called directly, past the autocast-wrapped forward
            loss, chosen = answer_only_loss(model, inputs, num_items_in_batch)
        metrics = self._metrics["train" if model.training else "eval"]
        scored = chosen.hits.numel() > 0  # TRL logs 0.0 for a batch with no answer tokens
        metrics["entropy"].append(chosen.entropies.detach().mean().item() if scored else 0.0)
        metrics["mean_token_accuracy"].append(chosen.hits.float().mean().item() if scored else 0.0)
        if model.training:
            self._total_train_tokens += int(inputs["attention_mask"].sum())
            metrics["num_tokens"] = [self._total_train_tokens]
        return loss
