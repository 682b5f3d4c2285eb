"""Synthetic listings: disallowed ones per policy category (single and multi-label), hard negatives, and the seed.

Two backends behind one interface, `Backend.generate(requests) -> list[Generated]`:

- `TemplateBackend` (offline default): the grammar in data_gen/templates.py with the lexicons in configs/data/lexicon/.
  Categories without a lexicon entry fall back to the policy's own examples, so any policy works.
- `OpenAIBackend`: any OpenAI-compatible `/chat/completions` endpoint (vLLM, a hosted API), prompted per category with
  the policy's description and examples, through the openai SDK (moderation.openai_client, which also retries);
  bounded concurrency, an on-disk response cache, token and cost counts for the manifest. Malformed answers are
  counted and skipped, never written.

Every request carries a stable key, and each listing is generated from a RNG seeded by (seed, key), so the output does
not depend on order or concurrency. A `held_out` request is meant for dev/test: the template backend then draws only
from the held-out phrase pools (see `Kind.side`), which train requests never use.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from data_gen.templates import (
    SIDES,
    STYLES,
    CategoryKinds,
    PolicyLexicon,
    SeedLexicon,
    SharedStyle,
    apart,
    combine,
    fallback_kinds,
    fill,
    phrases_of,
    pick_slots,
    render,
    side_kinds,
    side_name,
    three_sides,
    without,
)
from moderation.errors import UserError
from moderation.files import atomic_write_text
from moderation.policy import Policy
from moderation.secrets import ApiKeyEnv, RedactedUrl, redact_url

RequestKind = Literal["disallowed", "hard_negative", "seed"]


@dataclass(frozen=True)
class Request:
    """One listing to generate. `categories`: the violated ids (disallowed) or the one it sits next to."""

    key: str
    kind: RequestKind
    categories: tuple[str, ...]
    held_out: bool = False
    validation: bool = False

    @property
    def side(self) -> str:
        """Which phrase pools the request draws from (templates.SIDES)."""
        return side_name(self.held_out, self.validation)


def _chosen(requests: list[Request], fraction: float, salt: str | int, eligible: Callable[[Request], bool]) -> set[int]:
    """round(fraction × n) of each (kind, categories) group's eligible requests, chosen by hash."""
    groups: dict[tuple, list[int]] = {}
    for index, request in enumerate(requests):
        if eligible(request):
            groups.setdefault((request.kind, request.categories), []).append(index)
    chosen: set[int] = set()
    for indices in groups.values():
        ranked = sorted(indices, key=lambda i: hashlib.sha1(f"{salt}:{requests[i].key}".encode()).digest())
        chosen.update(ranked[: round(fraction * len(indices))])
    return chosen


def hold_out(requests: list[Request], fraction: float, seed: int) -> list[Request]:
    """Mark round(fraction × n) requests of each (kind, categories) group as held out for dev/test, chosen by hash."""
    chosen = _chosen(requests, fraction, seed, lambda r: True)
    return [replace(r, held_out=i in chosen) for i, r in enumerate(requests)]


def set_aside(requests: list[Request], fraction: float, seed: int) -> list[Request]:
    """Mark round(fraction × n) of each group's train requests for the validation slice (another hash)."""
    chosen = _chosen(requests, fraction, f"{seed}:validation", lambda r: not r.held_out)
    return [replace(r, validation=i in chosen) for i, r in enumerate(requests)]


@dataclass(frozen=True)
class Generated:
    """One listing's content. `title` and `details` are placed again deeper in its page; `templates`: the title
    and pitch templates it was filled from (empty for LLM listings), for counting template reuse across splits."""

    request: Request
    text: str
    rationale: str
    generator: str
    title: str = ""
    details: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()


class Backend(Protocol):
    def generate(self, requests: list[Request]) -> list[Generated]: ...

    def stats(self) -> dict: ...


def rng_for(seed: int, key: str) -> random.Random:
    return random.Random(f"{seed}:{key}")


