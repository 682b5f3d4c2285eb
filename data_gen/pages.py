"""Listing pages: what a listing sells (content) rendered into what a scraper sees on a marketplace page (shape).

Real product pages repeat the title as a heading, show prices (often twice: "a month", "pay what you want", "$0+"),
"N ratings", call-to-action words, markdown headings and bold, bullet and numbered lists, emoji, links, and sections
(what's inside, who it is for, FAQ, refund policy, testimonials, creator bio, changelog, license, requirements) with
long tails. Every generated listing, allowed or disallowed, gets such a page, drawn independently of its label, in one
of several languages (configs/data/lexicon/pages.yaml), so that length, layout and language carry no label. A share of
listings (`ads.share`), drawn the same way, is written as a bare ad instead: a private seller's post or a shop blurb of
a few lines, no page around it, the shape of most hand-written listings.

The content sits where head+tail truncation (moderation.prompt.truncate_listing) keeps it: the title as the first
line, the description right after the price lines, the title again in the closing lines; its details are repeated in a
"details" section deeper in the page. `PageLexicon.side` keeps a hash-chosen share of every list (layouts, headings,
wording) for dev/test, so held-out rows also have unseen page shapes.

Scraped records go through `render_record`, which lays out a real page's own fields in the same surface.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from data_gen.templates import pick

SECTIONS = ("inside", "audience", "faq", "refund", "reviews", "bio", "updates", "license", "requirements", "links")
# sections that can grow without bound: they make the long tail of page lengths
GROWING = ("updates", "files", "reviews")


class Language(BaseModel):
    """The page wording of one language. Lists hold alternatives; `{slots}` are filled per page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(gt=0, description="relative share of pages in this language")
    headings: dict[str, list[str]]
    cta: list[str]
    price: list[str]
    ratings: list[str]
    sales: list[str]
    lead: list[str]
    audience: list[str]
    faq: list[list[str]]
    refund: list[str]
    reviews: list[str]
    reviewers: list[str]
    bio: list[str]
    updates: list[str]
    license: list[str]
    requirements: list[str]
    inside: list[str]
    footer: list[str]
    summaries: dict[str, list[str]] = Field(
        default_factory=dict, description="one line on what is sold, by `allowed`, <category> or near_<category>"
    )


class Length(BaseModel):
    """Target page length in characters: log-normal around `median`, clipped to [low, high]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    median: float = Field(gt=0)
    sigma: float = Field(ge=0)
    low: int = Field(ge=0)
    high: int = Field(gt=0)


class Ads(BaseModel):
    """Listings written as a bare ad: `forms` lay out the title, description, price and details in a few lines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(0.0, ge=0, le=1, description="share of listings written as an ad instead of a page")
    forms: list[str] = Field(min_length=1, description="slots: {title} {upper} {body} {price} {details}")


