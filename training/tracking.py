"""What a run logs as it trains: metrics.jsonl and completions.jsonl (and MLflow), the no-signal warning, the reward
plot, and the wandb switch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from moderation.plotting import pyplot
from training.recipe import Recipe
from training.resume import COMPLETIONS, METRICS, append_record, read_records


def make_tracker(recipe: Recipe, log_dir: Path, mlflow_run=None):
    """A TrainerCallback writing metrics.jsonl (and to `mlflow_run`) and completions.jsonl, and warning when groups
    carry no signal."""
    from transformers import TrainerCallback

    from rewards.registry import ANSWER_START, completion_text, completion_texts

    class Tracker(TrainerCallback):
        def __init__(self):
            self.trainer = None  # set after the trainer exists, to read its logged completions
            self.rows_by_prompt: dict = {}  # set by `track`: the GRPO rows, to label logged completions
            self.stage = "grpo"
            self.completions_through = 0  # last GRPO step whose completions are written (the end-of-train log
            # repeats the last step's number)
            self.flat_logs = 0
            self.warned = False

        def track(self, rows: list[dict]) -> None:
            """The GRPO rows, as the trainer sees them (prompt, columns, `answer_start`)."""
            self.rows_by_prompt = {completion_text(row["prompt"]): row for row in rows}

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
            from training.trl_adapter import latest_generation_batch

            logged = latest_generation_batch(self.trainer)
            if not logged or not logged.get("completion"):
                return
            rows = [self.rows_by_prompt.get(completion_text(prompt), {}) for prompt in logged["prompt"]]
            starts = [row.get(ANSWER_START, "") for row in rows]
            answers = completion_texts(logged["completion"], starts)  # whole answers, as the rewards scored them
            for i, (row, answer) in enumerate(zip(rows, answers, strict=True)):
                record = {
                    "step": step,
                    "group": f"{step}:{i // recipe.num_generations}",
                    "completion": answer,
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
    plt = pyplot()

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
