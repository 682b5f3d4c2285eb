"""The evaluation runner: moderate a dataset in batches, save each batch as it finishes, then score and report.

    python -m evals run --model smollm2-135m --data dev --out runs/evals/base-dev
    python -m evals run --model runs/cpu-smollm2 --data data/default/test.parquet --out runs/evals/trained-test
    python -m evals run --model keyword --data dev --out runs/evals/keyword-dev
    python -m evals run --model tfidf --data test --out runs/evals/tfidf-test
    python -m evals run --model gpt-4o-mini --endpoint https://api.openai.com/v1 --data dev --out /tmp/e
    python -m evals run --model runs/cpu-smollm2 --mode fast --data dev --out runs/evals/trained-dev-fast

The output folder holds predictions.jsonl (one line per item, appended per batch), metrics.json, manifest.json,
report.md and PNG plots. Re-running the same command skips items already in predictions.jsonl, so an interrupted
evaluation resumes where it stopped; a different model (or the same path with other weights), policy, data or
generation settings in the same folder is refused. `--mode fast` scores a local model in one forward pass (serve's fast
mode): each prediction keeps P(disallow) as `score` and the category shares, the verdict at `--threshold` (by default
the cut serve takes from the model's held-back slice, else 0.5) feeds the usual metrics, and metrics.json gains a
`scores` block (ROC/PR-AUC, calibration, the threshold for `--target-fpr`, recall at fixed FPRs) with
reliability_diagram.png beside it; fast and reasoning runs never share a folder. Reasoning mode (the default) keeps
the written completion and reads the verdict after its reasoning at the same `--threshold`, as serve does
(inference.reasoned), with the same `score`; `--threshold written` counts the written answer instead. The baselines
(`keyword`, `tfidf`) fit on the train split beside the evaluated file (or `--train`) and record what they chose under
`baseline` in metrics.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from evals.baselines import KEYWORD, EndpointModerator, KeywordModerator, choose_min_hits
from evals.calibration import write_reliability
from evals.data import Dataset, Item, load_dataset, load_label_map, resolve_data, train_split_for
from evals.fast import FastModerator
from evals.files import MANIFEST, METRICS, PREDICTIONS, read_predictions, write_json
from evals.metrics import compute_metrics
from evals.reasoned import ReasonedModerator
from evals.report import write_report
from evals.tfidf import TFIDF, TfidfModerator, load_or_fit
from inference import ENGINES, load_moderator
from inference.compute_types import COMPUTE_TYPES
from inference.generate import GenerationConfig
from inference.models import resolve_model
from inference.runs import MANIFEST as RUN_MANIFEST
from inference.runs import RunInfo, read_run
from moderation.errors import UserError
from moderation.files import file_sha256
from moderation.jsonl import drop_torn_tail
from moderation.policy import load_policy
from moderation.provenance import git_commit, versions
from moderation.secrets import ApiKeyEnv, RedactedUrl
from serve.validation import DEFAULT_THRESHOLD, SERVED, held_back_or_default

# Settings that change predictions: resuming into a folder made with other values would mix two evaluations.
# `identity_of` adds the model's fingerprint (a hash of its weights, or of the train split a baseline fits on) and the
# generation settings.
IDENTITY = (
    "model",
    "endpoint",
    "policy",
    "prompt_from",
    "data",
    "label_map",
    "keyword_min_hits",
    "train",
    "engine",
    "compute_type",
)
BASELINES = (KEYWORD, TFIDF)
Mode = Literal["reasoning", "fast"]
WRITTEN = "written"  # reasoning mode: the written answer, no threshold
FastCut = Annotated[float, Field(ge=0, le=1)] | Literal["served"]  # a threshold, or serve's for the model
Cut = FastCut | Literal["written"]  # reasoning mode may also keep the written answer


class EvalConfig(BaseModel):
    """Everything `python -m evals run` needs; saved in manifest.json."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="HF id, local folder, embedded name, runs/<name>, 'keyword', 'tfidf', or an endpoint's model"
    )
    data: str = Field(description="split name (dev, test, <dataset>/dev) or a .parquet/.jsonl/.csv file")
    out: str = Field(description="output folder (resumed when it holds a run of the same config)")
    policy: str | None = Field(None, description="policy name or YAML; default: the run's policy, else marketplace")
    endpoint: RedactedUrl | None = Field(
        None, description="base URL of an OpenAI-compatible API; `model` is its model name (saved without credentials)"
    )
    api_key_env: ApiKeyEnv = Field(
        "OPENAI_API_KEY", description="variable holding the endpoint's API key, named *_API_KEY or *_TOKEN"
    )
    prompt_from: str | None = Field(
        None, description="run folder whose policy and prompt settings every model gets (fair base-vs-trained runs)"
    )
    label_map: str | None = Field(None, description="YAML/JSON LabelMap for files from other taxonomies")
    strict: bool = Field(False, description="a bad row is an error instead of being skipped and counted")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N usable rows")
    batch_size: int = Field(8, ge=1, description="listings per generate() call")
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0, description="0 is greedy")
    keyword_min_hits: int | None = Field(
        None, ge=1, description="keyword baseline: cue words needed to flag a category (default: chosen on train)"
    )
    train: str | None = Field(
        None, description="train split the keyword and tfidf baselines fit on (default: train.parquet beside --data)"
    )
    n_bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for the 95% intervals")
    seed: int = 0
    device: str = "cpu"
    engine: Literal[ENGINES] = Field("transformers", description="engine for local models (vllm: CUDA only)")
    compute_type: Literal[COMPUTE_TYPES] = Field(
        "int8",
        description="ct2: int8, int8_float32 or float32; transformers: bfloat16 (else float32); vllm: bfloat16, "
        "float16 or float32",
    )
    mode: Mode = Field(
        "reasoning", description="local models: reasoning (generate and parse) or fast (one forward pass, as serve's)"
    )
    threshold: Cut = Field(
        SERVED,
        description="local models: flag when P(disallow) is at least this (reasoning mode: read after the model's "
        "own reasoning); `served`: the threshold serve takes by default, from this model's fast-mode eval of its "
        "held-back slice (<model>/eval/holdout; never below 0.5), else 0.5; `written` (reasoning mode): the answer "
        "the model wrote",
    )
    target_fpr: float = Field(
        0.05, ge=0, le=1, description="scored runs: report the threshold whose false-positive rate stays within this"
    )
    mlflow: bool = Field(
        False, description="also log metrics, report and plots to MLflow, nested under the training run it evaluates"
    )


