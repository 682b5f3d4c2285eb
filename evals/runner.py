"""The evaluation runner: moderate a dataset in batches, save each batch as it finishes, then score and report.

    python -m evals run --model smollm2-135m --data dev --out runs/evals/base-dev
    python -m evals run --model runs/cpu-smollm2 --data data/default/test.parquet --out runs/evals/trained-test
    python -m evals run --model keyword --data dev --out runs/evals/keyword-dev
    python -m evals run --model gpt-4o-mini --endpoint https://api.openai.com/v1 --data dev --out /tmp/e

The output folder holds predictions.jsonl (one line per item, appended per batch), metrics.json, manifest.json,
report.md and PNG plots. Re-running the same command skips items already in predictions.jsonl, so an interrupted
evaluation resumes where it stopped; a different model, policy or data in the same folder is refused.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from evals.baselines import KEYWORD, EndpointModerator, KeywordModerator
from evals.data import Dataset, Item, load_dataset, load_label_map
from evals.files import MANIFEST, METRICS, PREDICTIONS, read_predictions, write_json
from evals.metrics import compute_metrics
from evals.report import write_report
from moderation.errors import UserError
from moderation.generate import GenerationConfig
from moderation.jsonl import drop_torn_tail
from moderation.paths import REPO_ROOT
from moderation.policy import load_policy
from moderation.runs import MANIFEST as RUN_MANIFEST
from moderation.runs import MERGED, RunInfo, load_moderator, read_run

# Settings that change predictions: resuming into a folder made with other values would mix two evaluations.
IDENTITY = (
    "model",
    "endpoint",
    "policy",
    "prompt_from",
    "data",
    "label_map",
    "max_new_tokens",
    "temperature",
    "keyword_min_hits",
)


class EvalConfig(BaseModel):
    """Everything `python -m evals run` needs; saved in manifest.json."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="HF id, local folder, embedded name, runs/<name>, 'keyword', or an endpoint's model")
    data: str = Field(description="split name (dev, test, <dataset>/dev) or a .parquet/.jsonl/.csv file")
    out: str = Field(description="output folder (resumed when it holds a run of the same config)")
    policy: str | None = Field(None, description="policy name or YAML; default: the run's policy, else marketplace")
    endpoint: str | None = Field(None, description="base URL of an OpenAI-compatible API; `model` is its model name")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the endpoint's API key")
    prompt_from: str | None = Field(
        None, description="run folder whose policy and prompt settings every model gets (fair base-vs-trained runs)"
    )
    label_map: str | None = Field(None, description="YAML/JSON LabelMap for files from other taxonomies")
    strict: bool = Field(False, description="a bad row is an error instead of being skipped and counted")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N usable rows")
    batch_size: int = Field(8, ge=1, description="listings per generate() call")
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0, description="0 is greedy")
    keyword_min_hits: int = Field(2, ge=1, description="keyword baseline: cue words needed to flag a category")
    n_bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the F1 confidence interval")
    seed: int = 0
    device: str = "cpu"


def build_moderator(config: EvalConfig):
    """The moderator the config names: the keyword baseline, an endpoint, or a local model / run folder."""
    generation = GenerationConfig(config.max_new_tokens, config.batch_size, config.temperature)
    model, run = locate_model(config.model)
    if config.prompt_from:
        run = read_run(config.prompt_from)
        if run is None:
            raise UserError(f"--prompt-from {config.prompt_from}: not a run folder (no {RUN_MANIFEST})")
    policy = config.policy or (run.policy if run else None)
    prompt = run.prompt if run else None
    if config.model == KEYWORD:
        return KeywordModerator(load_policy(policy or "marketplace"), config.keyword_min_hits)
    if config.endpoint:
        policy = load_policy(policy or "marketplace")
        return EndpointModerator(config.endpoint, config.model, policy, prompt, generation, config.api_key_env)
    return load_moderator(model, policy, prompt, generation=generation, device=config.device)


