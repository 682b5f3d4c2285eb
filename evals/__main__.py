"""Evaluate moderators: `run` one model on one dataset, `robustness`, `compare` finished runs, `suite` of both.

    python -m evals run --model smollm2-135m --data dev --out /tmp/e
    python -m evals run --model keyword --data my.jsonl --train data/default/train.parquet --out /tmp/k
    python -m evals run --model tfidf --data test --out /tmp/t
    python -m evals robustness --model runs/cpu-smollm2 --data dev --limit 40 --out /tmp/r
    python -m evals compare /tmp/k /tmp/e --out /tmp/compare
    python -m evals recut runs/x/eval/pooled/sft-fast runs/x/eval/pooled/x-fast --threshold served --out /tmp/served
    python -m evals suite --data dev test --out runs/evals   # keyword, tfidf, base, SFT, SFT+GRPO
    python -m evals run --model runs/cpu-smollm2 --mode fast --data dev --out /tmp/f   # serve's one-pass fast mode
    python -m evals suite --modes reasoning fast --data dev --out runs/evals   # each local model in both modes

`run`, `robustness` and `suite` take `--config FILE.yaml` (keys are their config's fields) and values that override it,
as `--field value` or `field=value` (see `python -m evals run --help`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from evals import judge
from evals.runner import EvalConfig, FastCut, Mode
from evals.suite import DEFAULT_SUITE
from moderation.config import ConfigFile, parse_command_line, pick_command
from moderation.errors import cli_main

PROG = "python -m evals"
COMMANDS = {
    "run": "evaluate one model on one dataset",
    "robustness": "accuracy and attack success rate under transforms",
    "suite": "several models on several datasets, compared per dataset",
    "compare": "put finished evaluation folders side by side",
    "recut": "fast-mode evaluations again at another threshold (served: each model's own), without scoring again",
    "judge": "rate each prediction's reasoning with an LLM judge",
}
# Every EvalConfig field but what each run of a suite varies (model, data, out, mode) is a setting of the whole suite.
SUITE_SETTINGS = [name for name in EvalConfig.model_fields if name not in ("model", "data", "out", "mode")]


class RobustnessOptions(ConfigFile):
    long_chars: int = Field(1500, ge=1, description="length of the long benign listing")


SuiteConfig = create_model(
    "SuiteConfig",
    __config__=ConfigDict(extra="forbid"),
    __doc__="`python -m evals suite`: models x datasets (x modes), each an EvalConfig with these settings.",
    models=(list[str], Field(list(DEFAULT_SUITE), min_length=1, description="models, run folders, keyword or tfidf")),
    data=(list[str], Field(min_length=1, description="split names or files")),
    out=(Path, Field(description="output folder: <out>/<data>/<model>/ and <out>/<data>/compare.md")),
    modes=(list[Mode], Field(["reasoning"], min_length=1, description="local models: each mode is its own row")),
    fast_only=(
        list[str],
        Field([], description="models scored in fast mode only, whatever modes says (an untrained base model)"),
    ),
    **{name: (EvalConfig.model_fields[name].annotation, EvalConfig.model_fields[name]) for name in SUITE_SETTINGS},
)


class JudgeCommand(judge.JudgeConfig):
    """`python -m evals judge`: one finished evaluation, or the human-rated calibration set, rated by an LLM judge."""

    run: Path | None = Field(None, description="evaluation folder whose predictions.jsonl to judge")
    calibrate: bool = Field(False, description="instead, score human-rated outputs and report agreement with them")
    calibration: Path = Field(judge.CALIBRATION, description="the human-rated outputs --calibrate scores")

    @model_validator(mode="after")
    def _one_target(self) -> JudgeCommand:
        if (self.run is not None) == self.calibrate:
            raise ValueError("give either --run EVAL_DIR or --calibrate")
        return self


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dirs: list[Path] = Field(min_length=1, description="finished evaluation folders (positional)")
    out: Path = Field(description="output folder of compare.md")


class RecutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dirs: list[Path] = Field(min_length=1, description="finished fast-mode evaluation folders (positional)")
    threshold: FastCut = Field(
        description="flag at P(disallow) >= this; `served`: each model's serving threshold from its held-back slice"
    )
    out: Path = Field(description="output folder: <out>/<folder name>/ and <out>/compare.md")


def show_written(path: Path) -> None:
    """Print a written compare.md, then where it is."""
    print(path.read_text(encoding="utf-8"))
    print(f"wrote {path}")


@cli_main
def main(argv: list[str] | None = None) -> None:
    command, argv = pick_command(
        sys.argv[1:] if argv is None else argv, COMMANDS, prog=PROG, description=__doc__.split("\n\n")[0]
    )
    prog, description = f"{PROG} {command}", COMMANDS[command]
    if command == "judge":
        _, given = parse_command_line(JudgeCommand, argv, prog=prog, description=judge.__doc__.split("\n\n")[0])
        config = judge.JudgeConfig(**{name: getattr(given, name) for name in judge.JudgeConfig.model_fields})
        if given.calibrate:
            print(judge.calibration_table(judge.calibrate(config, given.calibration)))
            return
        metrics = judge.judge_run(given.run, config)
        print(judge.judge_section(metrics).split("\n", 2)[2].rsplit("\n", 2)[0])
        written = ", ".join(str(given.run / name) for name in (judge.JUDGE, judge.JUDGE_METRICS, judge.JUDGE_PLOT))
        print(f"wrote {written} and the report section")
    elif command == "compare":
        from evals.report import compare

        _, config = parse_command_line(CompareConfig, argv, prog=prog, description=description, positional="dirs")
        show_written(compare(config.dirs, config.out))
    elif command == "recut":
        from evals.recut import recut

        _, config = parse_command_line(RecutConfig, argv, prog=prog, description=description, positional="dirs")
        show_written(recut(config.dirs, config.threshold, config.out))
    elif command == "suite":
        from evals.suite import run_suite

        _, config = parse_command_line(SuiteConfig, argv, prog=prog, description=description)
        # The settings given (run_suite's defaults stand for the rest), as values: a dump would redact the endpoint.
        settings = {name: getattr(config, name) for name in config.model_fields_set if name in SUITE_SETTINGS}
        for path in run_suite(
            config.models, config.data, config.out, modes=config.modes, fast_only=config.fast_only, **settings
        ):
            print(path.read_text(encoding="utf-8"))
            print(f"report: {path}")
    elif command == "robustness":
        from evals.robustness import run_robustness

        options, config = parse_command_line(
            EvalConfig, argv, prog=prog, description=description, options=RobustnessOptions
        )
        results = run_robustness(config, options.long_chars)
        print(Path(config.out, "robustness.md").read_text(encoding="utf-8"))
        print(f"{sum(v['n'] for v in results.values())} items; wrote {config.out}/robustness.md")
    else:
        from evals.report import headline_table, score_lines
        from evals.runner import run_eval

        _, config = parse_command_line(EvalConfig, argv, prog=prog, description=description)
        metrics = run_eval(config)
        print(headline_table([metrics]))
        for line in score_lines(metrics):
            print(line)
        skipped = sum(metrics["skipped_rows"].values())
        print(f"{metrics['n']} items scored, {skipped} bad rows skipped; report: {Path(config.out) / 'report.md'}")


if __name__ == "__main__":
    main()
