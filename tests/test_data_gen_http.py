"""Scraper and OpenAI-compatible synth backend against real local HTTP servers on 127.0.0.1 (no network)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_gen.scrape import Crawler, ScrapeConfig, decode_body, parse_index, parse_product
from data_gen.synth import OpenAIBackend, OpenAIConfig, Request, parse_listing_json
from moderation.errors import UserError
from moderation.jsonl import read_jsonl_lines
from moderation.policy import load_policy

SITE = Path(__file__).parent / "fixtures" / "data_gen" / "site"
Reply = tuple[int, dict[str, str], bytes]


@contextmanager
def serve(app: Callable[[str, str, bytes, dict], Reply]):
    """Run `app(method, path, body, headers) -> (status, headers, body) | writer(handler)` on 127.0.0.1; yields
    (base_url, log)."""
    log: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            log.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "ua": self.headers.get("User-Agent"),
                    "auth": self.headers.get("Authorization"),
                    "t": time.monotonic(),
                    "body": body,
                }
            )
            reply = app(self.command, self.path, body, dict(self.headers))
            if callable(reply):  # the app writes the raw response itself (no length, trickled, dropped)
                reply(self)
                return
            status, headers, payload = reply
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


def html(name: str, content_type: str = "text/html; charset=utf-8") -> Reply:
    return 200, {"Content-Type": content_type}, (SITE / name).read_bytes()


def site_app(index: str = "discover.html", robots: bytes | None = None):
    """The fixture marketplace: robots, two index pages, products, a 429-then-OK page, 500s, a redirect loop."""
    hits: dict[str, int] = {}

    def app(method: str, path: str, body: bytes, headers: dict) -> Reply:
        hits[path] = hits.get(path, 0) + 1
        if path == "/robots.txt":
            return 200, {"Content-Type": "text/plain"}, robots or (SITE / "robots.txt").read_bytes()
        if path == "/discover":
            return html(index)
        if path == "/discover?page=2":
            return html("discover2.html")
        if path == "/l/lofi-pack" and hits[path] == 1:
            return 429, {"Retry-After": "1"}, b"slow down"
        if path == "/l/flaky":
            return 500, {}, b"oops"
        if path in ("/l/loop", "/l/loop-b"):
            return 302, {"Location": "/l/loop-b" if path == "/l/loop" else "/l/loop"}, b""
        if path == "/l/cafe-cookbook":  # windows-1252 bytes, no charset header: the <meta> decides
            return html("cafe-cookbook.html", "text/html")
        page = SITE / f"{path.removeprefix('/l/')}.html"
        if path.startswith("/l/") and page.exists():
            return html(page.name)
        return 404, {}, b"not found"

    return app


def crawler_config(base: str, tmp_path: Path, **overrides) -> ScrapeConfig:
    fields = {
        "start_urls": [f"{base}/discover"],
        "rate_limit_per_s": 20,
        "allow_loopback": True,  # the test server is on 127.0.0.1, which the crawler refuses by default
        "backoff_s": 0.01,
        "max_retry_after_s": 0.05,
        "max_attempts": 3,
        "cache_dir": str(tmp_path / "cache"),
        "out": str(tmp_path / "out" / "listings.jsonl"),
    }
    return ScrapeConfig(**(fields | overrides))


def read_out(config: ScrapeConfig) -> list[dict]:
    return [json.loads(line) for line in read_jsonl_lines(Path(config.out))]


EXPECTED = ["watercolor-brushes", "notion-planner", "lofi-pack", "cafe-cookbook", "marigold-font"]


class TestParsers:
    def test_product_page_fields(self):
        record = parse_product((SITE / "watercolor-brushes.html").read_text(), "http://x/l/watercolor-brushes")
        assert record["title"] == "Watercolor Brush Set for Procreate"
        assert record["price"] == "12 USD"
        assert record["tags"] == ["procreate", "brushes", "watercolor"]
        assert "42 brushes (.brushset)\n6 paper textures" in record["description"]
        assert record["url"] == "http://x/l/watercolor-brushes"
        assert record["text"].startswith("# Watercolor Brush Set for Procreate\n12 USD")
        assert "\n\n42 hand-made" in record["text"] and record["text"].endswith("Tags: procreate, brushes, watercolor")

    def test_meta_description_fallback_and_missing_fields(self):
        record = parse_product((SITE / "marigold-font.html").read_text(), "http://x/l/marigold-font")
        assert record["description"].startswith("A bouncy script font") and record["price"] == "$19"
        assert parse_product((SITE / "missing-fields.html").read_text(), "http://x/l/m") is None

    def test_index_links_in_page_order_and_next(self):
        products, nxt = parse_index((SITE / "discover.html").read_text(), "http://x/discover", r"/l/[^/?#]+$")
        assert products[:2] == ["http://x/l/watercolor-brushes", "http://x/l/notion-planner"]
        assert "http://x/creators/lina" not in products
        assert nxt == "http://x/discover?page=2"

    def test_decode_non_utf8(self):
        text = decode_body((SITE / "cafe-cookbook.html").read_bytes(), None)
        assert "Café cookbook" in text and "crème brûlée" in text and "12€" in text
        assert decode_body(b"caf\xff", "utf-8") == "caf\ufffd"


class TestCrawler:
    def test_full_crawl_politeness_and_failures(self, tmp_path):
        with serve(site_app()) as (base, log):
            config = crawler_config(base, tmp_path)
            stats = Crawler(config).crawl()
        records = read_out(config)
        assert [r["url"].rsplit("/", 1)[-1] for r in records] == EXPECTED
        assert stats.written == 5 and stats.failed == 2 and stats.missing_fields == 1
        assert stats.robots_disallowed == 1
        paths = [entry["path"] for entry in log]
        assert not any(p.startswith("/private/") for p in paths), "robots.txt disallow ignored"
        assert paths.count("/l/lofi-pack") == 2, "429 then success: exactly one retry"
        assert paths.count("/l/flaky") == 3, "500s retried up to max_attempts"
        assert all(entry["ua"] == config.user_agent for entry in log)
        # Politeness as the server sees it. Arrival times jitter (a request delivered late shortens the gap after it
        # by as much as it lengthens the one before), so check what jitter cannot fake: the whole crawl's pace, and
        # no burst (every two consecutive gaps together span at least one interval; unthrottled they span ~0).
        interval, times = 1.0 / config.rate_limit_per_s, [entry["t"] for entry in log]
        assert times[-1] - times[0] >= 0.9 * interval * (len(times) - 1), "rate limit not respected"
        assert all(c - a >= 0.9 * interval for a, c in zip(times, times[2:], strict=False)), "burst of requests"
        cafe = records[3]
        assert "crème brûlée" in cafe["text"] and "\ufffd" in cafe["description"]
        assert any("redirect loop" in e for e in stats.errors)

    def test_resume_never_duplicates_and_uses_cache(self, tmp_path):
        with serve(site_app()) as (base, log):
            first = crawler_config(base, tmp_path, max_products=2)
            assert Crawler(first).crawl().written == 2
            with Path(first.out).open("a") as torn:
                torn.write('{"url": "torn')  # a crash mid-write
            second = crawler_config(base, tmp_path, max_products=50)
            stats = Crawler(second).crawl()
            assert stats.already_done == 2 and stats.written == 3
            requests_before = len(log)
            third = Crawler(second).crawl()
            fourth_new = [e["path"] for e in log[requests_before:]]
        urls = [r["url"] for r in read_out(second)]
        assert [u.rsplit("/", 1)[-1] for u in urls] == EXPECTED and len(set(urls)) == len(urls)
        assert third.written == 0
        # third run: robots, index pages and parsed products come from the cache or `out`; only failures are retried
        assert set(fourth_new) == {"/l/flaky", "/l/loop", "/l/loop-b"}

    def test_robots_crawl_delay_is_honoured(self, tmp_path):
        with serve(site_app(robots=b"User-agent: *\nCrawl-delay: 1\n")) as (base, log):
            Crawler(
                crawler_config(base, tmp_path, max_products=1, start_urls=[f"{base}/l/x", f"{base}/discover"])
            ).crawl()
        gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(log)]
        assert len(gaps) >= 2 and min(gaps) >= 0.8

    def test_scraped_listings_feed_a_build(self, tmp_path):
        from data_gen.build import BuildConfig, build

        with serve(site_app()) as (base, _):
            config = crawler_config(base, tmp_path)
            Crawler(config).crawl()
        manifest = build(
            BuildConfig(
                out_dir=str(tmp_path),
                scraped=[config.out],
                categories=["spam"],
                seed_listings=20,
                disallowed_per_category=10,
                hard_negatives_per_category=3,
                min_train_disallowed_per_category=0,
            )
        )
        assert sum(manifest["counts"][s]["source"].get("scraped", 0) for s in ("train", "dev", "test")) == 5

    def test_corrupt_cache_is_one_clear_error(self, tmp_path):
        with serve(site_app()) as (base, _):
            config = crawler_config(base, tmp_path, max_products=1)
            Crawler(config).crawl()
            for path in Path(config.cache_dir).glob("*.json"):
                path.write_text("{not json")
            with pytest.raises(UserError, match="corrupt cache file"):
                Crawler(config).crawl()
        assert len(read_out(config)) == 1, "nothing already written is lost"

    def test_site_without_listings_fails_via_cli(self, tmp_path):
        with serve(site_app(index="empty.html")) as (base, _):
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "data_gen",
                    "scrape",
                    f"start_urls=[{base}/discover]",
                    f"cache_dir={tmp_path / 'c'}",
                    f"out={tmp_path / 'o.jsonl'}",
                    "rate_limit_per_s=10",
                    "allow_loopback=true",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert result.returncode == 2
        assert result.stderr.strip().count("\n") == 0 and "no listings found" in result.stderr


# --- OpenAI-compatible backend ---------------------------------------------------------------------------------------


def chat_reply(content: str) -> Reply:
    body = {
        "choices": [{"message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20},
    }
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


GOOD = json.dumps({"listing": "Premium IPTV, 9,000 channels, M3U link. $20", "rationale": "Sells an M3U IPTV link."})


def fake_endpoint(script: list[str]):
    """POST n gets script[n] ('429', '500', 'bad', 'garbage-json', 'not-json' or 'ok'); past the end: 'ok'."""
    calls: list[int] = []

    def app(method: str, path: str, body: bytes, headers: dict) -> Reply:
        assert method == "POST" and path == "/v1/chat/completions"
        calls.append(1)
        step = script[len(calls) - 1] if len(calls) <= len(script) else "ok"
        if step == "429":
            return 429, {"Retry-After": "0"}, b"slow down"
        if step == "500":
            return 500, {}, b"internal error"
        if step == "not-json":
            return 200, {"Content-Type": "application/json"}, b"<html>gateway</html>"
        if step == "bad":
            return chat_reply("Sure! Here is a great listing for you: IPTV 9000 channels")
        if step == "garbage-json":
            return 200, {"Content-Type": "application/json"}, b'{"choices": []}'
        return chat_reply(GOOD)

    return app


def backend(base: str, tmp_path: Path, **overrides) -> OpenAIBackend:
    config = OpenAIConfig(
        base_url=f"{base}/v1",
        model="fake-model",
        concurrency=1,
        cache_dir=str(tmp_path / "synth"),
        usd_per_1k_prompt_tokens=1.0,
        **overrides,
    )
    return OpenAIBackend(load_policy("marketplace"), config, seed=0, cache_root=tmp_path)


REQUESTS = [Request(f"disallowed/iptv/{i}", "disallowed", ("iptv",)) for i in range(3)] + [
    Request("hard_negative/gambling/0", "hard_negative", ("gambling",))
]


class TestOpenAIBackend:
    def test_retry_malformed_tokens_and_cache(self, tmp_path, monkeypatch):
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with serve(fake_endpoint(["500", "ok", "bad", "garbage-json", "ok"])) as (base, log):
            synth = backend(base, tmp_path)
            out = synth.generate(REQUESTS)
            stats = synth.stats()
            assert len(out) == 2 and stats["malformed"] == 2 and stats["http_requests"] == 5
            assert stats["prompt_tokens"] == 300 and stats["estimated_cost_usd"] == pytest.approx(0.3)
            assert out[0].text.startswith("Premium IPTV") and out[0].generator == "openai/fake-model"
            assert log[0]["auth"] == "Bearer sk-test"
            sent = json.loads(log[0]["body"])
            assert sent["model"] == "fake-model" and "Unlicensed IPTV" in sent["messages"][1]["content"]
            again = backend(base, tmp_path)
            assert len(again.generate(REQUESTS)) == 4
            assert again.stats()["cache_hits"] == 2 and again.stats()["http_requests"] == 2

    def test_endpoint_always_failing_is_one_error(self, tmp_path):
        with serve(fake_endpoint(["500"] * 20)) as (base, log), pytest.raises(UserError) as raised:
            backend(base, tmp_path, max_attempts=2).generate(REQUESTS[:2])
        message = str(raised.value)
        assert "no usable listing" in message and "HTTP 500" in message and "\n" not in message
        assert len(log) == 4, "max_attempts=2: each request tried twice, then given up"

    def test_rate_limit_is_retried_by_the_sdk(self, tmp_path):
        with serve(fake_endpoint(["429", "429", "ok"])) as (base, log):
            synth = backend(base, tmp_path, max_attempts=3)
            out = synth.generate(REQUESTS[:1])
        assert len(out) == 1 and out[0].text.startswith("Premium IPTV")
        assert len(log) == 3 and synth.stats()["http_requests"] == 3 and synth.stats()["failed"] == 0

    def test_rate_limit_past_max_attempts_fails_the_request(self, tmp_path):
        with serve(fake_endpoint(["429", "429", "ok"])) as (base, log), pytest.raises(UserError, match="HTTP 429"):
            backend(base, tmp_path, max_attempts=2).generate(REQUESTS[:1])
        assert len(log) == 2

    def test_a_slow_endpoint_times_out_on_every_attempt(self, tmp_path):
        def slow(method: str, path: str, body: bytes, headers: dict):
            return lambda handler: time.sleep(1.0)  # no answer within the client's timeout

        with serve(slow) as (base, log), pytest.raises(UserError, match="APITimeoutError"):
            backend(base, tmp_path, timeout_s=0.2, max_attempts=2).generate(REQUESTS[:1])
        assert len(log) == 2, "timeout_s bounds each attempt and a timeout is retried"

    def test_a_reply_that_is_not_json_is_malformed_not_a_crash(self, tmp_path):
        with serve(fake_endpoint(["not-json", "ok"])) as (base, _):
            synth = backend(base, tmp_path)
            assert len(synth.generate(REQUESTS[:2])) == 1 and synth.stats()["malformed"] == 1

    def test_parse_listing_json(self):
        assert parse_listing_json("```json\n" + GOOD + "\n```")[1] == "Sells an M3U IPTV link."
        assert parse_listing_json('{"listing": "x"}') is None
        assert parse_listing_json("[1, 2]") is None

    def test_build_with_openai_backend(self, tmp_path):
        from data_gen.build import BuildConfig, build

        with serve(fake_endpoint([])) as (base, _):
            config = BuildConfig(
                out_dir=str(tmp_path),
                name="llm",
                backend="openai",
                categories=["iptv", "spam"],
                seed_listings=30,
                disallowed_per_category=2,
                multi_label=1,
                hard_negatives_per_category=1,
                min_train_disallowed_per_category=0,
                openai=OpenAIConfig(base_url=f"{base}/v1", cache_dir=str(tmp_path / "c")),
            )
            manifest = build(config)
        # the fake endpoint always returns the same listing: dedup keeps one
        assert manifest["backend"]["http_requests"] == 7
        assert manifest["dedup"]["dropped_near_duplicates"] == 6

    def test_secrets_never_reach_data_artifacts(self, tmp_path, monkeypatch):
        from data_gen.build import BuildConfig, build

        monkeypatch.setenv("OPENAI_API_KEY", "sk-FAKE-KEY-3141")
        with serve(fake_endpoint([])) as (base, log):
            endpoint = base.replace("http://", "http://reader:FAKE-PASS-2718@") + "/v1"
            build(
                BuildConfig(
                    out_dir=str(tmp_path / "data"),
                    name="llm",
                    backend="openai",
                    categories=["iptv"],
                    seed_listings=10,
                    disallowed_per_category=2,
                    multi_label=0,
                    hard_negatives_per_category=1,
                    min_train_disallowed_per_category=0,
                    openai=OpenAIConfig(base_url=endpoint, cache_dir=str(tmp_path / "cache")),
                )
            )
        assert log  # the endpoint was used (httpx sends URL credentials as basic auth)
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert any(p.name == "manifest.json" for p in files)
        for path in files:
            data = path.read_bytes()
            assert b"FAKE-KEY-3141" not in data and b"FAKE-PASS-2718" not in data, path
