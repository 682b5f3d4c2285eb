"""TRL's private API as training/trl_adapter.py uses it: these fail loudly when an installed TRL changes it."""

import inspect

import pytest
import trl
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer
from trl.trainer.utils import entropy_from_logits, selective_log_softmax_and_entropy

from training.length_buckets import LengthBucketSampler
from training.trl_adapter import (
    AnswerOnlySFTTrainer,
    SharedPrefixGRPOTrainer,
    check_trl_version,
    latest_generation_batch,
    pinned_trl_versions,
    require_private_members,
)


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


class TestVersionCheck:
    def test_the_installed_trl_is_pinned_and_passes_quietly(self, recwarn):
        assert trl.__version__ in pinned_trl_versions()
        assert check_trl_version() == trl.__version__
        assert not [w for w in recwarn if "TRL" in str(w.message)]

    def test_pins_come_from_pyproject_for_cpu_and_gpu(self):
        assert {"train", "gpu"} <= set(pinned_trl_versions().values())

    def test_an_unpinned_trl_warns_naming_the_pins(self, monkeypatch):
        monkeypatch.setattr(trl, "__version__", "0.0.1")
        with pytest.warns(UserWarning, match=r"TRL 0\.0\.1 is not a version pyproject.toml pins \(.*gpu.*train"):
            check_trl_version()


def test_private_method_and_utility_signatures():
    assert parameters(GRPOTrainer._get_per_token_logps_and_entropies)[:5] == [
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
    ]
    assert {"batch_size", "compute_entropy"} <= set(parameters(GRPOTrainer._get_per_token_logps_and_entropies))
    assert parameters(selective_log_softmax_and_entropy)[:4] == [
        "logits",
        "index",
        "entropy_requires_grad",
        "temperature",
    ]
    assert parameters(entropy_from_logits)[0] == "logits"
    assert parameters(SFTTrainer._get_train_sampler) == ["self", "train_dataset"]  # transformers' Trainer's


def test_a_trainer_without_the_members_is_refused_by_name():
    with pytest.raises(RuntimeError, match=r"GRPOTrainer has no .*_logs"):
        require_private_members(object.__new__(SharedPrefixGRPOTrainer))
    with pytest.raises(RuntimeError, match="SFTTrainer has no _metrics, _total_train_tokens"):
        require_private_members(object.__new__(AnswerOnlySFTTrainer))
    assert latest_generation_batch(None) is None


def test_constructed_trainers_have_the_members_in_the_shape_used(tiny_model_dir, tokenizer, tmp_path):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    common = {"use_cpu": True, "bf16": False, "report_to": "none", "gradient_checkpointing": False, "max_steps": 1}
    grpo = SharedPrefixGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=GRPOConfig(
            output_dir=str(tmp_path / "grpo"),
            num_generations=2,
            per_device_train_batch_size=2,
            max_completion_length=4,
            **common,
        ),
        train_dataset=Dataset.from_list([{"prompt": "a listing"}] * 2),
        processing_class=tokenizer,
    )
    logged = latest_generation_batch(grpo)
    assert {"prompt", "completion", "rewards"} <= set(logged)
    assert isinstance(grpo._entropy_bonus_enabled, bool)
    input_ids = torch.randint(0, 100, (2, 6))
    result = GRPOTrainer._get_per_token_logps_and_entropies(
        grpo, grpo.model, input_ids, torch.ones_like(input_ids), 3, batch_size=2, compute_entropy=True
    )
    assert len(result) == 3
    assert result[0].shape == result[1].shape == (2, 3)

    sft = AnswerOnlySFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=SFTConfig(output_dir=str(tmp_path / "sft"), per_device_train_batch_size=2, **common),
        train_dataset=Dataset.from_list([{"prompt": "a listing", "completion": "ALLOW"}] * 2),
        processing_class=tokenizer,
    )
    assert isinstance(sft._metrics["train"]["entropy"], list)
    assert sft._total_train_tokens == 0
    assert not isinstance(sft._get_train_sampler(), LengthBucketSampler)


def test_the_bucketing_trainer_batches_rows_of_similar_length(tiny_model_dir, tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    rows = [{"prompt": "a listing " * (1 + i % 8) * 4, "completion": "ALLOW"} for i in range(64)]
    sft = AnswerOnlySFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, use_cpu=True, report_to="none"),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        bucket_by_length=True,
    )
    assert isinstance(sft._get_train_sampler(), LengthBucketSampler)
    masks = [batch["attention_mask"] for batch in sft.get_train_dataloader()]
    assert sum(len(mask) for mask in masks) == 64
    assert all(bool(mask.all()) for mask in masks)  # 8 lengths, 8 rows of each: no batch needs padding
