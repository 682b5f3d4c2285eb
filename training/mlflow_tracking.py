"""MLflow tracking: one MLflow run per training run (the whole recipe as params, metrics per step, artifacts), and
`log_linked_run` for jobs that evaluate a trained run (an eval logs its metrics and report linked to the training run).

Local-first: without MLFLOW_TRACKING_URI, runs go to a SQLite store in the project (mlruns/mlflow.db, artifacts in
mlruns/artifacts/), which `make mlflow-ui` (`python -m training.mlflow_tracking`) opens with no server to set up.
A SQLite store anywhere keeps its artifacts in an `artifacts/` folder beside the database; a server URI (http://...)
decides for itself.

Needs the `track` extra (also in `train`). Telemetry is off unless MLFLOW_DISABLE_TELEMETRY says otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from moderation.errors import UserError, cli_main
from moderation.files import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_STORE = REPO_ROOT / "mlruns" / "mlflow.db"
EXPERIMENT = "grpo-moderation"
RUN_ID_FILE = "mlflow_run_id"  # in runs/<name>/, so a resumed training run continues the same MLflow run
TRAINING_RUN_TAG = "training_run_id"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{LOCAL_STORE}"


def _artifact_location(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def client():
    """An MlflowClient on `tracking_uri()` (the local SQLite store is created on first use)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    uri = tracking_uri()
    if uri == f"sqlite:///{LOCAL_STORE}":
        LOCAL_STORE.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client) -> str:
    """The project's experiment (MLFLOW_EXPERIMENT_NAME or grpo-moderation), created on first use."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    found = mlflow_client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=_artifact_location(tracking_uri()))


def flatten(values: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested config → MLflow params: dotted keys (the recipe's CLI override syntax), lists and None as JSON."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


def log_params(mlflow_client, run_id: str, params: Mapping) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in flatten(params).items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(mlflow_client, run_id: str, values: Mapping, step: int = 0, prefix: str = "") -> None:
    """Log the numeric entries of `values` (others, e.g. None for a reward that never applied, are skipped)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{prefix}{key}", float(value), now, step)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    for start in range(0, len(metrics), 1000):
        mlflow_client.log_batch(run_id, metrics=metrics[start : start + 1000])


def log_artifacts(mlflow_client, run_id: str, paths: Iterable[Path]) -> None:
    for path in paths:
        if path.is_file():
            mlflow_client.log_artifact(run_id, str(path))
        elif path.is_dir():
            mlflow_client.log_artifacts(run_id, str(path), artifact_path=path.name)


def training_run_id(run_dir: Path) -> str | None:
    """The MLflow run id a training run recorded (manifest.json, or the id file while it is still training)."""
    manifest = run_dir / "manifest.json"
    if manifest.is_file():
        recorded = json.loads(manifest.read_text(encoding="utf-8")).get("mlflow_run_id")
        if recorded:
            return recorded
    id_file = run_dir / RUN_ID_FILE
    return id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else None


def log_linked_run(
    name: str,
    metrics: Mapping,
    artifacts: Iterable[Path] = (),
    params: Mapping | None = None,
    training_run_dir: Path | None = None,
) -> str:
    """Log a finished job (an eval, a judge pass) as one MLflow run, nested under the training run it evaluated
    when that run was tracked with MLflow. Returns the new run's id."""
    mlflow_client = client()
    tags = {}
    parent = training_run_id(training_run_dir) if training_run_dir else None
    if parent:
        tags = {TRAINING_RUN_TAG: parent, "mlflow.parentRunId": parent}
    run_id = mlflow_client.create_run(experiment_id(mlflow_client), run_name=name, tags=tags).info.run_id
    log_params(mlflow_client, run_id, params or {})
    log_metrics(mlflow_client, run_id, metrics)
    log_artifacts(mlflow_client, run_id, artifacts)
    mlflow_client.set_terminated(run_id, "FINISHED")
    return run_id


class TrainingRun:
    """The MLflow side of a training run: params once, each metrics.jsonl record as it is logged, artifacts at the end.

    A resumed training run (run_dir holds the id) reopens its MLflow run instead of starting a new one; steps that
    run again after a resume are logged again at the same step numbers.
    """

    def __init__(self, run_dir: Path, name: str, params: Mapping, resume: bool):
        self.client = client()
        id_file = run_dir / RUN_ID_FILE
        if resume and id_file.is_file():
            self.run_id = id_file.read_text(encoding="utf-8").strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(experiment_id(self.client), run_name=name, tags={"run_dir": str(run_dir)})
        self.run_id = run.info.run_id
        log_params(self.client, self.run_id, params)
        atomic_write_text(id_file, self.run_id + "\n")

    def log_record(self, record: Mapping) -> None:
        """One metrics.jsonl record: its numbers, keyed `<stage>/<name>` (SFT and GRPO both count steps from 1)."""
        values = {key: value for key, value in record.items() if key not in ("stage", "step")}
        log_metrics(self.client, self.run_id, values, step=record["step"], prefix=f"{record['stage']}/")

    def finish(self, artifacts: Iterable[Path]) -> None:
        log_artifacts(self.client, self.run_id, artifacts)
        self.client.set_terminated(self.run_id, "FINISHED")

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        """Mark the run FAILED (KILLED on Ctrl-C) when the training block raises; success is `finish`'s to mark."""
        if error_type is not None:
            self.client.set_terminated(self.run_id, "KILLED" if error_type is KeyboardInterrupt else "FAILED")


@cli_main
def ui() -> None:
    """`make mlflow-ui`: MLflow's UI over the store training logs to (extra arguments go to `mlflow ui`)."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        raise UserError(f"MLFLOW_TRACKING_URI is {uri}: open that server's UI instead (this serves a SQLite store)")
    client()  # creates the local store's folder
    # One worker and no background job runner (MLflow's GenAI jobs, 7 processes): browsing runs needs neither.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--workers", "1", *sys.argv[1:]]
    os.execv(sys.executable, [sys.executable, "-m", *command])


if __name__ == "__main__":
    ui()
