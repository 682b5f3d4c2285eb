"""Allowed-listings scraper for a marketplace of digital products with public listing pages (Gumroad-like).

    python -m data_gen scrape start_urls='[https://gumroad.com/discover]' max_products=200

A polite crawler: obeys robots.txt (RFC 9309: 4xx means allow all, 5xx or no answer means disallow all; rules are
refetched after a day; Crawl-delay included), sends a named user agent, waits
between requests (`rate_limit_per_s`, default 1), retries 429/5xx/network errors with exponential backoff
(moderation.retrying; Retry-After is honoured), caches fetched pages on disk, and resumes: records already in `out`
are never fetched or written again. Index pages are read in order and product links in page order, so output order
is deterministic. Pages are parsed with selectolax; a product page without a title or description is counted and
skipped.

A safe one: every hop (index, next-page and product links, each redirect, robots.txt) must be http(s) on an allowed
host and port and resolve to a public address (data_gen.hops; `allow_loopback=true` for a local test server); each
response is capped in size (`max_response_bytes`) and time (`timeout_s`).

Output: one JSON object per line: url, url_fetched, title, description, price, tags, text (the whole listing).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx
from pydantic import BaseModel, ConfigDict, Field
from selectolax.lexbor import LexborHTMLParser as HTMLParser
from tqdm import tqdm

from data_gen.hops import HopGuard, HopRefused
from data_gen.pages import render_record
from moderation.errors import UserError
from moderation.files import atomic_write_text
from moderation.jsonl import drop_torn_tail, split_jsonl
from moderation.paths import cache_dir
from moderation.retrying import Retryable, retrying

NOT_PAGE_ENCODINGS = {"idna", "punycode", "unicode-escape", "raw-unicode-escape"}
USER_AGENT = "grpo-moderation-scraper/0.1 (research dataset; respects robots.txt)"


class ScrapeConfig(BaseModel):
    """Crawler settings. YAML keys are these field names; CLI `key=value` overrides them."""

    model_config = ConfigDict(extra="forbid")

    start_urls: list[str] = Field(default_factory=lambda: ["https://gumroad.com/discover"], description="index pages")
    product_pattern: str = Field(r"/l/[^/?#]+$", description="regex a product page URL path matches")
    allowed_hosts: list[str] | None = Field(
        None, description="host[:port] the crawler may fetch from, every hop included (default: the start URLs' hosts)"
    )
    max_products: int = Field(200, ge=1, description="stop after this many product pages in `out`")
    max_index_pages: int = Field(20, ge=1, description="index pages followed via rel=next links")
    user_agent: str = Field(USER_AGENT, description="sent with every request and matched against robots.txt")
    rate_limit_per_s: float = Field(1.0, gt=0, le=50, description="at most this many requests per second")
    max_attempts: int = Field(4, ge=1, description="attempts per URL on 429/5xx/network errors")
    backoff_s: float = Field(2.0, ge=0, description="first retry wait in seconds; doubles each attempt")
    max_retry_after_s: float = Field(60.0, ge=0, description="cap on a server's Retry-After")
    max_crawl_delay_s: float = Field(30.0, ge=0, description="cap on robots.txt Crawl-delay (which is honoured)")
    timeout_s: float = Field(20.0, gt=0, description="per request: connecting, each read, and the whole body")
    max_response_bytes: int = Field(10_000_000, ge=1, description="a larger response is dropped, not read on")
    max_redirects: int = Field(5, ge=0, description="redirect hops followed (loops fail at once)")
    robots_ttl_s: float = Field(86400.0, gt=0, description="robots.txt is fetched again after this long (RFC 9309)")
    allow_loopback: bool = Field(
        False, description="fetch from 127.0.0.0/8 and ::1 (a local test server); other internal addresses never"
    )
    cache_dir: str | None = Field(None, description="page cache (default: <project cache>/scrape)")
    out: str = Field("data/scraped/listings.jsonl", description="JSONL output; appended to, resumable")


@dataclass
class Stats:
    fetched: int = 0
    from_cache: int = 0
    robots_disallowed: int = 0
    failed: int = 0
    missing_fields: int = 0
    written: int = 0
    already_done: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Page:
    url: str
    text: str


def decode_body(content: bytes, header_charset: str | None) -> str:
    """Bytes → text: the header's charset, else a <meta charset>, else UTF-8; undecodable bytes are replaced.

    A charset that is unknown, not a text encoding, a host-name or escape codec (idna, punycode, unicode_escape), or
    that fails outright falls back to UTF-8.
    """
    encoding = header_charset
    if not encoding:
        match = re.search(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_-]+)", content[:2048], re.IGNORECASE)
        encoding = match.group(1).decode("ascii") if match else "utf-8"
    try:
        if codecs.lookup(encoding).name not in NOT_PAGE_ENCODINGS:
            return content.decode(encoding, errors="replace")
    except (LookupError, ValueError):  # ValueError covers UnicodeError, which idna raises despite errors="replace"
        pass
    return content.decode("utf-8", errors="replace")


def _text(node) -> str:
    return re.sub(r"[ \t]+", " ", node.text(separator=" ", strip=False)).strip() if node is not None else ""


def _meta(tree: HTMLParser, *names: str) -> str:
    for name in names:
        node = tree.css_first(f'meta[property="{name}"]') or tree.css_first(f'meta[name="{name}"]')
        if node is not None and (node.attributes.get("content") or "").strip():
            return node.attributes["content"].strip()
    return ""


def parse_product(html: str, url: str) -> dict | None:
    """A product page → record, or None when it lacks a title or a description."""
    tree = HTMLParser(html)
    title = _text(tree.css_first("h1")) or _meta(tree, "og:title") or _text(tree.css_first("title"))
    description_node = tree.css_first('[itemprop="description"]') or tree.css_first(".product-description")
    if description_node is not None:
        for block in description_node.css("p, li, br, h2, h3"):
            block.insert_after("\n")
        description = "\n".join(
            line.strip() for line in description_node.text(strip=False).splitlines() if line.strip()
        )
    else:
        description = _meta(tree, "og:description", "description")
    if not title or not description:
        return None
    price_node = tree.css_first('[itemprop="price"]')
    price = (price_node.attributes.get("content") or _text(price_node)) if price_node is not None else ""
    price = price or _meta(tree, "product:price:amount") or _text(tree.css_first(".price"))
    currency_node = tree.css_first('[itemprop="priceCurrency"]')
    currency = (currency_node.attributes.get("content") or "") if currency_node is not None else ""
    currency = currency or _meta(tree, "product:price:currency")
    tags = [_text(a) for a in tree.css('a[rel="tag"], .tags a, .tags li') if _text(a)]
    canonical = tree.css_first('link[rel="canonical"]')
    record = {
        "url": urljoin(url, canonical.attributes.get("href") or "") if canonical is not None else url,
        "title": title,
        "description": description,
        "price": f"{price} {currency}".strip() if price else "",
        "tags": list(dict.fromkeys(tags)),
    }
    record["text"] = render_record(record)  # the page layout synthetic listings share
    return record


def parse_index(html: str, base_url: str, product_pattern: str) -> tuple[list[str], str | None]:
    """An index page → (product URLs in page order, next index page URL or None). Malformed links are skipped."""
    tree = HTMLParser(html)
    pattern = re.compile(product_pattern)
    products: list[str] = []
    for a in tree.css("a[href]"):
        url = _absolute(base_url, a.attributes.get("href"))
        if url and pattern.search(urlsplit(url).path) and url not in products:
            products.append(url)
    nxt = tree.css_first('a[rel="next"]') or tree.css_first('link[rel="next"]')
    return products, _absolute(base_url, nxt.attributes.get("href")) if nxt is not None else None


def _absolute(base_url: str, href: str | None) -> str | None:
    """A link made absolute, without its fragment; None for an empty or malformed one (e.g. "http://[::1")."""
    if not href:
        return None
    try:
        url = urldefrag(urljoin(base_url, href))[0]
        urlsplit(url).port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        return None
    return url


class Crawler:
    def __init__(self, config: ScrapeConfig):
        self.config = config
        self.guard = HopGuard.build(config.allowed_hosts, config.start_urls, config.allow_loopback)
        self.cache = Path(config.cache_dir) if config.cache_dir else cache_dir() / "scrape"
        self.cache.mkdir(parents=True, exist_ok=True)
        # no proxies from the environment: the address check must see the peer we really connect to
        self.client = httpx.Client(
            headers={"User-Agent": config.user_agent}, timeout=config.timeout_s, follow_redirects=False, trust_env=False
        )
        self.stats = Stats()
        self._robots: dict[str, tuple[float, RobotFileParser]] = {}  # origin → (fetched at, rules)
        self._last_request = 0.0
        self._crawl_delay = 0.0  # a robots.txt Crawl-delay slows us further, never speeds us up
        self._lock = threading.Lock()

    # --- politeness ---
    def _wait_turn(self) -> None:
        with self._lock:
            interval = max(1.0 / self.config.rate_limit_per_s, self._crawl_delay)
            gap = interval - (time.monotonic() - self._last_request)
            if gap > 0:
                time.sleep(gap)
            self._last_request = time.monotonic()

    def allowed(self, url: str) -> bool:
        """robots.txt of the URL's origin says we may fetch it (rules are reloaded after robots_ttl_s)."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        loaded = self._robots.get(origin)
        if loaded is None or time.time() - loaded[0] > self.config.robots_ttl_s:
            loaded = self._load_robots(f"{origin}/robots.txt")
            self._robots[origin] = loaded
            delay = loaded[1].crawl_delay(self.config.user_agent)
            if delay:
                self._crawl_delay = max(self._crawl_delay, min(float(delay), self.config.max_crawl_delay_s))
        return loaded[1].can_fetch(self.config.user_agent, url)

    def _load_robots(self, url: str) -> tuple[float, RobotFileParser]:
        """(when fetched, rules). RFC 9309: 2xx → the rules; 4xx → allow all; 5xx, 429, a network error or a refused
        hop → disallow all.

        A 2xx body is cached on disk for robots_ttl_s; failures are not, so the next run asks again (this run keeps
        them for robots_ttl_s, after max_attempts tries).
        """
        parser = RobotFileParser(url)
        path = self._cache_path(url)
        entry = _read_cache(path, url) if path.exists() else None
        if entry is not None and time.time() - entry.get("fetched_at", 0.0) <= self.config.robots_ttl_s:
            self.stats.from_cache += 1
            parser.parse(decode_body(base64.b64decode(entry["body"]), entry.get("charset")).splitlines())
            return entry["fetched_at"], parser
        fetched_at = time.time()
        try:
            fetched = self._fetch(url, obey_robots=False)
        except (HopRefused, Retryable, httpx.HTTPError) as error:
            parser.disallow_all = True
            self.stats.errors.append(f"{url}: {_reason(error)}; disallowing the whole site")
            return fetched_at, parser
        if 200 <= fetched.status < 300:
            self._store(path, fetched, fetched_at)
            parser.parse(decode_body(fetched.body, fetched.charset).splitlines())
        elif 400 <= fetched.status < 500:
            parser.allow_all = True
        else:
            parser.disallow_all = True
            self.stats.errors.append(f"{url}: HTTP {fetched.status}; disallowing the whole site")
        return fetched_at, parser

    # --- fetching ---
    def _cache_path(self, url: str) -> Path:
        return self.cache / f"{hashlib.sha256(url.encode()).hexdigest()}.json"

    def _store(self, path: Path, fetched: Fetched, fetched_at: float) -> None:
        body = base64.b64encode(fetched.body).decode("ascii")
        entry = {"url": fetched.url, "charset": fetched.charset, "fetched_at": fetched_at, "body": body}
        atomic_write_text(path, json.dumps(entry))

    def _fail(self, url: str, reason: str) -> None:
        self.stats.failed += 1
        self.stats.errors.append(f"{url}: {reason}")

    def _get(self, url: str) -> Page | None:
        """A checked, robots-allowed page, from the cache or fetched with retries; None when it could not be had
        (counted in stats)."""
        try:
            self.guard.check(url)
        except HopRefused as error:
            self._fail(url, str(error))
            return None
        if not self.allowed(url):
            self.stats.robots_disallowed += 1
            return None
        path = self._cache_path(url)
        if path.exists():
            entry = _read_cache(path, url)
            self.stats.from_cache += 1
            return Page(entry["url"], decode_body(base64.b64decode(entry["body"]), entry.get("charset")))
        try:
            fetched = self._fetch(url, obey_robots=True)
        except (HopRefused, Retryable, httpx.HTTPError) as error:
            self._fail(url, _reason(error))
            return None
        if fetched.status != 200:
            self._fail(url, f"HTTP {fetched.status}")
            return None
        self.stats.fetched += 1
        self._store(path, fetched, time.time())
        return Page(fetched.url, decode_body(fetched.body, fetched.charset))

    def _fetch(self, url: str, obey_robots: bool) -> Fetched:
        config = self.config

        @retrying(config.max_attempts, config.backoff_s, transient=(httpx.TransportError,))
        def attempt() -> Fetched:
            fetched = self._follow_redirects(url, obey_robots)
            if fetched.status == 429 or fetched.status >= 500:
                retry_after = fetched.retry_after
                wait_s = min(float(retry_after), config.max_retry_after_s) if retry_after.isdigit() else 0.0
                raise Retryable(f"HTTP {fetched.status}", wait_s)
            return fetched

        return attempt()

    def _follow_redirects(self, url: str, obey_robots: bool) -> Fetched:
        """Follow redirects one hop at a time: each hop is host-checked, waits its turn and (for pages, not for
        robots.txt itself) is checked against robots.txt."""
        seen = {url}
        for _ in range(self.config.max_redirects + 1):
            self._wait_turn()
            fetched = self._request(url)
            if fetched.location is None:
                return fetched
            url = urldefrag(urljoin(url, fetched.location))[0]
            if url in seen:
                raise HopRefused(f"redirect loop at {url}")
            self.guard.check(url)
            self.guard.check_address(url)  # before robots.txt, which would otherwise be asked of that address first
            if obey_robots and not self.allowed(url):
                raise HopRefused(f"redirect to robots-disallowed {url}")
            seen.add(url)
        raise HopRefused(f"more than {self.config.max_redirects} redirects")

    def _request(self, url: str) -> Fetched:
        """One GET of a checked URL: its addresses and the connected peer are checked, and the body is streamed
        with a size cap and a deadline (timeout_s alone bounds each read, not a server that trickles bytes)."""
        self.guard.check(url)
        self.guard.check_address(url)
        deadline = time.monotonic() + self.config.timeout_s
        with self.client.stream("GET", url, follow_redirects=False) as response:
            stream = response.extensions.get("network_stream")
            self.guard.check_peer(url, stream.get_extra_info("server_addr") if stream is not None else None)
            headers = response.headers
            if response.is_redirect:
                return Fetched(
                    url, response.status_code, None, b"", headers.get("Retry-After", ""), headers["Location"]
                )
            if not 200 <= response.status_code < 300:
                return Fetched(url, response.status_code, None, b"", headers.get("Retry-After", ""))
            limit = self.config.max_response_bytes
            declared = headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise HopRefused(f"response of {declared} bytes exceeds max_response_bytes={limit}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise HopRefused(f"response exceeds max_response_bytes={limit}")
                if time.monotonic() > deadline:
                    raise HopRefused(f"response took longer than timeout_s={self.config.timeout_s}")
            return Fetched(str(response.url), response.status_code, response.charset_encoding, bytes(body), "")

    # --- crawl ---
    def crawl(self) -> Stats:
        out = Path(self.config.out)
        done = read_done(out)
        self.stats.already_done = len(done)
        product_urls = self._discover()
        if not product_urls and not done:
            why = f"first failure: {self.stats.errors[0]}" if self.stats.errors else "check product_pattern"
            raise UserError(f"no listings found at {', '.join(self.config.start_urls)} ({why})")
        todo = [u for u in product_urls if u not in done][: max(0, self.config.max_products - len(done))]
        with out.open("a", encoding="utf-8") as sink:
            for url in tqdm(todo, desc="product pages", leave=False):
                page = self._get(url)
                if page is None:
                    continue
                record = parse_product(page.text, page.url)
                if record is None:
                    self.stats.missing_fields += 1
                    continue
                if record["url"] in done:
                    continue
                record["url_fetched"] = url
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
                done.update({url, record["url"]})
                self.stats.written += 1
        return self.stats

    def _discover(self) -> list[str]:
        products: list[str] = []
        for start in self.config.start_urls:
            url: str | None = start
            seen: set[str] = set()
            while url and url not in seen and len(seen) < self.config.max_index_pages:
                seen.add(url)
                page = self._get(url)
                if page is None:
                    break
                found, url = parse_index(page.text, page.url, self.config.product_pattern)
                products += [p for p in found if p not in products and self.guard.allows(p)]
        return products


@dataclass
class Fetched:
    """One HTTP response, read within the limits: the final URL, status, charset, body, Retry-After, Location."""

    url: str
    status: int
    charset: str | None
    body: bytes
    retry_after: str
    location: str | None = None


def _reason(error: Exception) -> str:
    return str(error) or type(error).__name__


def _read_cache(path: Path, url: str) -> dict:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        base64.b64decode(entry["body"], validate=True)
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"corrupt cache file {path}: delete it to fetch {url} again") from None
    return entry


def read_done(out: Path) -> set[str]:
    """URLs already in the output; a torn last line (a crash mid-write) is cut off so appends stay valid JSONL."""
    if not out.exists():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.touch()
        except OSError as error:
            raise UserError(f"cannot write {out}: {error.strerror or error}") from None
        return set()
    raw = drop_torn_tail(out)
    done: set[str] = set()
    for number, line in enumerate(split_jsonl(raw.decode("utf-8")), 1):
        try:
            record = json.loads(line)
            done.update({record["url"], record.get("url_fetched", record["url"])})
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{out}:{number}: not a scraped record; fix or remove the line") from None
    return done
