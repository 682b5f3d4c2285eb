"""MLflow tracking: a tiny training run with tracking=mlflow, read back through MlflowClient from a temporary store;
an eval linked to it (directly, and through `evals run --mlflow`)."""

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from evals.runner import EvalConfig, run_eval
from moderation.errors import UserError
from training import mlflow_tracking
from training.pipeline import train
from training.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "recipes" / "cpu-smollm2.yaml"


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_training_run_is_tracked_and_an_eval_links_to_it(store, tiny_recipe, tiny_dataset_dir, tmp_path):
    overrides = tiny_recipe(tmp_path, tracking="[wandb, mlflow]", **{"sft.max_steps": 1})
    recipe = load_recipe(RECIPE, overrides)
    run_dir = train(recipe)

    run_id = json.loads((run_dir / "manifest.json").read_text())["mlflow_run_id"]
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    assert len(run.data.params) == len(mlflow_tracking.flatten(recipe.model_dump(mode="json")))
    assert run.data.params["lora.r"] == "16" and run.data.params["tracking"] == '["wandb", "mlflow"]'
    assert {"sft/loss", "grpo/reward", "grpo/frac_reward_zero_std", "grpo/rewards/verdict/mean"} <= set(
        run.data.metrics
    )
    assert [m.step for m in client.get_metric_history(run_id, "grpo/reward")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"rewards.png", "manifest.json", "completions.jsonl"} <= artifacts
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tmp_path / "mlruns" / "artifacts")

    report = tmp_path / "report.md"
    report.write_text("# eval\n")
    eval_id = mlflow_tracking.log_linked_run(
        "tiny-eval", {"accuracy": 0.5, "note": "skipped"}, [report], {"limit": 8}, training_run_dir=run_dir
    )
    linked = client.get_run(eval_id)
    assert linked.data.tags[mlflow_tracking.TRAINING_RUN_TAG] == run_id
    assert linked.data.tags["mlflow.parentRunId"] == run_id
    assert linked.data.metrics == {"accuracy": 0.5} and linked.data.params == {"limit": "8"}
    assert [a.path for a in client.list_artifacts(eval_id)] == ["report.md"]

    config = EvalConfig(
        model=str(run_dir), data=str(tiny_dataset_dir / "train.parquet"), out=str(tmp_path / "e"), limit=2, mlflow=True
    )
    metrics = run_eval(config)
    query = f"tags.`{mlflow_tracking.TRAINING_RUN_TAG}` = '{run_id}' and attributes.run_id != '{eval_id}'"
    (evaluated,) = client.search_runs([run.info.experiment_id], query)
    assert evaluated.data.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    assert evaluated.data.params["model"] == str(run_dir)
    assert {"metrics.json", "report.md"} <= {a.path for a in client.list_artifacts(evaluated.info.run_id)}


def test_tracking_takes_one_name_or_a_list(tiny_dataset_dir):
    assert load_recipe(RECIPE, [f"dataset={tiny_dataset_dir}", "tracking=mlflow"]).tracking == ["mlflow"]
    with pytest.raises(UserError, match="tracking"):
        load_recipe(RECIPE, [f"dataset={tiny_dataset_dir}", "tracking=tensorboard"])


def test_flatten_uses_the_override_syntax():
    assert mlflow_tracking.flatten({"lora": {"r": 8, "target_modules": ["q", "k"]}, "name": "x", "seed": None}) == {
        "lora.r": "8",
        "lora.target_modules": '["q", "k"]',
        "name": "x",
        "seed": "null",
    }
