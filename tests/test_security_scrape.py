"""Issue 19, items 4-6 and decode_body: every scraper hop checked (SSRF), robots.txt per RFC 9309, responses capped,
and text with U+2028/U+2029/U+0085, BOMs, multi-line and huge CSV cells surviving resume and import.

Each test failed on 99dce3b. Servers are local (127.0.0.1), so tests opt in with `allow_loopback=True` unless loopback
itself is what is being refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_data_gen_http import crawler_config, read_out, serve

from data_gen.hops import HopGuard, HopRefused
from data_gen.importer import CSV_FIELD_LIMIT, read_records
from data_gen.importer import main as import_main
from data_gen.scrape import Crawler, decode_body
from moderation.errors import UserError
from moderation.jsonl import read_jsonl_lines

SEPARATORS = "\u2028\u2029\u0085"


def product_html(title: str, description: str = "A plain description.") -> bytes:
    return (
        f'<html><head><meta charset="utf-8"></head><body><h1>{title}</h1>'
        f'<div itemprop="description"><p>{description}</p></div></body></html>'
    ).encode()


def page(body: bytes) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "text/html; charset=utf-8"}, body


def index_html(*links: str, next_url: str | None = None) -> bytes:
    anchors = "".join(f'<a href="{link}">x</a>' for link in links)
    nxt = f'<a rel="next" href="{next_url}">next</a>' if next_url else ""
    return f"<html><body>{anchors}{nxt}</body></html>".encode()


# --- item 4: SSRF --------------------------------------------------------------------------------------------------


@pytest.fixture
def other():
    """A second server on another port that must never be contacted."""
    with serve(lambda method, path, body, headers: page(product_html("Internal admin page"))) as (base, log):
        yield base, log


def redirecting_shop(location: str):
    routes = {
        "/discover": page(index_html("/l/evil", "/l/fine")),
        "/l/evil": (302, {"Location": location}, b""),
        "/l/fine": page(product_html("A fine listing")),
    }
    return lambda method, path, body, headers: (
        routes.get(path) or ((200, {}, b"User-agent: *\nAllow: /\n") if path == "/robots.txt" else (404, {}, b""))
    )


class TestEveryHopIsChecked:
    @pytest.mark.parametrize(
        "target, reason",
        [
            ("{other}/l/admin", "not an allowed host"),  # same address, another port
            ("{other_named}/l/admin", "not an allowed host"),  # another host name for the same machine
            ("http://169.254.169.254/latest/meta-data/", "link-local or reserved address"),  # cloud metadata
            ("file:///etc/passwd", "only http and https"),
        ],
    )
    def test_redirect_off_the_allowed_hosts_is_refused(self, tmp_path, other, target, reason):
        other_base, other_log = other
        location = target.format(other=other_base, other_named=other_base.replace("127.0.0.1", "localhost"))
        with serve(redirecting_shop(location)) as (base, _):
            # the metadata host is even allow-listed: its address is refused regardless
            config = crawler_config(base, tmp_path, allowed_hosts=[base.split("//")[1], "169.254.169.254"], timeout_s=3)
            stats = Crawler(config).crawl()
        assert other_log == [], "the crawler was steered to another port or host"
        assert [r["title"] for r in read_out(config)] == ["A fine listing"]
        assert stats.failed == 1 and any(reason in e for e in stats.errors), stats.errors

    def test_next_page_link_to_another_host_is_not_followed(self, tmp_path, other):
        other_base, other_log = other
        routes = {"/discover": page(index_html("/l/fine", f"{other_base}/l/admin", next_url=f"{other_base}/discover"))}
        routes["/l/fine"] = page(product_html("A fine listing"))
        with serve(lambda method, path, body, headers: routes.get(path) or (404, {}, b"")) as (base, _):
            config = crawler_config(base, tmp_path)
            stats = Crawler(config).crawl()
        assert other_log == [] and stats.written == 1
        assert any("not an allowed host" in e for e in stats.errors)

    def test_malformed_links_are_skipped(self, tmp_path):
        links = ("http://[::1/l/x", "http://127.0.0.1:99999/l/y", "/l/fine")
        routes = {"/discover": page(index_html(*links, next_url="http://[bad/")), "/l/fine": page(product_html("Fine"))}
        with serve(lambda method, path, body, headers: routes.get(path) or (404, {}, b"")) as (base, _):
            config = crawler_config(base, tmp_path)
            assert Crawler(config).crawl().written == 1

    def test_loopback_is_refused_unless_allowed(self, tmp_path):
        with serve(lambda method, path, body, headers: page(index_html())) as (base, log):
            named = base.replace("127.0.0.1", "localhost")
            for start in (base, named):  # the address itself, and a name that resolves to it
                config = crawler_config(start, tmp_path, allow_loopback=False)
                with pytest.raises(UserError, match="loopback, private"):
                    Crawler(config).crawl()
        assert log == []

    def test_guard_checks_every_address_kind(self):
        guard = HopGuard.build(["shop.example", "10.1.2.3", "[::1]:8080"], [], allow_loopback=True)
        assert guard.allows("https://shop.example/l/x") and guard.allows("http://SHOP.example:80/l/x")
        assert not guard.allows("http://shop.example:8080/") and not guard.allows("http://evil.example/")
        assert not guard.allows("ftp://shop.example/") and not guard.allows("gopher://shop.example/")
        with pytest.raises(HopRefused, match="private"):
            guard.check_address("http://10.1.2.3/")
        guard.check_address("http://[::1]:8080/")  # loopback allowed here
        for peer in ("10.0.0.1", "192.168.1.1", "169.254.169.254", "::ffff:169.254.169.254", "fe80::1", "0.0.0.0"):
            with pytest.raises(HopRefused):
                guard.check_peer("http://x/", (peer, 80))


class TestResponseLimits:
    def test_oversized_and_trickled_responses_are_dropped(self, tmp_path):
        def unframed(handler) -> None:  # no Content-Length: only streaming can stop it
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.end_headers()
            handler.wfile.write(product_html("Huge", "x" * 300_000))
            handler.close_connection = True

        def trickle(handler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.end_headers()
            try:
                for _ in range(100):
                    handler.wfile.write(b"<p>x</p>")
                    handler.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            handler.close_connection = True

        routes = {
            "/discover": page(index_html("/l/declared", "/l/unframed", "/l/trickle", "/l/fine")),
            "/l/declared": page(product_html("Declared", "x" * 300_000)),
            "/l/unframed": unframed,
            "/l/trickle": trickle,
            "/l/fine": page(product_html("A fine listing")),
        }
        with serve(lambda method, path, body, headers: routes.get(path) or (404, {}, b"")) as (base, _):
            config = crawler_config(base, tmp_path, max_response_bytes=100_000, timeout_s=1.0, max_attempts=1)
            started = time.monotonic()
            stats = Crawler(config).crawl()
            elapsed = time.monotonic() - started
        assert [r["title"] for r in read_out(config)] == ["A fine listing"]
        assert sum("max_response_bytes" in e for e in stats.errors) == 2
        assert any("longer than timeout_s" in e for e in stats.errors)
        assert elapsed < 6, "a trickling server held the crawler"


# --- item 5: robots.txt ------------------------------------------------------------------------------------------


def robots_shop(robots_reply, extra: dict | None = None):
    routes = {
        "/discover": page(index_html("/l/a", "/l/private")),
        "/l/a": page(product_html("Listing A")),
        "/l/private": page(product_html("Listing behind Disallow")),
    } | (extra or {})

    def app(method, path, body, headers):
        if path == "/robots.txt":
            return robots_reply
        return routes.get(path) or (404, {}, b"")

    return app


def dropped(handler) -> None:
    """Close the connection without an answer: a network error."""
    handler.close_connection = True


class TestRobots:
    @pytest.mark.parametrize("status", [401, 403, 404])
    def test_4xx_allows_everything(self, tmp_path, status):
        with serve(robots_shop((status, {}, b"User-agent: *\nDisallow: /\n"))) as (base, _):
            config = crawler_config(base, tmp_path)
            assert Crawler(config).crawl().written == 2

    @pytest.mark.parametrize("reply", [(500, {}, b""), (503, {}, b""), dropped], ids=["500", "503", "network"])
    def test_5xx_and_network_errors_disallow_everything(self, tmp_path, reply):
        with serve(robots_shop(reply)) as (base, log):
            config = crawler_config(base, tmp_path)
            with pytest.raises(UserError, match="disallowing the whole site"):
                Crawler(config).crawl()
        assert {e["path"] for e in log} == {"/robots.txt"}, "a page was fetched while robots.txt was unreachable"

    def test_same_origin_redirect_is_followed_once(self, tmp_path):
        moved = (301, {"Location": "/robots-real.txt"}, b"")
        real = {"/robots-real.txt": (200, {}, b"User-agent: *\nDisallow: /l/private\n")}
        with serve(robots_shop(moved, real)) as (base, log):
            config = crawler_config(base, tmp_path)
            stats = Crawler(config).crawl()
        assert [r["title"] for r in read_out(config)] == ["Listing A"] and stats.robots_disallowed == 1
        assert [e["path"] for e in log].count("/robots-real.txt") == 1

    def test_redirect_loop_is_bounded(self, tmp_path):
        loop = {"/robots2.txt": (302, {"Location": "/robots.txt"}, b"")}
        with serve(robots_shop((302, {"Location": "/robots2.txt"}, b""), loop)) as (base, log):
            config = crawler_config(base, tmp_path)
            with pytest.raises(UserError, match="redirect loop"):
                Crawler(config).crawl()
        assert len(log) <= 2 * config.max_attempts

    def test_cached_rules_expire(self, tmp_path):
        rules = [b"User-agent: *\nAllow: /\n"]
        with serve(lambda method, path, body, headers: (200, {}, rules[0])) as (base, log):
            config = crawler_config(base, tmp_path, robots_ttl_s=0.3)
            crawler = Crawler(config)
            assert crawler.allowed(f"{base}/l/a")
            rules[0] = b"User-agent: *\nDisallow: /\n"
            assert crawler.allowed(f"{base}/l/a"), "within the TTL the cached rules apply"
            time.sleep(0.4)
            assert not crawler.allowed(f"{base}/l/a"), "expired rules were not fetched again"
            rules[0] = b"User-agent: *\nAllow: /\n"
            time.sleep(0.4)
            assert Crawler(config).allowed(f"{base}/l/a"), "an expired disk cache entry was reused by a new run"
        assert [e["path"] for e in log] == ["/robots.txt"] * 3


# --- item 6: line separators, CSV ----------------------------------------------------------------------------------


class TestLineSeparators:
    def test_scraped_title_with_separators_resumes(self, tmp_path):
        title = f"Planner{SEPARATORS[0]}2026 edition{SEPARATORS[1]}with{SEPARATORS[2]}stickers"
        routes = {
            "/discover": page(index_html("/l/a", "/l/b")),
            "/l/a": page(product_html(title)),
            "/l/b": page(product_html("Second")),
        }
        with serve(lambda method, path, body, headers: routes.get(path) or (404, {}, b"")) as (base, _):
            assert Crawler(crawler_config(base, tmp_path, max_products=1)).crawl().written == 1
            stats = Crawler(crawler_config(base, tmp_path)).crawl()
        assert stats.already_done == 1 and stats.written == 1
        records = [json.loads(line) for line in read_jsonl_lines(tmp_path / "out" / "listings.jsonl")]
        assert [r["title"] for r in records] == [title, "Second"]

    def test_jsonl_import_keeps_separators(self, tmp_path):
        text = f"Line one{SEPARATORS[0]}still one{SEPARATORS[1]}and{SEPARATORS[2]}one"
        source = tmp_path / "in.jsonl"
        source.write_text(json.dumps({"text": text, "label": "ham"}, ensure_ascii=False) + "\n", encoding="utf-8")
        out = tmp_path / "out.jsonl"
        import_main([str(source), "--map", "ham=allow", "--out", str(out)])
        assert [r["text"] for r in read_records(out)] == [text]


class TestCsvImport:
    def write(self, tmp_path: Path, content: str, encoding: str = "utf-8") -> Path:
        path = tmp_path / "in.csv"
        path.write_bytes(content.encode(encoding))
        return path

    def test_bom(self, tmp_path):
        path = self.write(tmp_path, "text,label\r\nA sticker pack,ham\r\n", "utf-8-sig")
        out = tmp_path / "out.jsonl"
        import_main([str(path), "--map", "ham=allow", "--out", str(out)])
        assert [r["text"] for r in read_records(out)] == ["A sticker pack"]

    def test_multi_line_cell(self, tmp_path):
        path = self.write(tmp_path, 'text,label\n"Line one\nline two\r\nline three",ham\nsecond,ham\n')
        assert [r["text"] for r in read_records(path)] == ["Line one\nline two\r\nline three", "second"]

    def test_200k_cell(self, tmp_path):
        path = self.write(tmp_path, f'text,label\n"{"y" * 200_000}",ham\n')
        assert len(read_records(path)[0]["text"]) == 200_000

    def test_cell_over_the_limit_is_one_line_error(self, tmp_path):
        path = self.write(tmp_path, f'text,label\nok,ham\n"{"y" * (CSV_FIELD_LIMIT + 1)}",ham\n')
        with pytest.raises(UserError, match=r"in\.csv:\d+: field larger than field limit"):
            read_records(path)


# --- item 12: decode_body ----------------------------------------------------------------------------------------


class TestDecodeBody:
    @pytest.mark.parametrize("charset", ["idna", "punycode", "IDNA", "rot13", "no-such-codec"])
    def test_codec_that_is_not_a_page_encoding_falls_back_to_utf8(self, charset):
        assert decode_body(b"caf\xc3\xa9 \xff", charset) == "caf\xe9 \ufffd"

    def test_meta_charset_idna(self):
        body = b'<meta charset="idna"><h1>caf\xc3\xa9 \xff</h1>'
        assert "café \ufffd" in decode_body(body, None)

    def test_crawl_with_idna_header(self, tmp_path):
        routes = {
            "/discover": page(index_html("/l/a")),
            "/l/a": (200, {"Content-Type": "text/html; charset=idna"}, product_html("Caf\xe9 \xff")),
        }
        with serve(lambda method, path, body, headers: routes.get(path) or (404, {}, b"")) as (base, _):
            config = crawler_config(base, tmp_path)
            Crawler(config).crawl()
        assert [r["title"] for r in read_out(config)] == ["Café ÿ"]
