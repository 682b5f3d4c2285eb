"""The rewards inside a real TRL GRPOTrainer step (tiny random Llama), and the audit over TRL's logged completions."""

import math

import pytest

import rewards
from rewards.audit import audit, load_completions

LISTINGS = [
    ("Printable weekly planner, A4 and US letter.", "allow", []),
    ("Watch 500+ sports channels: 12 month IPTV, M3U link.", "disallow", ["iptv"]),
    (
        "Verify your account here or lose your wallet: crypto-login.example",
        "disallow",
        ["phishing", "non_fiat_currency"],
    ),
    ("Poker-themed art print, 30x40 cm.", "allow", []),
]


@pytest.fixture(scope="module")
def grpo_run(tiny_model_dir, policy, tmp_path_factory):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    out = tmp_path_factory.mktemp("grpo")
    rows = [  # a bare user turn: the system prompt only costs time here, the rewards read the columns
        {
            "prompt": [{"role": "user", "content": f"<listing>\n{text}\n</listing>"}],
            "text": text,
            "label": label,
            "categories": categories,
            "id": f"row-{i}",
            "source": "test",
        }
        for i, (text, label, categories) in enumerate(LISTINGS)
    ]
    args = GRPOConfig(
        output_dir=str(out),
        num_generations=4,
        per_device_train_batch_size=16,  # one step sees all four rows, allowed and disallowed
        max_completion_length=8,
        max_steps=1,
        gradient_checkpointing=False,
        learning_rate=1e-4,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        log_completions=True,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=rewards.build_rewards(list(rewards.DEFAULT_REWARDS), policy, {"verdict": {"false_alarm": -0.2}}),
        args=args,
        train_dataset=Dataset.from_list(rows),
    )
    trainer.train()
    return trainer, out


def test_every_reward_is_logged_under_its_name(grpo_run):
    trainer, _ = grpo_run
    logs = [entry for entry in trainer.state.log_history if "rewards/verdict/mean" in entry]
    assert len(logs) == 1
    for name in rewards.DEFAULT_REWARDS:
        assert math.isfinite(logs[0][f"rewards/{name}/mean"]), name
    # a random model never writes a readable verdict: every row gets the lowest verdict and categories score
    assert logs[0]["rewards/verdict/mean"] == logs[0]["rewards/categories/mean"] == -1.0


def test_audit_reads_trl_logged_completions(grpo_run, policy):
    _, out = grpo_run
    records = load_completions(out / "completions")
    assert len(records) == 4 * 4 and {r["text"] for r in records} == {t for t, _, _ in LISTINGS}
    report = audit(records, policy)
    assert report.groups == 4
    assert report.rewards["format_strict"].source == "computed"
    assert report.rewards["verdict"].source == "logged"
    assert report.rewards["verdict"].mean == -1.0
    assert report.rewards["verdict"].zero_variance_groups == 1.0  # no learning signal, as a random model gives