class TemplateBackend:
    """Offline compositional generator. `held_out_phrases`: share of each phrase pool kept for held-out requests;
    `validation_phrases`: share of the rest kept for validation requests."""

    def __init__(
        self,
        policy: Policy,
        lexicon: PolicyLexicon,
        shared: SharedStyle,
        seed: int,
        held_out_phrases: float = 0.0,
        validation_phrases: float = 0.0,
    ):
        self.policy, self.lexicon, self.shared, self.seed = policy, lexicon, shared, seed
        self.held_out_phrases, self.validation_phrases = held_out_phrases, validation_phrases
        self.kinds: dict[str, CategoryKinds] = {}
        for category in policy.categories:
            own = fallback_kinds(category)  # the policy's own examples always take part
            extra = lexicon.categories.get(category.id)
            if extra is None:
                self.kinds[category.id] = own
            else:
                self.kinds[category.id] = CategoryKinds(
                    offers=[*extra.offers, *own.offers[:1]],
                    hard_negatives=[*extra.hard_negatives, *own.hard_negatives[:1]],
                )
        # side → the phrase pools of that side, per category, and the lexicon-wide slots
        cut = {
            c: three_sides(k, CategoryKinds.side, seed, held_out_phrases, validation_phrases)
            for c, k in self.kinds.items()
        }
        sides = apart(
            {s: {c: cut[c][s] for c in cut} for s in SIDES},
            lambda side: phrases_of([k for c in side.values() for k in c.kinds]),
            lambda side, taken: {c: k.without(taken) for c, k in side.items()},
            held_out_phrases,
            validation_phrases,
        )
        slots = three_sides(lexicon.slots, pick_slots, seed, held_out_phrases, validation_phrases)
        self.sides = {s: (sides[s], slots[s]) for s in SIDES}
        self.covered = sorted(set(lexicon.categories) & set(policy.category_ids))

    def generate(self, requests: list[Request]) -> list[Generated]:
        return [self._one(r) for r in tqdm(requests, desc="template listings", leave=False)]

    def _one(self, request: Request) -> Generated:
        rng = rng_for(self.seed, request.key)
        pool = "offers" if request.kind == "disallowed" else "hard_negatives"
        side, slots = self.sides[request.side]
        specs = []
        for category_id in request.categories:
            specs.append(fill(rng.choice(getattr(side[category_id], pool)), rng, slots))
        spec = specs[0] if len(specs) == 1 else combine(specs[0], specs[1])
        text, style = render(spec, rng, self.shared)
        return Generated(
            request, text, spec.why, f"template/{pool}/{style}", spec.title, tuple(spec.details), spec.templates
        )

    def stats(self) -> dict:
        stats = {"backend": "template", "lexicon_categories": self.covered, "held_out_phrases": self.held_out_phrases}
        return stats | ({"validation_phrases": self.validation_phrases} if self.validation_phrases else {})


def seed_sides(lexicon: SeedLexicon, seed: int, fraction: float, validation: float = 0.0) -> dict:
    """side → (the seed kinds of that side, the lexicon-wide slots of that side)."""
    kinds = apart(
        three_sides(lexicon.kinds, side_kinds, seed, fraction, validation), phrases_of, without, fraction, validation
    )
    slots = three_sides(lexicon.slots, pick_slots, seed, fraction, validation)
    return {s: (kinds[s], slots[s]) for s in SIDES}


def seed_listings(
    lexicon: SeedLexicon,
    shared: SharedStyle,
    requests: list[Request],
    seed: int,
    held_out_phrases: float = 0.0,
    validation_phrases: float = 0.0,
) -> list[Generated]:
    """The allowed seed corpus, one listing per request, kinds drawn round-robin so every product type is present."""
    sides = seed_sides(lexicon, seed, held_out_phrases, validation_phrases)
    out = []
    for i, request in enumerate(tqdm(requests, desc="seed listings", leave=False)):
        rng = rng_for(seed, request.key)
        kinds, slots = sides[request.side]
        kind = kinds[i % len(kinds)]
        spec = fill(kind, rng, slots)
        text, style = render(spec, rng, shared)
        generator = f"template/seed/{kind.kind.replace(' ', '_')}/{style}"
        out.append(Generated(request, text, spec.why, generator, spec.title, tuple(spec.details), spec.templates))
    return out


# --- OpenAI-compatible backend ---------------------------------------------------------------------------------------


class OpenAIConfig(BaseModel):
    """An OpenAI-compatible chat endpoint. The key is read from the environment variable named in `api_key_env`."""

    model_config = ConfigDict(extra="forbid")

    base_url: RedactedUrl = Field(
        "http://127.0.0.1:8000/v1", description="endpoint base URL (…/v1); saved without credentials or query"
    )
    model: str = Field("Qwen/Qwen2.5-7B-Instruct", description="model name sent to the endpoint")
    api_key_env: ApiKeyEnv = Field(
        "OPENAI_API_KEY", description="variable holding the API key, named *_API_KEY or *_TOKEN (may be unset)"
    )
    concurrency: int = Field(4, ge=1, le=64, description="parallel requests")
    max_attempts: int = Field(
        4, ge=1, description="attempts per request: the SDK retries timeouts, 429 and 5xx with its own backoff"
    )
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    temperature: float = Field(1.0, ge=0, le=2, description="sampling temperature")
    max_tokens: int = Field(400, ge=16, description="completion budget per listing")
    usd_per_1k_prompt_tokens: float = Field(0.0, ge=0, description="for the cost estimate in the manifest")
    usd_per_1k_completion_tokens: float = Field(0.0, ge=0, description="for the cost estimate")
    cache_dir: str | None = Field(None, description="response cache (default: <project cache>/synth)")


SYSTEM_PROMPT = (
    "You write realistic listings for a digital-products marketplace, to train a content moderator. "
    "Write like a real seller: vary length, tone and formatting. Reply with a JSON object only: "
    '{"listing": "<the listing text>", "rationale": "<one sentence citing the specific cue in the listing>"}'
)