def locate_model(model: str) -> tuple[str, RunInfo | None]:
    """A stage inside a run (runs/<name>/sft: merged/ without a manifest of its own) loads as its merged model with
    the run's policy and prompt; anything else passes through unchanged to `load_moderator`."""
    path = Path(model)
    if not (path / RUN_MANIFEST).is_file() and (path / MERGED).is_dir() and (path.parent / RUN_MANIFEST).is_file():
        return str(path / MERGED), read_run(path.parent)
    return model, None


def predict(moderator, items: Sequence[Item], path: Path, desc: str = "moderating") -> list[dict]:
    """Moderate the items not yet in `path`, appending one JSON line per item after each batch; return all records
    for `items`, in their order."""
    drop_torn_tail(path)
    done = read_predictions(path)
    todo = [item for item in items if item.id not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle, tqdm(total=len(todo), desc=desc, unit="item") as bar:
        start = 0
        for batch in moderator.moderate_batches([item.text for item in todo]):
            for item, result in zip(todo[start : start + len(batch)], batch, strict=True):
                record = _record(item, result)
                done[item.id] = record
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            start += len(batch)
            bar.update(len(batch))
    # Gold fields come from the data as it is now, so a relabelled row is scored with its new label.
    return [{**done[item.id], **_gold(item)} for item in items]


def _gold(item: Item) -> dict:
    return {"id": item.id, "label": item.label, "categories": list(item.categories), **item.meta, "text": item.text}


def _record(item: Item, result) -> dict:
    verdict = result.verdict
    return {
        **_gold(item),
        "completion": result.completion,
        "decision": verdict.decision,
        "predicted_categories": list(verdict.categories),
        "status": str(verdict.status),
        "reasoning": verdict.reasoning,
        "latency_s": result.latency_s,
    }


def run_eval(config: EvalConfig, report: bool = True) -> dict:
    """Evaluate, write predictions.jsonl, metrics.json, manifest.json (and report.md + PNGs); return the metrics."""
    out = Path(config.out)
    started = time.perf_counter()
    dataset = load_dataset(config.data, load_label_map(config.label_map), config.strict, config.limit)
    identity = identity_of(config, dataset)
    check_resume(out, identity)
    moderator = build_moderator(config)
    write_json(out / MANIFEST, manifest(config.model_dump(), identity=identity, finished=False))
    loaded = time.perf_counter()
    records = predict(moderator, dataset.items, out / PREDICTIONS)
    predicted = time.perf_counter()
    metrics = compute_metrics(records, moderator.policy.category_ids, config.n_bootstrap, config.seed)
    metrics["skipped_rows"] = dataset.skipped
    metrics["label"] = label_for(config.model)
    metrics["policy"] = moderator.policy.name
    metrics["config"] = config.model_dump()
    write_json(out / METRICS, metrics)
    write_json(
        out / MANIFEST,
        manifest(
            config.model_dump(),
            identity=identity,
            finished=True,
            n=metrics["n"],
            timings_s={"load": loaded - started, "predict": predicted - loaded, "total": time.perf_counter() - started},
        ),
    )
    if report:
        write_report(out, metrics, records, moderator.policy)
    return metrics


def label_for(model: str) -> str:
    """A short name for tables, plots and folders: a run folder's name, a model id's last part, or the baseline."""
    return Path(model.rstrip("/")).name or model


def identity_of(config: EvalConfig, dataset: Dataset) -> dict:
    identity = {key: getattr(config, key) for key in IDENTITY}
    identity["data"] = str(dataset.path.resolve())
    return identity


def check_resume(out: Path, identity: dict) -> None:
    path = out / MANIFEST
    if not path.exists():
        return
    previous = json.loads(path.read_text(encoding="utf-8")).get("identity", {})
    changed = [key for key in sorted(set(previous) | set(identity)) if previous.get(key) != identity.get(key)]
    if changed:
        what = ", ".join(f"{key} {previous.get(key)!r} -> {identity.get(key)!r}" for key in changed)
        raise UserError(f"{out} holds an evaluation with other settings ({what}); use another --out")


def manifest(config: dict, **extra) -> dict:
    """The small manifest every output folder gets: config, git commit, versions, plus `extra`."""
    return {"config": config, "git_commit": _git_commit(), "versions": _versions(), **extra}


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def _versions() -> dict:
    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "scikit-learn", "grpo-moderation"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found
