"""Exact resume: a run killed mid-stage and resumed logs exactly what an uninterrupted run logs; torn checkpoints and
torn log lines are skipped."""

import json
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from training.pipeline import train
from training.recipe import load_recipe
from training.resume import read_records, resume_point, rewind_logs
from training.tracking import plot_metrics

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "recipes" / "cpu-smollm2.yaml"
STEPS = {"max_steps": 4, "save_steps": 2, "sft.max_steps": 4, "sft.save_steps": 2, "per_device_train_batch_size": 4}

# Runs train_grpo's CLI and SIGKILLs itself right after the trainer of `stage` has logged step `step` (so that step's
# metrics and completions are on disk, but its checkpoint is not): the crash a resume must undo exactly.
KILL_AFTER_LOG = """
import os, signal, sys
from transformers import Trainer
from trl import GRPOTrainer
import train_grpo
stage, step = sys.argv[1], int(sys.argv[2])
log = Trainer.log
def log_then_die(self, logs, *args, **kwargs):
    log(self, logs, *args, **kwargs)
    if isinstance(self, GRPOTrainer) == (stage == "grpo") and self.state.global_step == step:
        os.kill(os.getpid(), signal.SIGKILL)
Trainer.log = log_then_die
train_grpo.cli(sys.argv[3:])
"""


def logged(run_dir: Path) -> tuple[list, Counter]:
    """What a run logged, value-free: (stage, step, is the end-of-train summary) per metrics line; rows per step."""
    metrics = [(r["stage"], r["step"], "train_runtime" in r) for r in read_records(run_dir / "metrics.jsonl")]
    completions = Counter(r["step"] for r in read_records(run_dir / "completions.jsonl"))
    return metrics, completions


@pytest.fixture(scope="module")
def uninterrupted(tiny_recipe, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    train(load_recipe(RECIPE, tiny_recipe(root, **STEPS)))
    return logged(root / "tiny")


def test_uninterrupted_run_logs_each_step_once(uninterrupted):
    metrics, completions = uninterrupted
    for stage in ("sft", "grpo"):
        assert [s for st, s, summary in metrics if st == stage and not summary] == [1, 2, 3, 4]
        assert [s for st, s, summary in metrics if st == stage and summary] == [4]
    assert completions == {1: 4, 2: 4, 3: 4, 4: 4}, "one generation batch (4 completions) per step, written once"


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_killed_then_resumed_run_logs_as_an_uninterrupted_run(stage, uninterrupted, tiny_recipe, tmp_path, capsys):
    overrides = tiny_recipe(tmp_path, **STEPS)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_LOG, stage, "3", "--recipe", str(RECIPE), *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = tmp_path / "tiny"
    checkpoints = run_dir / ("sft/checkpoints" if stage == "sft" else "checkpoints")
    assert logged(run_dir)[0][-1][:2] == (stage, 3), "step 3 was logged before the kill"
    # A save cut short at step 3: weights written, trainer_state.json (written last by transformers) missing.
    shutil.copytree(checkpoints / "checkpoint-2", checkpoints / "checkpoint-3")
    (checkpoints / "checkpoint-3" / "trainer_state.json").unlink()

    train(load_recipe(RECIPE, [*overrides, "resume=true"]))
    out = capsys.readouterr().out
    assert f"resuming {stage.upper()} from {checkpoints / 'checkpoint-2'}" in out
    assert f"skipping incomplete checkpoint {checkpoints / 'checkpoint-3'}" in out
    assert logged(run_dir) == uninterrupted
    assert (run_dir / "merged" / "READY").exists()


def write_checkpoint(path: Path, step: int | None, weights: bool = True) -> None:
    path.mkdir(parents=True)
    if weights:
        (path / "adapter_model.safetensors").write_bytes(b"w")
    if step is not None:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def test_resume_point_skips_and_removes_incomplete_checkpoints(tmp_path):
    write_checkpoint(tmp_path / "checkpoint-2", 2)
    write_checkpoint(tmp_path / "checkpoint-10", 10, weights=False)  # weights not written yet
    write_checkpoint(tmp_path / "checkpoint-4", None)  # trainer_state.json not written yet
    (tmp_path / "checkpoint-6").mkdir()
    write_checkpoint(tmp_path / "checkpoint-8", None)
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text('{"global_st')  # torn
    assert resume_point(tmp_path) == (tmp_path / "checkpoint-2", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]


def test_resume_point_without_checkpoints(tmp_path):
    write_checkpoint(tmp_path / "checkpoint-1", None)
    assert resume_point(tmp_path) == (None, 0)


def test_rewind_logs_keeps_earlier_stages_and_drops_later_steps_and_torn_tail(tmp_path):
    rows = [
        {"stage": "sft", "step": 4, "loss": 1.0},
        {"stage": "sft", "step": 4, "train_runtime": 1.0},
        {"stage": "grpo", "step": 2, "reward": 0.5, "text": "line\u2028separator"},
        {"stage": "grpo", "step": 2, "train_runtime": 1.0},  # a summary after checkpoint 2: logged again on resume
        {"stage": "grpo", "step": 3, "reward": 0.5},
    ]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + '{"stage": "grp')
    (tmp_path / "completions.jsonl").write_text('{"step": 2, "group": "2:0"}\n{"step": 3, "group": "3:0"}\n')
    rewind_logs(tmp_path, "grpo", 2)
    assert list(read_records(metrics)) == rows[:3]
    assert [r["step"] for r in read_records(tmp_path / "completions.jsonl")] == [2]
    rewind_logs(tmp_path, "sft", 0)
    assert list(read_records(metrics)) == []


def test_plot_skips_a_torn_last_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"stage": "grpo", "step": s, "reward": 0.1 * s, "frac_reward_zero_std": 0.5} for s in (1, 2)]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"stage": "grpo", "st')
    plot_metrics(metrics, tmp_path / "rewards.png")
    assert (tmp_path / "rewards.png").stat().st_size > 0
