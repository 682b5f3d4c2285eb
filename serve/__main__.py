"""Serve a moderator over HTTP, or moderate a JSONL file.

python -m serve --model smollm2-135m [--policy marketplace] [--host 127.0.0.1 --port 8000] [--mode fast]
python -m serve --model runs/my-run --max-batch-size 1        # one request at a time (no dynamic batching)
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


def config_parser(prog: str, model: type, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one `--flag` per field of a pydantic config, help text and defaults from the model."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for name, info in model.model_fields.items():
        flag = "--" + (info.alias or name).replace("_", "-")
        choices = get_args(info.annotation) or None if "Literal" in str(info.annotation) else None
        kind = info.annotation if info.annotation in (int, float) else str
        parser.add_argument(flag, dest=name, type=kind, choices=choices, default=info.default, help=info.description)
    return parser


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
    engine = load_engine(config)
    app = create_app(engine, config)
    print(f"serving {config.served_name} ({config.mode} mode) on http://{config.host}:{config.port}", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