def build_moderator(config: EvalConfig):
    """The moderator the config names: a baseline, an endpoint, or a local model / run folder. The one place models
    are loaded. A baseline fitted on train carries what it chose as `fitted` (recorded in metrics.json). Fast mode
    wraps a local model only (`effective` has already set baselines and endpoints back to reasoning)."""
    generation = _generation(config)
    model, run = settings_source(config)
    policy = policy_name(config, run)
    prompt = run.prompt if run else None
    if config.model in BASELINES and not config.endpoint:
        return _baseline(config, load_policy(policy or "marketplace"))
    if config.endpoint:
        policy = load_policy(policy or "marketplace")
        return EndpointModerator(config.endpoint, config.model, policy, prompt, generation, config.api_key_env)
    moderator = load_moderator(model, config.engine, config.compute_type, policy, prompt, generation, config.device)
    if config.mode == "fast":
        return FastModerator(moderator, config.threshold)
    return moderator if config.threshold == WRITTEN else ReasonedModerator(moderator, config.threshold)


def settings_source(config: EvalConfig) -> tuple[str, RunInfo | None]:
    """The model to load and the run whose policy and prompt it is judged with (`--prompt-from`'s when given)."""
    model, run = locate_model(config.model)
    if config.prompt_from:
        run = read_run(config.prompt_from)
        if run is None:
            raise UserError(f"--prompt-from {config.prompt_from}: not a run folder (no {RUN_MANIFEST})")
    return model, run


def policy_name(config: EvalConfig, run: RunInfo | None) -> str | None:
    """--policy, else the policy of the run the model is judged with (settings_source); None: the default."""
    return config.policy or (run.policy if run else None)


