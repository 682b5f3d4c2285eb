"""Fault run of `python -m serve` on 127.0.0.1: stalled and abandoned bodies, deeply nested JSON, then SIGTERM mid-load.

    python benchmarks/fault_run.py                                   # smollm2-135m, reasoning mode, ~2-4 min on 2 cores
    python benchmarks/fault_run.py --model runs/my-run --clients 50

Checks what a client sees and what the server logs: every answer is a JSON body (never plain text, never a trace),
stalled bodies are dropped after `--body-timeout-s` with 408, abandoned ones and nested JSON leave the server healthy
(the next keep-alive request on the same connection is answered), and a SIGTERM with requests in flight answers every
one of them before the process exits. Bounded in count and time; loopback only. Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import httpx
from load_test import start_server

from moderation.errors import UserError, cli_main
from moderation.paths import REPO_ROOT

LISTINGS = ["Premium IPTV 12 months, 18,000 channels", "Lightroom preset pack", "Fixed-match betting tips, VIP"]


def partial_request(url: str, body: bytes, declared: int) -> socket.socket:
    """Open a connection and send the head plus part of a body (`declared` bytes announced)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = f"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}"
    sock.sendall(head.encode() + b"\r\n\r\n" + body)
    return sock


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed the connection within `limit_s`."""
    sock.settimeout(0.5)
    received, deadline = b"", time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            return received, True
        received += chunk
    return received, False


def is_json_error(raw: bytes, status: int, code: str) -> bool:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.startswith(f"HTTP/1.1 {status}".encode()) and b"application/json" in head and code.encode() in body


def check(name: str, ok: bool, detail: str, failures: list[str]) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def stalled_bodies(url: str, clients: int, body_timeout_s: float, failures: list[str]) -> None:
    started = time.monotonic()
    socks = [partial_request(url, b'{"input": "half a listi', 200) for _ in range(clients)]
    healthy = httpx.get(f"{url}/health", timeout=10).status_code == 200  # while they stall
    answers = [read_until_closed(sock, body_timeout_s + 15) for sock in socks]
    for sock in socks:
        sock.close()
    dropped = sum(closed and is_json_error(raw, 408, "body_timeout") for raw, closed in answers)
    took = time.monotonic() - started
    detail = f"{dropped}/{clients} answered 408 JSON and closed in {took:.1f}s; /health during the stall: {healthy}"
    check("partial bodies, client silent", dropped == clients and healthy, detail, failures)


def abandoned_bodies(url: str, clients: int, failures: list[str]) -> None:
    for _ in range(clients):
        partial_request(url, b'{"input": ', 200).close()
    time.sleep(1.0)
    ok = httpx.get(f"{url}/health", timeout=10).status_code == 200
    check("partial bodies, client gone", ok, f"{clients} clients disconnected mid-body; /health 200: {ok}", failures)


def nested_json(url: str, requests: int, failures: list[str]) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with httpx.Client(base_url=url, timeout=120) as client:  # one keep-alive connection throughout
        codes = []
        for _ in range(requests):
            response = client.post("/v1/moderations", content=deep, headers={"content-type": "application/json"})
            json_body = response.headers.get("content-type", "").startswith("application/json")
            codes.append((response.status_code, response.json()["error"]["code"] if json_body else response.text[:40]))
        after = client.post("/v1/moderations", json={"input": LISTINGS[1]})
    refused = sum(code == (400, "json_too_deep") for code in codes)
    detail = (
        f"{refused}/{requests} answered 400 json_too_deep; next request on the same connection: {after.status_code}"
    )
    check("100k-deep nested JSON", refused == requests and after.status_code == 200, detail, failures)


async def in_flight(url: str, count: int) -> list[httpx.Response | Exception]:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        requests = [client.post("/v1/moderations", json={"input": LISTINGS[i % 3]}) for i in range(count)]
        return await asyncio.gather(*requests, return_exceptions=True)


def sigterm_mid_load(process, url: str, count: int, failures: list[str]) -> None:
    count_from = httpx.get(f"{url}/health", timeout=10).json()["submitted"]
    started = time.monotonic()

    async def wait_all():
        task = asyncio.create_task(in_flight(url, count))
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            while (await client.get("/health")).json()["submitted"] - count_from < count:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        return await task, signalled

    responses, signalled = asyncio.run(wait_all())
    code = process.wait(timeout=600)
    answered = [r for r in responses if isinstance(r, httpx.Response)]
    json_only = all(r.headers.get("content-type", "").startswith("application/json") for r in answered)
    ok_count = sum(r.status_code == 200 for r in answered)
    others = Counter(f"{r.status_code} {r.text[:60]}" for r in answered if r.status_code != 200)
    detail = (
        f"{ok_count}/{count} in-flight requests answered 200 JSON after SIGTERM "
        f"(drained in {time.monotonic() - signalled:.1f}s, all JSON: {json_only}, "
        f"transport errors: {count - len(answered)}); exit code {code} after {time.monotonic() - started:.1f}s"
    ) + "".join(f"; {n}x {what}" for what, n in others.items())
    # A request may outlive --request-timeout-s on a slow CPU: its own 503 "timeout" JSON is an answer, not a cut-off.
    timed_out = sum(r.status_code == 503 and '"timeout"' in r.text for r in answered)
    drained = len(answered) == count and ok_count + timed_out == count and json_only
    check("SIGTERM mid-load", drained and code in (0, -signal.SIGTERM), detail, failures)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="HF id, local folder, embedded name or run folder")
    parser.add_argument("--mode", default="reasoning", choices=["fast", "reasoning"])
    parser.add_argument("--max-new-tokens", type=int, default=24, help="reasoning mode: keeps the run short on CPU")
    parser.add_argument("--clients", type=int, default=20, help="stalled and abandoned clients each")
    parser.add_argument("--nested", type=int, default=5, help="100k-deep JSON requests")
    parser.add_argument("--in-flight", type=int, default=12, help="requests in flight when SIGTERM arrives")
    parser.add_argument("--body-timeout-s", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "fault_run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "server.log"
    arguments = ["--model", args.model, "--mode", args.mode, "--max-new-tokens", str(args.max_new_tokens)]
    limit = args.clients + args.in_flight + 8  # room for every fault client plus the load: no 429 in this run
    arguments += ["--body-timeout-s", str(args.body_timeout_s), "--max-concurrent-requests", str(limit)]
    arguments += ["--allow-unvalidated-fast"] if args.mode == "fast" else []
    print(f"starting python -m serve {' '.join(arguments)} (log: {log})", flush=True)
    process, url = start_server(arguments, log)
    failures: list[str] = []
    try:
        stalled_bodies(url, args.clients, args.body_timeout_s, failures)
        abandoned_bodies(url, args.clients, failures)
        nested_json(url, args.nested, failures)
        health = httpx.get(f"{url}/health", timeout=10).json()
        check("healthy after the faults", health["status"] == "ok", f"/health {health}", failures)
        sigterm_mid_load(process, url, args.in_flight, failures)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text(encoding="utf-8", errors="replace")
    dropped = text.count("body incomplete")
    gone = text.count("disconnected while sending")
    detail = f"{text.count('Traceback')} tracebacks; {dropped} 'body incomplete' and {gone} 'disconnected' lines"
    check("server log", "Traceback" not in text and "shut down cleanly" in text, detail, failures)
    if failures:
        raise UserError(f"fault run: {len(failures)} check(s) failed: {', '.join(failures)}; see {log}")
    print("fault run: all checks passed; the server answered JSON only, drained in-flight requests and stayed healthy")


if __name__ == "__main__":
    main()
