"""The serve CLIs as processes: one-line startup failure, graceful shutdown, and the batch predict command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from moderation.ids import text_id
from serve.predict import main as predict

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bad_model_fails_at_startup_with_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "serve", "--model", str(tmp_path / "missing"), "--port", "0"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: cannot load") and len(done.stderr.strip().splitlines()) == 1


def test_sigterm_finishes_in_flight_requests_then_exits(tiny_model_dir):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "serve",
        "--model",
        str(tiny_model_dir),
        "--port",
        str(port),
        "--max-new-tokens",
        "8",
    ]
    server = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with ThreadPoolExecutor(8) as pool:
            texts = [[f"listing {i}"] * 4 for i in range(8)]
            pending = [pool.submit(httpx.post, f"{url}/v1/moderations", json={"input": t}, timeout=60) for t in texts]
            while httpx.get(f"{url}/health").json()["submitted"] < 32 and time.monotonic() < deadline:
                time.sleep(0.01)  # SIGTERM only once every request is in (a refused connection is not a lost one)
            server.send_signal(signal.SIGTERM)
            responses = [future.result() for future in pending]
        assert [r.status_code for r in responses] == [200] * 8
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it is done
        output = server.stdout.read()
        assert "shut down cleanly: 32 listings" in output and "Traceback" not in output
        assert "no dev eval on record for reasoning mode" in output  # startup says what the default mode is worth
    finally:
        if server.poll() is None:
            server.kill()


def test_predict_skips_bad_rows_and_resumes(tmp_path, tiny_model_dir, capsys):
    listings = tmp_path / "listings.jsonl"
    out = tmp_path / "verdicts.jsonl"
    rows = [{"id": "a", "text": "Premium IPTV"}, "not json", {"text": ""}, {"id": "a", "text": "dup"}, {"text": "Art"}]
    listings.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n" + '{"id": 7\n')
    argv = [
        "--model",
        str(tiny_model_dir),
        "--in",
        str(listings),
        "--out",
        str(out),
        "--max-batch-size",
        "2",
        "--max-new-tokens",
        "6",
    ]

    predict(argv)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["a", text_id("Art")]
    assert set(lines[0]) == {"id", "flagged", "categories", "category_scores", "reasoning", "status", "parsed"}
    err = capsys.readouterr().err
    expected = [(2, "not JSON"), (3, "no non-empty string 'text'"), (4, "duplicate id 'a'"), (6, "not JSON")]
    for number, reason in expected:
        assert f"listings.jsonl:{number}: skipped: {reason}" in err

    out.write_text(out.read_text() + '{"id": "torn')  # a crash mid-write
    listings.write_text(listings.read_text() + json.dumps({"id": "b", "text": "Knitting pattern"}) + "\n")
    predict(argv)
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", text_id("Art"), "b"]
    assert "wrote 1 verdicts" in capsys.readouterr().out
