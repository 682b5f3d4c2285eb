"""Several models on several datasets, then one comparison per dataset: what `make demo` ends with.

    python -m evals suite --data dev test --out runs/evals   # the DEFAULT_SUITE models
    python -m evals suite --models keyword tfidf runs/other --data dev --out runs/evals-other
    python -m evals suite --modes reasoning fast --data dev --out runs/evals   # each local model in both modes
    python -m evals suite --modes reasoning fast --fast-only smollm2-135m --data dev --out runs/evals

Writes <out>/<data>/<model>/ (a full evaluation each, resumable; <model>-fast/ in fast mode) and
<out>/<data>/compare.md side by side. A model's modes are adjacent rows, so the paired differences compare them.
With several datasets, <out>/pooled/ holds every model's runs pooled into one (evals.pooled) and their comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evals.pooled import pool_runs
from evals.report import compare
from evals.runner import BASELINES, EvalConfig, Mode, label_for, run_eval
from inference.runs import MANIFEST
from moderation.paths import REPO_ROOT

# Both baselines, the base model, the CPU recipe's SFT stage and its SFT+GRPO result (`make train`'s run).
DEFAULT_SUITE = ("keyword", "tfidf", "smollm2-135m", "runs/cpu-smollm2/sft", "runs/cpu-smollm2")
POOLED = "pooled"  # <out>/pooled/: every dataset of the suite as one
# Hand-written listings from outside the generated data (text, label, categories): a quick, fixed smoke set.
FIXTURE_LISTINGS = REPO_ROOT / "tests" / "fixtures" / "evals" / "outside_listings.jsonl"


def run_suite(
    models: Sequence[str],
    datasets: Sequence[str],
    out: str | Path,
    modes: Sequence[Mode] = ("reasoning",),
    fast_only: Sequence[str] = (),
    **settings,
) -> list[Path]:
    """Evaluate every model on every dataset, local models in each of `modes`; return each dataset's compare.md path,
    then, with several datasets, the pooled one's.

    Unless `prompt_from` says otherwise, when exactly one model is a run folder, every model gets that run's policy and
    prompt settings, so the base model is judged on the prompt the trained one learned.
    """
    runs = [m for m in models if is_run(m)]
    settings.setdefault("prompt_from", runs[0] if len(runs) == 1 else None)
    if settings["prompt_from"]:
        print(f"policy and prompt settings for every model: {settings['prompt_from']}")
    pairs = runs_of(models, modes, fast_only)
    names = [label_for(model) + ("-fast" if mode == "fast" else "") for model, mode in pairs]
    reports = []
    for data in datasets:
        folder = Path(out) / Path(data).stem
        for name, (model, mode) in zip(names, pairs, strict=True):
            config = EvalConfig(model=model, data=data, out=str(folder / name), mode=mode, **settings)
            run_eval(config)
        reports.append(compare([folder / name for name in names], folder))
    if len(datasets) > 1:
        pooled = Path(out) / POOLED
        for name in names:  # the suite's settings (bootstrap, seed, target FPR) are every run's: the last config's
            runs = [Path(out) / Path(data).stem / name for data in datasets]
            pool_runs(runs, pooled / name, config.n_bootstrap, config.seed, config.target_fpr)
        reports.append(compare([pooled / name for name in names], pooled))
    return reports


def runs_of(models: Sequence[str], modes: Sequence[Mode], fast_only: Sequence[str] = ()) -> list[tuple[str, Mode]]:
    """(model, mode) pairs in table order: a baseline once (it has no fast mode), a `fast_only` model in fast mode
    (an untrained model's reasoning does not parse: generating it costs minutes and says nothing), any other local
    model once per mode."""
    modes = list(dict.fromkeys(modes))
    baselines = [m for m in models if m in BASELINES]
    if "fast" in modes and baselines:
        print(f"{', '.join(baselines)}: no fast mode; run once (mode reasoning)")

    def modes_of(model: str) -> list[Mode]:
        return ["reasoning"] if model in BASELINES else ["fast"] if model in fast_only else modes

    return [(m, mode) for m in models for mode in modes_of(m)]


def is_run(model: str) -> bool:
    return (Path(model) / MANIFEST).is_file()
