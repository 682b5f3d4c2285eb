"""benchmarks/eval_throughput.py as `make eval` uses it: the agreement gate passes, or stops with one error line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_throughput.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_the_agreement_gate_passes_bf16_and_stops_short_of_an_impossible_share(tiny_model_dir, tiny_dataset_dir):
    common = ["--model", str(tiny_model_dir), "--data", str(tiny_dataset_dir / "train.parquet"), "--limit", "4"]
    common += ["--mode", "fast", "--compute-types", "bfloat16"]
    passed = run(*common, "--min-agreement", "0")
    assert passed.returncode == 0, passed.stderr
    assert "ours transformers bfloat16:" in passed.stdout and "agrees with fp32 on at least 0%" in passed.stdout
    stopped = run(*common, "--min-agreement", "1.01")
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1].startswith("error: agreement with fp32 below 101%: transformers bf")


def test_a_compute_type_the_engine_lacks_is_refused_before_anything_loads():
    refused = run("--engine", "vllm", "--compute-types", "int8")
    assert refused.returncode == 2 and "takes --compute-types from bfloat16, float16, float32" in refused.stderr