def policy_of(config: EvalConfig):
    """The policy an evaluation is scored against: policy_name's, else marketplace."""
    _, run = settings_source(config)
    return load_policy(policy_name(config, run) or "marketplace")


def effective(config: EvalConfig) -> tuple[EvalConfig, str | None]:
    """The config as it runs, and where its fast-mode threshold came from: baselines and endpoints have no fast mode, so
    they ignore `--mode fast` (said once); `served` becomes the number it stands for (said once)."""
    if config.endpoint or config.model in BASELINES:
        if config.mode == "fast":
            print(f"{config.model}: mode fast applies to local models only; scored as usual (mode reasoning)")
        return config.model_copy(update={"mode": "reasoning", "threshold": WRITTEN}), None
    if config.threshold == WRITTEN:
        if config.mode == "fast":
            raise UserError("--threshold written is reasoning mode's written answer; fast mode takes a number")
        return config, None
    if config.threshold != SERVED:
        return config, "--threshold"
    cut = held_back_or_default(config.model)
    print(f"{config.model}: {config.mode} mode flags at P(disallow) >= {cut.value:.4g}: {cut.source}")
    return config.model_copy(update={"threshold": cut.value}), cut.source


def _generation(config: EvalConfig) -> GenerationConfig:
    return GenerationConfig(config.max_new_tokens, config.batch_size, config.temperature)


def _baseline(config: EvalConfig, policy):
    """The keyword or TF-IDF baseline, fitted on the train split (keyword: only when `keyword_min_hits` is unset)."""
    if config.model == KEYWORD and config.keyword_min_hits is not None:
        moderator = KeywordModerator(policy, config.keyword_min_hits)
        moderator.fitted = {"min_hits": config.keyword_min_hits, "criterion": "given (--keyword-min-hits)"}
        return moderator
    train_path = train_split_for(resolve_data(config.data), config.train)
    train = load_dataset(train_path).items
    if config.model == KEYWORD:
        chosen = choose_min_hits(policy, train)
        moderator = KeywordModerator(policy, chosen["min_hits"])
        moderator.fitted = {"train": str(train_path), "train_sha256": file_sha256(train_path), **chosen}
        return moderator
    model, fitted = load_or_fit(train_path, train, policy)
    moderator = TfidfModerator(model, policy)
    moderator.fitted = fitted
    return moderator


def locate_model(model: str) -> tuple[str, RunInfo | None]:
    """A stage inside a run (runs/<name>/sft: merged/ without a manifest of its own) loads as its merged model with
    the run's policy and prompt; anything else passes through unchanged to `load_moderator`."""
    if (Path(model) / RUN_MANIFEST).is_file() or (stage := read_run(model)) is None:
        return model, None
    return str(stage.model_path), stage


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
    return {**_gold(item), **result_fields(result)}


def result_fields(result) -> dict:
    """What a moderator's result adds to a prediction record (the gold fields come from the item)."""
    verdict = result.verdict
    shares = {"category_share": result.category_share} if hasattr(result, "category_share") else {}
    return {
        "completion": result.completion,
        "decision": verdict.decision,
        "predicted_categories": list(verdict.categories),
        "status": str(verdict.status),
        "reasoning": verdict.reasoning,
        "latency_s": result.latency_s,
        "score": getattr(result, "score", None),  # P(disallow), from moderators that have one (fast mode, tfidf)
        **shares,  # fast mode: each category's share given DISALLOW
    }


def run_eval(config: EvalConfig, report: bool = True) -> dict:
    """Evaluate, write predictions.jsonl, metrics.json, manifest.json (and report.md + PNGs); return the metrics."""
    config, threshold_source = effective(config)
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
    metrics = compute_metrics(
        records, moderator.policy.category_ids, config.n_bootstrap, config.seed, config.target_fpr
    )
    metrics["skipped_rows"] = dataset.skipped
    metrics["label"] = label_for(config.model, config.mode, None if config.threshold == WRITTEN else config.threshold)
    metrics["policy"] = moderator.policy.name
    metrics["config"] = config.model_dump() | ({"threshold_source": threshold_source} if threshold_source else {})
    if fitted := getattr(moderator, "fitted", None):
        metrics["baseline"] = fitted
    metrics["ids"] = [item.id for item in dataset.items]  # what `compare` pairs: this run's items, not the whole file
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
    write_reliability(metrics, out)
    if report:
        write_report(out, metrics, records, moderator.policy)
    if config.mlflow:
        log_to_mlflow(config, out, metrics)
    return metrics