@dataclass
class _Counters:
    requests: int = 0
    cache_hits: int = 0
    failed: int = 0
    malformed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)


class OpenAIBackend:
    def __init__(self, policy: Policy, config: OpenAIConfig, seed: int, cache_root: Path):
        import openai  # here, not at module level: the template backend never pays for loading the SDK

        from moderation.openai_client import openai_client

        self.policy, self.config, self.seed = policy, config, seed
        self.cache = Path(config.cache_dir) if config.cache_dir else cache_root / "synth"
        self.counters = _Counters()
        self._client = openai_client(
            config.base_url,
            config.api_key_env,
            timeout_s=config.timeout_s,
            max_retries=config.max_attempts - 1,
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [self._count_request]}),
        )

    def _count_request(self, _request) -> None:
        self.counters.requests += 1  # every HTTP request, the SDK's retries included

    def messages(self, request: Request) -> list[dict[str, str]]:
        rng = rng_for(self.seed, request.key)
        style = rng.choice(STYLES)
        length = rng.choice(("one line", "two or three sentences", "a short paragraph and a bullet list", "120 words"))
        cats = [self.policy.category(c) for c in request.categories]
        if request.kind == "disallowed":
            what = " and ".join(f"{c.title} ({c.description})" for c in cats)
            examples = "; ".join(e for c in cats for e in c.disallowed_examples)
            task = f"Write one listing that clearly violates: {what}. Examples of violations: {examples}."
        else:
            c = cats[0]
            task = (
                f"Write one listing that looks close to {c.title} but is allowed: {c.allowed_nearby} "
                f"Examples: {'; '.join(c.allowed_examples)}. It must not violate: {c.description}"
            )
        user = f"{task} Use a '{style}' layout, length: {length}. Invent new specifics; do not copy the examples."
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def generate(self, requests: list[Request]) -> list[Generated]:
        with ThreadPoolExecutor(self.config.concurrency) as pool:
            results = list(tqdm(pool.map(self._one, requests), total=len(requests), desc="llm listings", leave=False))
        done = [r for r in results if r is not None]
        if requests and not done:
            first = self.counters.errors[0] if self.counters.errors else "no usable answer"
            endpoint = redact_url(self.config.base_url)
            raise UserError(f"the synth endpoint {endpoint} produced no usable listing ({first})")
        return done

    def _one(self, request: Request) -> Generated | None:
        messages = self.messages(request)
        body = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "seed": self.seed,
        }
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        path = self.cache / f"{key}.json"
        if path.exists():
            try:
                content = json.loads(path.read_text(encoding="utf-8"))["content"]
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(f"corrupt cache file {path}: delete it to fetch again") from None
            self.counters.cache_hits += 1
        else:
            content = self._post(body, request.key)
            if content is None:
                return None
        parsed = parse_listing_json(content)
        if parsed is None:
            self.counters.malformed += 1
            self.counters.errors.append(f"{request.key}: malformed answer")
            return None
        if not path.exists():
            self.cache.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"content": content}))
        text, rationale = parsed
        return Generated(request, text, rationale, f"openai/{self.config.model}")

    def _post(self, body: dict, key: str) -> str | None:
        """The completion's text; "" when the reply is not a chat completion (counted as malformed by the caller);
        None when the request failed after the SDK's retries (counted here)."""
        import openai

        from moderation.openai_client import describe

        try:
            response = self._client.chat.completions.create(**body)
            content = response.choices[0].message.content
        except openai.APIError as error:
            self.counters.failed += 1
            self.counters.errors.append(f"{key}: {describe(error)}")
            return None
        except (ValueError, IndexError, AttributeError, TypeError):  # a 200 whose body is not a chat completion
            return ""
        if response.usage is not None:
            self.counters.prompt_tokens += response.usage.prompt_tokens or 0
            self.counters.completion_tokens += response.usage.completion_tokens or 0
        return content if isinstance(content, str) else ""

    def stats(self) -> dict:
        c = self.counters
        cost = (
            c.prompt_tokens / 1000 * self.config.usd_per_1k_prompt_tokens
            + c.completion_tokens / 1000 * self.config.usd_per_1k_completion_tokens
        )
        return {
            "backend": "openai",
            "base_url": redact_url(self.config.base_url),
            "model": self.config.model,
            "http_requests": c.requests,
            "cache_hits": c.cache_hits,
            "failed": c.failed,
            "malformed": c.malformed,
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "estimated_cost_usd": round(cost, 6),
        }


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def parse_listing_json(content: str) -> tuple[str, str] | None:
    """(listing, rationale) from the model's JSON answer (code fences tolerated), or None when malformed."""
    try:
        obj = json.loads(_FENCE.sub("", content.strip()))
    except (ValueError, AttributeError):
        return None
    if not isinstance(obj, dict):
        return None
    listing, rationale = obj.get("listing"), obj.get("rationale")
    if not isinstance(listing, str) or not listing.strip() or not isinstance(rationale, str) or not rationale.strip():
        return None
    return listing.strip(), rationale.strip()
