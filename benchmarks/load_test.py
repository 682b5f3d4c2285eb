"""Load test of `python -m serve` on 127.0.0.1: RPS and latency percentiles per mode, input-length bucket and
concurrency, with dynamic batching (ours) and one request at a time (baseline, `--max-batch-size 1`), in one run.

    python benchmarks/load_test.py                                  # smollm2-135m, transformers, fast + reasoning
    python benchmarks/load_test.py --engine ct2 --compute-type int8 --modes fast --concurrency 16
    python benchmarks/load_test.py --model runs/my-run --modes reasoning --requests 8 --concurrency 1,8
    python benchmarks/load_test.py --model runs/my-run --compute-type bfloat16 --compile --modes fast   # both servers
    python benchmarks/fault_run.py                                  # partial bodies, nested JSON, SIGTERM mid-load

Each server is a real subprocess on a free loopback port serving both modes (each request names its mode); every cell
sends at most `--requests` single-listing requests at a fixed concurrency and stops issuing after `--max-seconds`, so
the run is bounded in count and time. Listings are cut from the sample listings to a token count drawn uniformly
inside the bucket (the prompt keeps at most `max_listing_tokens`, 384 by default, of a longer listing: head and
tail). Prints a table, the baseline / ours / ratio line per mode and bucket at the highest concurrency, the issue's
goals for fast mode (>= 10 RPS with p95 <= 0.5 s for 1-100 tokens, at the concurrency that does best; batching >= 3x
one-at-a-time at the highest concurrency), the engine in every line, and writes results.json and a PNG to `--out`.
Fast mode is served with `--allow-unvalidated-fast`: this measures throughput, not what the mode is worth (see
serve.validation).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from inference.compute_types import engine_label
from inference.models import load_tokenizer
from inference.runs import read_run
from moderation.errors import UserError, cli_main
from moderation.paths import CONFIGS, REPO_ROOT
from moderation.plotting import pyplot

BUCKETS = {"1-100": (1, 100), "100-300": (100, 300), "300-1000": (300, 1000)}
MODES = ("fast", "reasoning")
GOAL_RPS, GOAL_P95_S, GOAL_RATIO = 10.0, 0.5, 3.0  # issue 17, fast mode, 1-100 tokens (the ratio at concurrency 16)
START_TIMEOUT_S = 600  # model load, and with --compile torch.compile's warm-up (1-2 min on 2 cores, more when busy)


@dataclass
class Cell:
    mode: str
    bucket: str
    concurrency: int
    batching: bool
    sent: int
    ok: int
    errors: int
    rps: float
    p50: float
    p95: float
    p99: float
    mean_batch_size: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.sent if self.sent else 0.0


def make_listings(tokenizer, bucket: tuple[int, int], count: int, seed: int) -> list[str]:
    """`count` listings whose token counts are uniform in `bucket`, cut from the shuffled sample listings."""
    samples = [s["text"] for s in yaml.safe_load((CONFIGS / "samples" / "listings.yaml").read_text(encoding="utf-8"))]
    rng = random.Random(seed)
    listings = []
    for _ in range(count):
        rng.shuffle(samples)
        ids: list[int] = []
        target = rng.randint(*bucket)
        while len(ids) < target:
            ids += tokenizer.encode(" ".join(samples) + " ", add_special_tokens=False)
        listings.append(tokenizer.decode(ids[:target]).strip() or "x")
    return listings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(arguments: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """A `python -m serve ARGUMENTS` subprocess on a free loopback port, and its URL once /health answers."""
    port = free_port()
    command = [sys.executable, "-m", "serve", *arguments, "--port", str(port)]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise UserError(f"the server exited with {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            process.kill()
            raise UserError(f"the server did not start in {START_TIMEOUT_S}s; see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)


@contextmanager
def server(model: str, engine: list[str], modes: list[str], max_batch_size: int, log: Path):
    """A `python -m serve` subprocess on a free loopback port serving `modes`; yields its URL once /health answers.
    `engine` is the engine's flags (`--engine ...`, `--threads`, `--max-new-tokens`)."""
    arguments = ["--model", model, "--mode", modes[0], "--client-modes", *modes, *engine]
    arguments += ["--max-batch-size", str(max_batch_size), "--request-timeout-s", "300", "--allow-unvalidated-fast"]
    process, url = start_server(arguments, log)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


