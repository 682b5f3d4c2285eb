"""Serve a moderator over HTTP, or moderate a JSONL file.

python -m serve --model runs/my-run [--policy marketplace] [--host 127.0.0.1 --port 8000] [--mode reasoning]
python -m serve --model runs/my-run --max-batch-size 1        # one request at a time (no dynamic batching)
python -m serve --model runs/my-run --api-key-env MODERATION_API_KEY --client-modes reasoning fast
python -m serve --model runs/my-run --engine ct2 [--compute-type float32|int8_float32|int8]   # CTranslate2 on CPU
python -m serve --model runs/my-run --mode fast --threshold 0.7   # fast mode's flag threshold (default: 5% FPR on dev)
python -m serve --model runs/my-run --mode fast --compute-type bfloat16 --compile   # torch.compile at startup
python -m serve predict --model runs/my-run --in listings.jsonl --out verdicts.jsonl [--engine ct2]

Options are ServeConfig fields (`--field value` or `field=value`, or a `--config FILE.yaml` of them); see --help.
"""

from __future__ import annotations

import logging
import sys

from inference.compute_types import engine_label
from moderation.config import parse_command_line
from moderation.errors import cli_main
from serve.app import ServeConfig, create_app
from serve.engine import load_engine
from serve.validation import check_modes


@cli_main
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["predict"]:
        from serve.predict import main as predict

        return predict(argv[1:])
    _, config = parse_command_line(ServeConfig, argv, prog="python -m serve", description=__doc__.split("\n\n")[0])

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_modes(config.model, config.modes, config.allow_unvalidated_fast, config.eval_dir)  # before the slow load
    config.api_key()
    engine = load_engine(config)
    app = create_app(engine, config)
    on_record = app.state.measured
    print(on_record.describe() if on_record else f"no dev eval on record for {config.mode} mode of {config.model}")
    engine_name = engine_label(config.engine, config.compute_type, config.compile)
    if "fast" in config.modes:
        threshold = app.state.threshold
        print(f"fast mode flags at P(DISALLOW) >= {threshold.value:.3f}: {threshold.source}")
    print(
        f"serving {config.served_name} ({config.mode} mode, {engine_name}) on http://{config.host}:{config.port}",
        flush=True,
    )
    graceful = config.graceful_shutdown_s
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=graceful)


if __name__ == "__main__":
    main()
