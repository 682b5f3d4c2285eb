"""Evaluate moderators: `run` one model on one dataset, `robustness`, `compare` finished runs, `suite` of both.

    python -m evals run --model smollm2-135m --data dev --out /tmp/e
    python -m evals run --model keyword --data my.jsonl --train data/default/train.parquet --out /tmp/k
    python -m evals run --model tfidf --data test --out /tmp/t
    python -m evals robustness --model runs/cpu-smollm2 --data dev --limit 40 --out /tmp/r
    python -m evals compare /tmp/k /tmp/e --out /tmp/compare
    python -m evals suite --data dev test --out runs/evals   # keyword, tfidf, base, SFT, SFT+GRPO
    python -m evals run --model runs/cpu-smollm2 --mode fast --data dev --out /tmp/f   # serve's one-pass fast mode
    python -m evals suite --modes reasoning fast --data dev --out runs/evals   # each local model in both modes

`run` and `robustness` take `--config FILE.yaml` (keys are EvalConfig fields) and flags that override it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from evals import judge
from evals.runner import EvalConfig
from evals.suite import DEFAULT_SUITE
from moderation.config import read_config_file
from moderation.errors import UserError, cli_main


def _help(description: str | None) -> str:
    """A field description as argparse help, which treats `%` as a format directive."""
    return (description or "").replace("%", "%%")


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file of EvalConfig fields; flags override it")
    for name, field in EvalConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, action="store_true", default=None, help=_help(field.description))
        else:
            parser.add_argument(flag, default=None, help=_help(field.description))


def _config(args: argparse.Namespace) -> EvalConfig:
    values = read_config_file(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k in EvalConfig.model_fields and v is not None})
    try:
        return EvalConfig.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"--{'-'.join(map(str, first['loc'])).replace('_', '-')}: {first['msg']}") from None


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evals", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_eval_options(commands.add_parser("run", help="evaluate one model on one dataset"))
    robustness = commands.add_parser("robustness", help="accuracy and attack success rate under transforms")
    _add_eval_options(robustness)
    robustness.add_argument("--long-chars", type=int, default=1500, help="length of the long benign listing")
    suite = commands.add_parser("suite", help="several models on several datasets, compared per dataset")
    suite.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_SUITE),
        help=f"models, run folders, 'keyword' or 'tfidf' (default: {' '.join(DEFAULT_SUITE)})",
    )
    suite.add_argument("--data", nargs="+", required=True, help="split names or files")
    suite.add_argument("--out", type=Path, required=True)
    suite.add_argument("--limit", type=int, help="evaluate only the first N rows of each dataset")
    suite.add_argument("--policy", help="policy for every model (default: each run's own, else marketplace)")
    suite.add_argument("--engine", default="transformers", help="engine for local models: transformers, ct2, vllm")
    suite.add_argument(
        "--compute-type", default="int8", help="ct2: int8, int8_float32 or float32; transformers: bfloat16 (else fp32)"
    )
    suite.add_argument(
        "--modes",
        nargs="+",
        default=["reasoning"],
        choices=["reasoning", "fast"],
        help="local models: each mode is its own row (baselines run once)",
    )
    suite.add_argument(
        "--fast-only",
        nargs="+",
        default=[],
        help="models scored in fast mode only, whatever --modes says (an untrained base model, whose reasoning does "
        "not parse)",
    )
    comparison = commands.add_parser("compare", help="put finished evaluation folders side by side")
    comparison.add_argument("dirs", nargs="+", type=Path)
    comparison.add_argument("--out", type=Path, required=True)
    judge.add_arguments(commands.add_parser("judge", help="rate each prediction's reasoning with an LLM judge"))
    args = parser.parse_args(argv)

    if args.command == "judge":
        judge.run_command(args)
    elif args.command == "compare":
        from evals.report import compare

        path = compare(args.dirs, args.out)
        print(path.read_text(encoding="utf-8"))
        print(f"wrote {path}")
    elif args.command == "suite":
        from evals.suite import run_suite

        for path in run_suite(
            args.models,
            args.data,
            args.out,
            limit=args.limit,
            policy=args.policy,
            modes=args.modes,
            fast_only=args.fast_only,
            engine=args.engine,
            compute_type=args.compute_type,
        ):
            print(path.read_text(encoding="utf-8"))
            print(f"report: {path}")
    elif args.command == "robustness":
        from evals.robustness import run_robustness

        config = _config(args)
        results = run_robustness(config, args.long_chars)
        print(Path(config.out, "robustness.md").read_text(encoding="utf-8"))
        print(f"{sum(v['n'] for v in results.values())} items; wrote {config.out}/robustness.md")
    else:
        from evals.report import headline_table, score_lines
        from evals.runner import run_eval

        config = _config(args)
        metrics = run_eval(config)
        print(headline_table([metrics]))
        for line in score_lines(metrics):
            print(line)
        skipped = sum(metrics["skipped_rows"].values())
        print(f"{metrics['n']} items scored, {skipped} bad rows skipped; report: {Path(config.out) / 'report.md'}")


if __name__ == "__main__":
    main()