async def run_cell(
    url: str, mode: str, listings: list[str], concurrency: int, max_seconds: float
) -> tuple[list[float], int, int]:
    """(latencies of answered requests, requests sent, errors) at a fixed concurrency, bounded in count and time."""
    latencies: list[float] = []
    errors = sent = 0
    queue = list(reversed(listings))
    stop_at = time.monotonic() + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, sent
        while queue and time.monotonic() < stop_at:
            text = queue.pop()
            sent += 1
            started = time.perf_counter()
            try:
                response = await client.post("/v1/moderations", json={"input": text, "mode": mode})
                failed = response.status_code != 200
            except httpx.HTTPError:
                failed = True
            if failed:
                errors += 1
            else:
                latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=url, timeout=360, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, sent, errors


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_until_idle(url: str, timeout_s: float) -> dict:
    """/health once the server has nothing queued or running: a cell cut off by `--max-seconds` leaves its accepted
    requests in the server, and the next cell must not start behind them."""
    deadline = time.monotonic() + timeout_s
    while not (health := httpx.get(f"{url}/health").json())["idle"]:
        if time.monotonic() > deadline:
            raise UserError(f"the server at {url} was still busy after {timeout_s:.0f} s; see its log")
        time.sleep(0.1)
    return health


def measure(
    url: str, mode: str, bucket: str, listings: list[str], concurrency: int, batching: bool, max_seconds: float
) -> Cell:
    before = wait_until_idle(url, timeout_s=600)
    started = time.perf_counter()
    latencies, sent, errors = asyncio.run(run_cell(url, mode, listings, concurrency, max_seconds))
    elapsed = time.perf_counter() - started
    after = httpx.get(f"{url}/health").json()
    batches = after["batches"] - before["batches"]
    mean_batch = (after["listings"] - before["listings"]) / batches if batches else 0.0
    p50, p95, p99 = (percentile(latencies, q) for q in (0.5, 0.95, 0.99))
    rps = len(latencies) / elapsed
    return Cell(mode, bucket, concurrency, batching, sent, len(latencies), errors, rps, p50, p95, p99, mean_batch)