class PageLexicon(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    length: Length
    ads: Ads = Ads(forms=["{body}"])
    title_styles: list[str]
    heading_styles: list[str]
    bullets: list[str]
    separators: list[str]
    stars: list[str]
    emoji: list[str]
    handles: list[str]
    urls: list[str]
    files: list[str]
    file_stems: list[str]
    file_exts: list[str]
    os: list[str]
    languages: dict[str, Language] = Field(min_length=1)

    def side(self, held_out: bool, seed: int, fraction: float) -> PageLexicon:
        """Only the train-side (held_out=False) or the eval-side items of every list: unseen shapes for dev/test."""
        return PageLexicon.model_validate(_pick_tree(self.model_dump(), held_out, seed, fraction))


def _pick_tree(node, held_out: bool, seed: int, fraction: float):
    if isinstance(node, dict):
        return {k: _pick_tree(v, held_out, seed, fraction) for k, v in node.items()}
    if isinstance(node, list) and node and isinstance(node[0], list):  # FAQ pairs: split by the question
        return pick(node, held_out, seed, fraction, by=[pair[0] for pair in node])
    if isinstance(node, list):
        return pick(node, held_out, seed, fraction)
    return node


@dataclass
class Content:
    """What a listing sells: `body` is its description (already written), `details` are repeated deeper down."""

    title: str
    body: str
    price: str
    details: list[str] = field(default_factory=list)
    summary: str = ""  # a line in the page's language on what is sold, placed above the body


def language_of(rng: random.Random, lexicon: PageLexicon) -> str:
    names = sorted(lexicon.languages)
    return rng.choices(names, weights=[lexicon.languages[n].weight for n in names])[0]


def render_page(
    content: Content, rng: random.Random, lexicon: PageLexicon, language: str | None = None
) -> tuple[str, str]:
    """`content` as a full page: head (title, prices, ratings, description), sections up to a drawn length, tail; or,
    for a share `lexicon.ads.share` of listings, as a bare ad. Returns (text, language code); the page's language is
    drawn by weight unless given, an ad's is its description's."""
    language = language or language_of(rng, lexicon)
    if lexicon.ads.share and rng.random() < lexicon.ads.share:
        text = _ad(content, rng, lexicon.ads)
        return text, detect_language(text)
    return _Page(content, rng, lexicon, lexicon.languages[language]).render(), language


def _ad(content: Content, rng: random.Random, ads: Ads) -> str:
    """A bare ad: the description with the title, price or details around it as one of `ads.forms` lays them out."""
    text = rng.choice(ads.forms).format(
        title=content.title,
        upper=content.title.upper(),
        body=content.body.strip(),
        price=content.price or "$0",
        details=", ".join(content.details),
    )
    return _tidy(text)


class _Page:
    def __init__(self, content: Content, rng: random.Random, lexicon: PageLexicon, lang: Language):
        self.c, self.rng, self.lx, self.lang = content, rng, lexicon, lang
        self.heading_style = rng.choice(lexicon.heading_styles)
        self.bullet = rng.choice(lexicon.bullets)
        self.separator = rng.choice(lexicon.separators)
        handle = rng.choice(lexicon.handles)
        self.values = {
            "title": content.title,
            "price": content.price or "$0",
            "stars": rng.choice(lexicon.stars),
            "handle": handle,
            "code": "".join(rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(7)),
            "os": rng.choice(lexicon.os),
        }

    def fill(self, text: str, **extra) -> str:
        rng = self.rng
        values = {
            "n": rng.choice((3, 7, 12, 18, 25, 40, 64, 87, 120, 214, 356, 1021, 2480)),
            "count": rng.choice((5, 7, 14, 30, 45, 60, 120, 250, 800)),
            "years": rng.randint(2, 15),
            "year": rng.randint(2012, 2025),
            "version": f"{rng.randint(1, 4)}.{rng.randint(0, 12)}",
            "date": f"{rng.randint(2019, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "url": "",
            **self.values,
            **extra,
        }
        values["url"] = values["url"] or rng.choice(self.lx.urls).format(**values)
        return text.format(**values)

    def heading(self, section: str) -> str:
        h = self.rng.choice(self.lang.headings[section])
        if self.rng.random() < 0.2:
            h = f"{self.rng.choice(self.lx.emoji)} {h}"
        return self.heading_style.format(h=h, upper=h.upper())

    def bullets(self, items: list[str]) -> str:
        if self.rng.random() < 0.15:
            return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))
        return "\n".join(f"{self.bullet}{item}" for item in items)

    def some(self, pool: list, low: int, high: int) -> list:
        return self.rng.sample(pool, k=min(len(pool), self.rng.randint(low, high)))

    def price_line(self) -> str:
        return self.fill(self.rng.choice(self.lang.price))

    def head(self) -> list[str]:
        rng, lang = self.rng, self.lang
        style = rng.choice(self.lx.title_styles)
        lines = [style.format(title=self.c.title, upper=self.c.title.upper())]
        price = self.price_line()
        if rng.random() < 0.85:
            lines.append(price if rng.random() < 0.5 else f"**{price}**")
        if rng.random() < 0.6:
            lines.append(self.fill(rng.choice(lang.ratings)))
        if rng.random() < 0.5:
            lines.append(rng.choice(lang.cta))
        # greetings, links and sales counts come after the description: a short head budget keeps what is sold
        after = [self.fill(rng.choice(lang.lead))] if rng.random() < 0.35 else []
        after += [self.fill("{url}")] if rng.random() < 0.3 else []
        after += [self.fill(rng.choice(lang.sales))] if rng.random() < 0.3 else []
        return ["\n".join(lines), self.c.summary, self.c.body, "\n".join(after)]

    def section(self, name: str, size: int = 1) -> str:
        """One section; `size` scales the growing ones (more changelog entries, files, reviews)."""
        rng, lang = self.rng, self.lang
        if name == "details":
            items = self.c.details or [self.c.title]
            return f"{self.heading('details')}\n{self.bullets(items)}"
        if name == "inside":
            items = [self.fill(t, n=i) for i, t in enumerate(self.some(lang.inside, 2, 5), 1)]
            return f"{self.heading('inside')}\n{self.bullets(items)}"
        if name == "files":
            stem, ext = rng.choice(self.lx.file_stems), rng.choice(self.lx.file_exts)
            pattern = rng.choice(self.lx.files)
            count = rng.randint(4, 12) * size
            items = [pattern.format(stem=stem, ext=ext, n=i, size=rng.randint(1, 400)) for i in range(1, count + 1)]
            return f"{self.heading('inside')}\n{self.bullets(items)}"
        if name == "audience":
            return f"{self.heading('audience')}\n{self.bullets(self.some(lang.audience, 2, 4))}"
        if name == "faq":
            pairs = self.some(lang.faq, 2, 6)
            form = rng.choice(("**{q}**\n{a}", "Q: {q}\nA: {a}", "{q}\n{a}", "▸ {q}\n{a}"))
            return self.heading("faq") + "\n" + "\n\n".join(form.format(q=q, a=self.fill(a)) for q, a in pairs)
        if name == "reviews":
            count = rng.randint(2, 5) * size
            quotes = [lang.reviews[i % len(lang.reviews)] for i in range(rng.randrange(99), 99 + count)]
            names = rng.sample(lang.reviewers * (1 + count // len(lang.reviewers)), k=count)
            lines = [f"{self.fill('{stars}')} {q} — {name}" for q, name in zip(quotes, names, strict=False)]
            return f"{self.heading('reviews')}\n" + "\n".join(lines)
        if name == "updates":
            entries = [self.fill(rng.choice(lang.updates)) for _ in range(rng.randint(3, 8) * size)]
            return f"{self.heading('updates')}\n{self.bullets(entries)}"
        if name == "links":
            links = [self.fill("{url}", url="") for _ in range(rng.randint(2, 4))]
            return f"{self.heading('links')}\n{self.bullets(list(dict.fromkeys(links)))}"
        if name == "requirements":
            items = [self.fill(t) for t in self.some(lang.requirements, 1, 3)]
            return f"{self.heading('requirements')}\n{self.bullets(items)}"
        pool = {"refund": lang.refund, "bio": lang.bio, "license": lang.license}[name]
        return f"{self.heading(name)}\n" + " ".join(self.fill(t) for t in self.some(pool, 1, 4))

    def tail(self) -> str:
        rng, lang = self.rng, self.lang
        lines = []
        if rng.random() < 0.6:
            lines.append(self.price_line())
        lines.append(rng.choice(lang.cta))
        if rng.random() < 0.5:
            lines.append(self.fill(rng.choice(lang.footer)))
        if rng.random() < 0.6:  # the title closes many pages ("Buy X"): the tail of a cut page still names it
            lines.append(f"{self.c.title} {rng.choice(self.lx.emoji)}")
        return "\n".join(lines)

    def render(self) -> str:
        rng, length = self.rng, self.lx.length
        target = min(length.high, max(length.low, length.median * math.exp(rng.gauss(0, length.sigma))))
        blocks = self.head()
        head_blocks = len(blocks)
        order = rng.sample(SECTIONS, k=len(SECTIONS))
        order.insert(rng.randint(1, 3), "details")
        used = sum(map(len, blocks))
        for name in order:
            if used >= target:
                break
            block = self.section(name)
            blocks.append(block)
            used += len(block)
        size = 1
        while used < target:  # the long tail: ever longer changelogs, file lists and reviews
            size = min(size * 2, 16)
            block = self.section(rng.choice(GROWING), size)
            blocks.append(block)
            used += len(block)
        blocks.append(self.tail())
        joiner = f"\n\n{self.separator}\n\n" if self.separator else "\n\n"
        head = "\n\n".join(b for b in blocks[:head_blocks] if b)  # separators only between sections
        return _tidy(joiner.join([head, *(b for b in blocks[head_blocks:] if b)]))


def _tidy(text: str) -> str:
    lines = [re.sub(r"[ \t]+", " ", line).rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def render_record(record: dict) -> str:
    """A scraped record (title, description, price, currency, rating, rating_count, creator, tags) in the page
    layout of synthetic listings: title as heading, price and ratings lines, the description, a call to action,
    tags. Only the record's own fields appear; nothing is invented. The scraper and importer call this."""
    title = str(record.get("title") or "").strip()
    lines = [f"# {title}"] if title else []
    if record.get("creator"):
        lines.append(f"by {record['creator']}")
    price = str(record.get("price") or "").strip()
    if price:
        currency = str(record.get("currency") or "").strip()
        lines.append(f"{price} {currency}".strip() if currency and currency not in price else price)
    if record.get("rating_count"):
        rating = f"{record['rating']} " if record.get("rating") else ""
        lines.append(f"{rating}({record['rating_count']} ratings)")
    blocks = ["\n".join(lines), str(record.get("description") or "").strip()]
    if price:
        blocks.append(f"{price}\nBuy this")
    if record.get("tags"):
        blocks.append("Tags: " + ", ".join(map(str, record["tags"])))
    return _tidy("\n\n".join(b for b in blocks if b))


# --- language of a text (for scraped and imported rows, whose language nobody told us) -------------------------------

_SCRIPTS = (("ar", re.compile(r"[\u0600-\u06FF]")), ("ru", re.compile(r"[\u0400-\u04FF]")))
_KANA = re.compile(r"[\u3040-\u30FF]")
_HAN = re.compile(r"[\u4E00-\u9FFF]")
_STOPWORDS = {
    "en": ["the", "and", "you", "for", "with", "this", "your", "are", "what", "is", "of", "to", "it"],
    "es": ["el", "la", "los", "las", "y", "para", "con", "que", "es", "de", "tu", "por", "una", "del"],
    "pt": ["o", "os", "as", "e", "para", "com", "que", "é", "de", "você", "um", "uma", "do", "da", "não"],
    "fr": ["le", "la", "les", "et", "pour", "avec", "que", "est", "de", "vous", "un", "une", "des", "du"],
    "de": ["der", "die", "das", "und", "für", "mit", "ist", "du", "ein", "eine", "nicht", "ich", "zu"],
    "tr": ["ve", "bir", "bu", "için", "ile", "çok", "da", "de", "ne", "gibi", "mi", "olan"],
}
_WORD = re.compile(r"\w+")


def detect_language(text: str) -> str:
    """A rough language code from scripts and common words; enough to tally a dataset's language mix."""
    letters = max(1, sum(c.isalpha() for c in text))
    if len(_KANA.findall(text)) > 0.05 * letters:
        return "ja"
    if len(_HAN.findall(text)) > 0.2 * letters:
        return "zh"
    for code, script in _SCRIPTS:
        if len(script.findall(text)) > 0.2 * letters:
            return code
    words = _WORD.findall(text.lower())
    scores = {code: sum(w in stop for w in words) for code, stop in ((c, set(s)) for c, s in _STOPWORDS.items())}
    return max(sorted(scores), key=scores.__getitem__)