def log_to_mlflow(config: EvalConfig, out: Path, metrics: dict) -> str:
    """The eval as an MLflow run (headline metrics, config, report and plots), linked to the training run when the
    model is a run folder or a stage of one that was tracked with MLflow."""
    from training.mlflow_tracking import log_linked_run

    model, run = locate_model(config.model)
    run_dir = Path(config.model).parent if run else Path(model)
    files = [out / name for name in (METRICS, "report.md")] + sorted(out.glob("*.png"))
    return log_linked_run(
        f"eval {Path(config.model).name} on {Path(config.data).stem}",
        metrics,
        [path for path in files if path.is_file()],
        params=config.model_dump(mode="json"),
        training_run_dir=run_dir if (run_dir / RUN_MANIFEST).is_file() else None,
    )


def label_for(model: str, mode: Mode = "reasoning", threshold: float | None = None) -> str:
    """A short name for tables, plots and folders: a run folder's name, a model id's last part, or the baseline;
    `[fast]` added in fast mode, so both modes of one model can share a table, and `@t` for a threshold other than
    0.5 (a served one), so a table says where each model was cut."""
    name = Path(model.rstrip("/")).name or model
    cut = f" @{threshold:.3g}" if threshold is not None and threshold != DEFAULT_THRESHOLD else ""
    return f"{name} [fast]{cut}" if mode == "fast" else f"{name}{cut}"


def identity_of(config: EvalConfig, dataset: Dataset) -> dict:
    """What must match for a folder to be resumed: the IDENTITY settings, the data file, the model's fingerprint,
    for generating models the generation settings, in fast mode the mode and threshold, in reasoning mode a threshold
    other than `written` (a reasoning identity has no `mode`, so older written-answer folders still resume)."""
    identity = config.model_dump(mode="json", include=set(IDENTITY))  # serialised: endpoint URLs lose their secrets
    identity["data"] = str(dataset.path.resolve())
    identity["fingerprint"] = model_fingerprint(config, dataset.path)
    baseline = config.model in BASELINES and not config.endpoint
    identity["generation"] = None if baseline else asdict(_generation(config))
    if config.mode == "fast":
        identity.update(mode=config.mode, threshold=config.threshold)
    elif config.threshold != WRITTEN and not baseline and not config.endpoint:
        identity.update(threshold=config.threshold)
    return identity


def model_fingerprint(config: EvalConfig, data: Path) -> dict | None:
    """Hashes of what the predictions depend on beyond the config: a baseline's train split; a local model's weight
    files and the run manifests that set its prompt (a model retrained at the same path gets a new fingerprint).
    None for an endpoint or a hub id that is not on disk."""
    if config.endpoint:
        return None
    if config.model in BASELINES:
        if config.model == KEYWORD and config.keyword_min_hits is not None:
            return None
        return {"train_sha256": file_sha256(train_split_for(data, config.train))}
    model, run = locate_model(config.model)
    run = run or read_run(model)
    folder = run.model_path if run and model == config.model else Path(resolve_model(model))
    if not folder.is_dir():
        return None
    found = {"weights_sha256": folder_sha256(folder)}
    prompt_from = read_run(config.prompt_from) if config.prompt_from else None
    for name, source in {"run": run, "prompt_from": prompt_from}.items():
        if source:
            found[f"{name}_manifest_sha256"] = file_sha256(source.source)
    return found


def folder_sha256(folder: Path) -> str:
    """One hash over every file under `folder` (relative names and contents), in a fixed order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\0".encode())
    return digest.hexdigest()


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
    found = {
        "python": platform.python_version(),
        **versions(("torch", "transformers", "scikit-learn", "grpo-moderation")),
    }
    return {"config": config, "git_commit": git_commit(), "versions": found, **extra}
