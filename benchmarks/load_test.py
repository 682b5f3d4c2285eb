"""Load test of `python -m serve` on 127.0.0.1: RPS and latency percentiles per input-length bucket and concurrency,
with dynamic batching (ours) and one request at a time (baseline, `--max-batch-size 1`), measured in one run.

    python benchmarks/load_test.py                                  # smollm2-135m, fast mode, ~5 minutes on 2 cores
    python benchmarks/fault_run.py                                  # partial bodies, nested JSON, SIGTERM mid-load
    python benchmarks/load_test.py --model runs/my-run --mode reasoning --requests 8 --concurrency 1,8

Each server is a real subprocess on a free loopback port; every cell sends at most `--requests` single-listing
requests at a fixed concurrency and stops issuing after `--max-seconds`, so the run is bounded in count and time.
Listings are cut from the sample listings to a token count drawn uniformly inside the bucket (the prompt keeps at
most `max_listing_tokens`, 384 by default, of a longer listing: head and tail). Prints a table, the baseline / ours /
ratio line per bucket at the highest concurrency, and writes results.json and a PNG to `--out`. Fast mode is served
with `--allow-unvalidated-fast`: this measures throughput, not what the mode is worth (see serve.validation).
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

from moderation.errors import UserError, cli_main
from moderation.models import load_tokenizer
from moderation.paths import CONFIGS, REPO_ROOT
from moderation.runs import read_run

BUCKETS = {"1-100": (1, 100), "100-500": (100, 500), "500-2000": (500, 2000)}


@dataclass
class Cell:
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
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise UserError(f"the server exited with {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            process.kill()
            raise UserError(f"the server did not start in 300s; see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)


@contextmanager
def server(model: str, mode: str, max_batch_size: int, threads: int, log: Path):
    """A `python -m serve` subprocess on a free loopback port; yields its URL once /health answers."""
    arguments = ["--model", model, "--mode", mode, "--max-batch-size", str(max_batch_size)]
    arguments += ["--request-timeout-s", "120", "--threads", str(threads)]
    arguments += ["--allow-unvalidated-fast"] if mode == "fast" else []
    process, url = start_server(arguments, log)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


async def run_cell(url: str, listings: list[str], concurrency: int, max_seconds: float) -> tuple[list[float], int, int]:
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
                response = await client.post("/v1/moderations", json={"input": text})
                failed = response.status_code != 200
            except httpx.HTTPError:
                failed = True
            if failed:
                errors += 1
            else:
                latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=url, timeout=180, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, sent, errors


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, bucket: str, listings: list[str], concurrency: int, batching: bool, max_seconds: float) -> Cell:
    before = httpx.get(f"{url}/health").json()
    started = time.perf_counter()
    latencies, sent, errors = asyncio.run(run_cell(url, listings, concurrency, max_seconds))
    elapsed = time.perf_counter() - started
    after = httpx.get(f"{url}/health").json()
    batches = after["batches"] - before["batches"]
    mean_batch = (after["listings"] - before["listings"]) / batches if batches else 0.0
    p50, p95, p99 = (percentile(latencies, q) for q in (0.5, 0.95, 0.99))
    rps = len(latencies) / elapsed
    return Cell(bucket, concurrency, batching, sent, len(latencies), errors, rps, p50, p95, p99, mean_batch)


def plot(cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for bucket in BUCKETS:
        for batching, style in ((True, "-o"), (False, "x")):
            rows = [c for c in cells if c.bucket == bucket and c.batching == batching]
            if rows:
                label = f"{bucket} tokens" + ("" if batching else " (one at a time)")
                left.plot([c.concurrency for c in rows], [c.rps for c in rows], style, label=label)
                right.plot([c.concurrency for c in rows], [c.p95 for c in rows], style, label=label)
    left.set(xlabel="concurrency", ylabel="requests/s", xscale="log", title="throughput")
    right.set(xlabel="concurrency", ylabel="p95 latency (s)", xscale="log", yscale="log", title="p95 latency")
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="HF id, local folder, embedded name or run folder")
    parser.add_argument("--mode", default="fast", choices=["fast", "reasoning"])
    parser.add_argument("--buckets", default=",".join(BUCKETS), help=f"comma list of {', '.join(BUCKETS)}")
    parser.add_argument("--concurrency", default="1,4,16", help="comma list; the highest is also run one-at-a-time")
    parser.add_argument("--requests", type=int, default=48, help="requests per cell at most")
    parser.add_argument("--max-seconds", type=float, default=40.0, help="stop issuing requests in a cell after this")
    parser.add_argument("--threads", type=int, default=0, help="server's torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "load_test")
    args = parser.parse_args(argv)
    buckets = args.buckets.split(",")
    if unknown := set(buckets) - set(BUCKETS):
        raise UserError(f"unknown bucket(s) {', '.join(sorted(unknown))}; known: {', '.join(BUCKETS)}")
    levels = sorted({int(level) for level in args.concurrency.split(",")})
    args.out.mkdir(parents=True, exist_ok=True)

    console = Console(width=150)
    run = read_run(args.model)
    tokenizer = load_tokenizer(run.model_path if run else args.model)
    listings = {b: make_listings(tokenizer, BUCKETS[b], args.requests, args.seed) for b in buckets}
    cells: list[Cell] = []
    for batching, max_batch_size in ((True, 16), (False, 1)):
        name = "dynamic batching" if batching else "one request at a time"
        with console.status(f"starting the server ({name})"):
            log = args.out / f"server-batch{max_batch_size}.log"
            context = server(args.model, args.mode, max_batch_size, args.threads, log)
            url = context.__enter__()
        try:
            asyncio.run(run_cell(url, listings[buckets[0]][:4], 2, 60))  # warm-up, not measured
            for bucket in buckets:
                for level in levels if batching else levels[-1:]:
                    with console.status(f"{name}: {bucket} tokens, concurrency {level}"):
                        cell = measure(url, bucket, listings[bucket], level, batching, args.max_seconds)
                    cells.append(cell)
                    console.print(f"{name:>22} {bucket:>9} c={level:<3} {cell.rps:6.2f} rps  p95 {cell.p95:6.2f}s")
        finally:
            context.__exit__(None, None, None)

    table = Table(title=f"{args.model}, {args.mode} mode, {os.cpu_count()} CPUs (shared), loopback")
    columns = ("bucket (tokens)", "concurrency", "batching", "sent", "RPS", "p50 s", "p95 s", "p99 s", "errors")
    for column in (*columns, "mean batch"):
        table.add_column(column, justify="right")
    for c in cells:
        batching = "dynamic" if c.batching else "off"
        numbers = (f"{c.rps:.2f}", f"{c.p50:.3f}", f"{c.p95:.3f}", f"{c.p99:.3f}", f"{c.error_rate:.1%}")
        table.add_row(c.bucket, str(c.concurrency), batching, str(c.sent), *numbers, f"{c.mean_batch_size:.1f}")
    console.print(table)
    top = levels[-1]
    for bucket in buckets:
        ours = next(c for c in cells if c.bucket == bucket and c.batching and c.concurrency == top)
        baseline = next(c for c in cells if c.bucket == bucket and not c.batching)
        console.print(
            f"{bucket} tokens, concurrency {top}: baseline {baseline.rps:.2f} rps (one at a time), "
            f"ours {ours.rps:.2f} rps (dynamic batching), ratio {ours.rps / baseline.rps:.2f}x"
        )
    (args.out / "results.json").write_text(json.dumps([asdict(c) for c in cells], indent=2))
    plot(cells, args.out / "load_test.png")
    console.print(f"wrote {args.out / 'results.json'} and {args.out / 'load_test.png'}")


if __name__ == "__main__":
    main()