def plot(cells: list[Cell], path: Path, title: str) -> None:
    plt = pyplot()

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in MODES:
        for bucket in BUCKETS:
            for batching, style in ((True, "-o"), (False, "x")):
                rows = [c for c in cells if (c.mode, c.bucket, c.batching) == (mode, bucket, batching)]
                if rows:
                    label = f"{mode}, {bucket} tokens" + ("" if batching else " (one at a time)")
                    left.plot([c.concurrency for c in rows], [c.rps for c in rows], style, label=label)
                    right.plot([c.concurrency for c in rows], [c.p95 for c in rows], style, label=label)
    left.set(xlabel="concurrency", ylabel="requests/s", xscale="log", title="throughput")
    right.set(xlabel="concurrency", ylabel="p95 latency (s)", xscale="log", yscale="log", title="p95 latency")
    left.legend(fontsize=6)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def comma_list(value: str, known, what: str) -> list[str]:
    items = value.split(",")
    if unknown := set(items) - set(known):
        raise UserError(f"unknown {what} {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    return items


def goal_lines(cells: list[Cell], engine: str, top: int, ratio: float) -> list[str]:
    """The issue's two fast-mode goals as it states them: >= GOAL_RPS with p95 <= GOAL_P95_S for 1-100 tokens (at any
    concurrency we ran; the best cell that meets it, else the one with the highest RPS), and batching >= GOAL_RATIO x
    one-at-a-time at the top concurrency."""
    batched = [c for c in cells if (c.mode, c.bucket, c.batching) == ("fast", "1-100", True)]
    meeting = [c for c in batched if c.rps >= GOAL_RPS and c.p95 <= GOAL_P95_S]
    best = max(meeting or batched, key=lambda c: c.rps)
    throughput = "met" if meeting else "missed; best"
    batching = "met" if ratio >= GOAL_RATIO else "missed"
    return [
        f"{engine}, goal (fast, 1-100 tokens: >= {GOAL_RPS:g} rps with p95 <= {GOAL_P95_S:g}s): {throughput} at "
        f"c={best.concurrency} ({best.rps:.2f} rps, p95 {best.p95:.2f}s)",
        f"{engine}, goal (fast, 1-100 tokens, c={top}: dynamic batching >= {GOAL_RATIO:g}x one at a time): {batching} "
        f"({ratio:.2f}x)",
    ]


def summary(cells: list[Cell], engine: str, top: int) -> list[str]:
    """The baseline / ours / ratio line per mode and bucket at the top concurrency, then the issue's fast-mode goals."""
    lines = []
    for mode, bucket in dict.fromkeys((c.mode, c.bucket) for c in cells):
        ours = next(c for c in cells if (c.mode, c.bucket, c.batching, c.concurrency) == (mode, bucket, True, top))
        baseline = next(c for c in cells if (c.mode, c.bucket, c.batching) == (mode, bucket, False))
        ratio = ours.rps / baseline.rps if baseline.rps else float("nan")
        lines.append(
            f"{engine}, {mode} mode, {bucket} tokens, concurrency {top}: baseline {baseline.rps:.2f} rps "
            f"(one at a time, p95 {baseline.p95:.2f}s), ours {ours.rps:.2f} rps (dynamic batching, p95 "
            f"{ours.p95:.2f}s), ratio {ratio:.2f}x"
        )
        if (mode, bucket) == ("fast", "1-100"):
            lines += goal_lines(cells, engine, top, ratio)
    return lines


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="HF id, local folder, embedded name or run folder")
    parser.add_argument("--engine", default="transformers", choices=["transformers", "ct2"])
    parser.add_argument(
        "--compute-type", default="float32", help="ct2: int8, int8_float32, float32; transformers: bfloat16, float32"
    )
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--buckets", default=",".join(BUCKETS), help=f"comma list of {', '.join(BUCKETS)}")
    parser.add_argument("--concurrency", default="1,4,16", help="comma list; the highest is also run one-at-a-time")
    parser.add_argument("--requests", type=int, default=48, help="requests per cell at most")
    parser.add_argument("--max-seconds", type=float, default=40.0, help="stop issuing requests in a cell after this")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="reasoning mode: the server's budget")
    parser.add_argument("--threads", type=int, default=0, help="server's torch and ct2 threads (0: their defaults)")
    parser.add_argument("--compile", action="store_true", help="servers torch.compile fast mode (transformers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "load_test")
    args = parser.parse_args(argv)
    modes = comma_list(args.modes, MODES, "mode(s)")
    buckets = comma_list(args.buckets, list(BUCKETS), "bucket(s)")
    levels = sorted({int(level) for level in args.concurrency.split(",")})
    args.out.mkdir(parents=True, exist_ok=True)
    engine = engine_label(args.engine, args.compute_type, args.compile)
    flags = ["--engine", args.engine, "--compute-type", args.compute_type, "--threads", str(args.threads)]
    flags += ["--max-new-tokens", str(args.max_new_tokens), *(["--compile"] if args.compile else [])]

    console = Console(width=150)
    run = read_run(args.model)
    tokenizer = load_tokenizer(run.model_path if run else args.model)
    listings = {b: make_listings(tokenizer, BUCKETS[b], args.requests, args.seed) for b in buckets}
    cells: list[Cell] = []
    for batching, max_batch_size in ((True, 16), (False, 1)):
        name = "dynamic batching" if batching else "one request at a time"
        with console.status(f"starting the server ({engine}, {name})"):
            log = args.out / f"server-batch{max_batch_size}.log"
            context = server(args.model, flags, modes, max_batch_size, log)
            url = context.__enter__()
        try:
            for mode in modes:
                asyncio.run(run_cell(url, mode, listings[buckets[0]][:4], 2, 60))  # warm-up, not measured
                for bucket in buckets:
                    for level in levels if batching else levels[-1:]:
                        with console.status(f"{engine}, {mode}, {name}: {bucket} tokens, concurrency {level}"):
                            cell = measure(url, mode, bucket, listings[bucket], level, batching, args.max_seconds)
                        cells.append(cell)
                        console.print(
                            f"{engine}, {mode:>9}, {name:>21}, {bucket:>8} tokens, c={level:<3} {cell.rps:6.2f} rps  "
                            f"p50 {cell.p50:6.2f}s  p95 {cell.p95:6.2f}s  p99 {cell.p99:6.2f}s  "
                            f"({cell.ok}/{cell.sent} ok)"
                        )
        finally:
            context.__exit__(None, None, None)

    title = f"{args.model}, {engine}, {os.cpu_count()} CPUs (shared), loopback"
    table = Table(title=title)
    columns = ("mode", "bucket (tokens)", "concurrency", "batching", "sent", "RPS", "p50 s", "p95 s", "p99 s", "errors")
    for column in (*columns, "mean batch"):
        table.add_column(column, justify="right")
    for c in cells:
        batching = "dynamic" if c.batching else "off"
        numbers = (f"{c.rps:.2f}", f"{c.p50:.3f}", f"{c.p95:.3f}", f"{c.p99:.3f}", f"{c.error_rate:.1%}")
        row = (c.mode, c.bucket, str(c.concurrency), batching, str(c.sent), *numbers, f"{c.mean_batch_size:.1f}")
        table.add_row(*row)
    console.print(table)
    for line in summary(cells, engine, levels[-1]):
        console.print(line, soft_wrap=True)  # one line each, for logs and greps
    record = {
        "model": args.model,
        "engine": args.engine,
        "compute_type": args.compute_type,
        "compiled": args.compile,
        "cpus": os.cpu_count(),
    }
    (args.out / "results.json").write_text(json.dumps({**record, "cells": [asdict(c) for c in cells]}, indent=2))
    plot(cells, args.out / "load_test.png", title)
    console.print(f"wrote {args.out / 'results.json'} and {args.out / 'load_test.png'}")


if __name__ == "__main__":
    main()
