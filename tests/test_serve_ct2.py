"""`serve --engine ct2`: the same API on CTranslate2 (both modes, chat, predict), and fast mode's flag threshold (the
server's default from a fast-mode dev eval, and a per-request `threshold`).

float32 CT2 reproduces the transformers path on the tiny model (tests/test_ct2.py), so the answers here are compared
with the transformers engine's own, not with fixed numbers.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from test_serve import OpenAIResponse, running
from test_serve_process import ENV

from inference.generate import GenerationConfig
from inference.runs import load_moderator
from serve.app import ServeConfig, create_app
from serve.chat import complete
from serve.engine import Engine, load_engine
from serve.predict import main as predict
from serve.validation import DEFAULT_THRESHOLD, serving_threshold

TEXTS = ["Premium IPTV 12 months, 18,000 channels", "Poker night art print", "Fixed-match betting tips, VIP"]
SETTINGS = {
    "engine": "ct2",
    "compute_type": "float32",
    "model_name": "tiny",
    "mode": "fast",
    "client_modes": ["fast", "reasoning"],
    "allow_unvalidated_fast": True,
    "max_new_tokens": 6,
    "max_batch_size": 8,
}


@pytest.fixture(scope="module")
def config(tiny_model_dir):
    return ServeConfig(model=str(tiny_model_dir), **SETTINGS)


@pytest.fixture(scope="module")
def url(config):
    with running(create_app(load_engine(config), config)) as base:
        yield base


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The transformers engine on the same model and generation settings."""
    return Engine(load_moderator(tiny_model_dir, generation=GenerationConfig(max_new_tokens=6, batch_size=8)))


def moderate(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/moderations", json=body, timeout=60)


def test_health_reports_the_engine_and_threshold(url):
    health = httpx.get(f"{url}/health").json()
    assert (health["engine"], health["compute_type"]) == ("ct2", "float32")
    assert health["threshold"] == DEFAULT_THRESHOLD and health["threshold_from"].startswith("default")


@pytest.mark.parametrize("mode", ["fast", "reasoning"])
def test_both_modes_answer_as_the_transformers_engine_does(url, reference, mode):
    response = moderate(url, {"input": TEXTS, "mode": mode})
    assert response.status_code == 200, response.text
    results = OpenAIResponse.model_validate_json(response.text).results
    body = response.json()["results"]
    expected = reference.run(TEXTS, mode)
    for got, raw, want in zip(results, body, expected, strict=True):
        assert got.flagged == want.flagged and got.categories == want.categories
        assert got.category_scores == pytest.approx(want.category_scores, abs=1e-4)
        assert (raw["reasoning"], raw["status"]) == (want.reasoning, want.status)


def test_request_threshold_flips_the_verdict(url):
    async def both():  # concurrent, so the two thresholds can share one model call
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            bodies = [{"input": TEXTS, "threshold": t} for t in (0.0, 1.0)]
            return await asyncio.gather(*(client.post("/v1/moderations", json=b) for b in bodies))

    low, high = (r.json()["results"] for r in asyncio.run(both()))
    assert [r["flagged"] for r in low] == [True] * len(TEXTS)
    assert [r["flagged"] for r in high] == [False] * len(TEXTS)
    assert not any(c for r in high for c in r["categories"].values())
    # scores never move with the threshold; when the two requests land in different batches, padding moves the
    # seventh significant digit (seen on a slow 2-core machine), so compare to 1e-5
    for low_result, high_result in zip(low, high, strict=True):
        assert low_result["category_scores"] == pytest.approx(high_result["category_scores"], rel=1e-5)


@pytest.mark.parametrize(
    "body",
    [
        {"input": "x", "threshold": -0.1},
        {"input": "x", "threshold": 1.5},
        {"input": "x", "threshold": "high"},
        '{"input": "x", "threshold": NaN}',
    ],
)
def test_bad_threshold_is_422(url, body):
    if isinstance(body, str):
        response = httpx.post(f"{url}/v1/moderations", content=body, headers={"content-type": "application/json"})
    else:
        response = moderate(url, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "threshold"


def test_chat_completion_runs_on_ct2(url, reference):
    messages = [{"role": "system", "content": "Moderate."}, {"role": "user", "content": "Premium IPTV"}]
    body = {"model": "tiny", "messages": messages, "max_tokens": 5, "temperature": 0}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    want = complete(reference.moderator, messages, 5)
    assert response.json()["choices"][0]["message"]["content"] == want.text
    assert response.json()["usage"]["completion_tokens"] == want.completion_tokens


def test_default_threshold_comes_from_a_fast_mode_dev_eval(tmp_path, tiny_model_dir):
    from evals.runner import EvalConfig, run_eval

    dev = tmp_path / "dev.jsonl"
    rows = [(t, "allow") for t in ("Art print", "Lightroom presets", "Knitting pattern")] + [
        (t, "disallow") for t in ("Premium IPTV", "Fixed-match betting tips")
    ]
    dev.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows))
    evals = tmp_path / "eval"
    # A 50% budget: with 3 allowed rows the top score alone stays within it, so some threshold is always recorded.
    eval_config = EvalConfig(
        model=str(tiny_model_dir), data=str(dev), out=str(evals / "dev" / "fast"), mode="fast", target_fpr=0.5
    )
    scores = run_eval(eval_config.model_copy(update={"n_bootstrap": 0}), report=False)["scores"]
    recorded = scores["threshold_at_fpr"]["0.5"]

    chosen = serving_threshold(str(tiny_model_dir), None, str(evals))
    assert recorded is not None and chosen.value == max(recorded, 0.5) and "50% FPR on dev" in chosen.source
    assert serving_threshold(str(tiny_model_dir), 0.9, str(evals)).value == 0.9  # --threshold wins
    config = ServeConfig(model=str(tiny_model_dir), eval_dir=str(evals), **SETTINGS)
    with running(create_app(load_engine(config), config)) as base:
        assert httpx.get(f"{base}/health").json()["threshold"] == chosen.value


def test_predict_with_ct2_writes_rows(tmp_path, tiny_model_dir, capsys):
    listings, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    listings.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    argv = ["--model", str(tiny_model_dir), "--in", str(listings), "--out", str(out), "--engine", "ct2"]
    predict([*argv, "--compute-type", "float32", "--mode", "fast", "--threshold", "0"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "1", "2"] and all(r["flagged"] for r in rows)
    assert set(rows[0]) == {"id", "flagged", "categories", "category_scores", "reasoning", "status", "parsed"}
    assert "wrote 3 verdicts (3 flagged)" in capsys.readouterr().out


def test_engine_flags_are_checked_at_startup(tiny_model_dir):
    def serve(*flags: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "serve", "--model", str(tiny_model_dir), "--port", "0", *flags]
        return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=120)

    for flags, message in (
        (["--engine", "onnx"], "engine: Input should be"),
        (["--compute-type", "float8"], "compute_type: Input should be"),
        (["--engine", "ct2", "--compute-type", "float16"], "engine ct2 takes --compute-type int8, int8_float32"),
        (["--engine", "vllm", "--compile"], "compile needs the transformers engine"),
    ):
        done = serve(*flags)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    done = serve("--engine", "vllm")  # no CUDA/vllm here: one line, no traceback
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "vllm" in done.stderr
