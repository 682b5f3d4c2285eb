"""Serve a moderator over HTTP, or moderate a JSONL file.

python -m serve --model runs/my-run [--policy marketplace] [--host 127.0.0.1 --port 8000] [--mode reasoning]
python -m serve --model runs/my-run --max-batch-size 1        # one request at a time (no dynamic batching)
python -m serve --model runs/my-run --api-key-env MODERATION_API_KEY --client-modes reasoning fast
python -m serve predict --model runs/my-run --in listings.jsonl --out verdicts.jsonl
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import get_args

from moderation.errors import cli_main
from serve.app import ServeConfig, create_app
from serve.engine import load_engine
from serve.validation import check_modes


def config_parser(prog: str, model: type, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one `--flag` per field of a pydantic config, help text and defaults from the model."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for name, info in model.model_fields.items():
        flag = "--" + (info.alias or name).replace("_", "-")
        if info.annotation is bool:
            parser.add_argument(flag, dest=name, action="store_true", help=info.description)
            continue
        choices = _literal_choices(info.annotation)
        kind = info.annotation if info.annotation in (int, float) else str
        many = "+" if str(info.annotation).startswith("list[") else None
        parser.add_argument(
            flag, dest=name, type=kind, choices=choices, nargs=many, default=info.default, help=info.description
        )
    return parser


def _literal_choices(annotation) -> tuple | None:
    """The values of a Literal field, also inside `list[...]` or `... | None`."""
    for part in (annotation, *get_args(annotation)):
        for inner in (part, *get_args(part)):
            if "Literal" in str(inner) and get_args(inner) and all(isinstance(a, str) for a in get_args(inner)):
                return get_args(inner)
    return None


@cli_main
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["predict"]:
        from serve.predict import main as predict

        return predict(argv[1:])
    args = config_parser("python -m serve", ServeConfig, __doc__.split("\n\n")[0]).parse_args(argv)
    config = ServeConfig(**vars(args))

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_modes(config.model, config.modes, config.allow_unvalidated_fast, config.eval_dir)  # before the slow load
    config.api_key()
    engine = load_engine(config)
    app = create_app(engine, config)
    on_record = app.state.measured
    print(on_record.describe() if on_record else f"no dev eval on record for {config.mode} mode of {config.model}")
    print(f"serving {config.served_name} ({config.mode} mode) on http://{config.host}:{config.port}", flush=True)
    graceful = config.graceful_shutdown_s
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=graceful)


if __name__ == "__main__":
    main()
