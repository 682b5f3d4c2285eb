"""The offline listing grammar: product "kinds" with slots, rendered in many listing styles.

Allowed seed listings, hard negatives and disallowed listings all go through the same `render` with the same style
and noise distributions, so that layout, emoji, prices, typos and length carry no information about the label: only
the content does. Kinds live in YAML lexicons (configs/data/lexicon/), not in code:

    titles/pitches/details: text with {slots}; one value per slot is drawn per listing and reused everywhere in it
    why: the rationale, built from the same slots, so it cites this listing's own content
    slots: values per slot (a kind's own, else the lexicon file's `slots`)

Held-out phrasings: `Kind.side(held_out, ...)` keeps a hash-chosen share of every title, pitch, detail and slot-value
list for dev/test only, so eval listings use wording the training listings never show. A phrase is hashed on its own
text, so it lands on the same side in every list it appears in. `three_sides` cuts a second share from what is left
for a validation slice: wording neither train nor dev/test shows, the place training choices are made.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from moderation.errors import UserError
from moderation.policy import Category

_FORMATTER = string.Formatter()
_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) ([aeiouAEIOU](?!ni|se|sa|ser))")  # "a online" → "an online" (rationales only)


class Kind(BaseModel):
    """One product kind (allowed) or violation kind (disallowed / hard negative)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = ""
    titles: list[str] = Field(min_length=1)
    pitches: list[str] = Field(min_length=1)
    details: list[str] = Field(default_factory=list)
    why: str = Field(min_length=1, description="rationale with slots")
    tags: list[str] = Field(default_factory=list)
    slots: dict[str, list[str]] = Field(default_factory=dict)

    def side(self, held_out: bool, seed: int, fraction: float) -> Kind | None:
        """This kind with only the train-side (held_out=False) or the eval-side phrases of each list (tags too), or
        None when that side shows no phrase carrying a slot the rationale cites: the kind then serves the other side
        only (borrowing the other side's phrases would put one template in train and dev/test)."""
        lists = {f: pick(getattr(self, f), held_out, seed, fraction) for f in ("titles", "pitches", "details", "tags")}
        return self._usable(lists | {"slots": pick_slots(self.slots, held_out, seed, fraction)})

    def without(self, phrases: set[str]) -> Kind | None:
        """This kind minus the titles and pitches in `phrases`, or None when that leaves it unusable."""
        return self._usable({f: [t for t in getattr(self, f) if t not in phrases] for f in ("titles", "pitches")})

    def _usable(self, update: dict) -> Kind | None:
        kind = self.model_copy(update=update)
        shown = {n for t in kind.titles + kind.pitches + kind.details for n in slot_names(t)}
        if not kind.titles or not kind.pitches or not set(slot_names(self.why)) <= shown:
            return None
        return kind

    @property
    def atomic(self) -> bool:
        """One title or one pitch: it cannot be split into sides, so the whole kind goes to one side."""
        return len(self.titles) < 2 or len(self.pitches) < 2


def side_kinds(kinds: list[Kind], held_out: bool, seed: int, fraction: float) -> list[Kind]:
    """The kinds of one side: splittable kinds with that side's phrases; atomic kinds (e.g. built from a policy's
    single example) whole, chosen by hash, and a lone atomic kind beside splittable ones on the train side only, so
    no title+pitch template is used on both sides. A list of one atomic kind alone serves both sides."""
    atomic = [k for k in kinds if k.atomic]
    split = [s for k in kinds if not k.atomic and (s := k.side(held_out, seed, fraction)) is not None]
    if len(atomic) == 1 and len(atomic) < len(kinds):
        atomic = [] if held_out else atomic
    elif fraction > 0:
        atomic = pick(atomic, held_out, seed, fraction, by=[f"{k.titles[0]}|{k.pitches[0]}" for k in atomic])
    return _some(split + atomic, kinds, "held-out" if held_out else "train")


def phrases_of(kinds: list[Kind]) -> set[str]:
    return {t for k in kinds for t in k.titles + k.pitches}


def without(kinds: list[Kind], phrases: set[str]) -> list[Kind]:
    """Held-out kinds minus the titles and pitches train kinds use: a phrase shared by several kinds can land on the
    train side in one list and the held-out side in another; it then stays on the train side only."""
    return _some([w for k in kinds if (w := k.without(phrases)) is not None], kinds, "held-out")


def _some(chosen: list[Kind], kinds: list[Kind], side: str) -> list[Kind]:
    if not chosen:
        raise UserError(f"lexicon: no kind of {kinds[0].kind or kinds[0].titles[0]!r}'s group has {side} phrases")
    return chosen


class CategoryKinds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    offers: list[Kind] = Field(min_length=1)
    hard_negatives: list[Kind] = Field(min_length=1)

    def side(self, held_out: bool, seed: int, fraction: float) -> CategoryKinds:
        return CategoryKinds(
            offers=side_kinds(self.offers, held_out, seed, fraction),
            hard_negatives=side_kinds(self.hard_negatives, held_out, seed, fraction),
        )

    @property
    def kinds(self) -> list[Kind]:
        return [*self.offers, *self.hard_negatives]

    def without(self, phrases: set[str]) -> CategoryKinds:
        return CategoryKinds(offers=without(self.offers, phrases), hard_negatives=without(self.hard_negatives, phrases))


class SharedStyle(BaseModel):
    """Style material every listing draws from, whatever its label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generic_details: list[str]
    openers: list[str]
    closers: list[str]
    delivery: list[str]
    emoji: list[str]
    currencies: list[str]
    amounts: list[str]
    price_phrases: list[str]
    tags_intro: list[str]


class SeedLexicon(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slots: dict[str, list[str]] = Field(default_factory=dict)
    kinds: list[Kind] = Field(min_length=1)

    def plus(self, more: SeedLexicon) -> SeedLexicon:
        """This lexicon with `more`'s kinds after its own (a slot both define takes `more`'s values)."""
        return SeedLexicon(slots={**self.slots, **more.slots}, kinds=[*self.kinds, *more.kinds])


class PolicyLexicon(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slots: dict[str, list[str]] = Field(default_factory=dict)
    categories: dict[str, CategoryKinds] = Field(default_factory=dict)

    def plus(self, more: PolicyLexicon) -> PolicyLexicon:
        """This lexicon with `more`'s offers and look-alikes after its own, category by category (a slot both define
        takes `more`'s values)."""
        categories = dict(self.categories)
        for category, kinds in more.categories.items():
            own = categories.get(category)
            if own is not None:
                kinds = CategoryKinds(
                    offers=[*own.offers, *kinds.offers], hard_negatives=[*own.hard_negatives, *kinds.hard_negatives]
                )
            categories[category] = kinds
        return PolicyLexicon(slots={**self.slots, **more.slots}, categories=categories)


def _held_out_score(text: str, seed: int) -> float:
    digest = hashlib.sha1(f"{seed}:{text.strip().lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out_mask(items: list[str], seed: int, fraction: float) -> list[bool]:
    """Which items are eval-only: those whose hash falls below `fraction`, with at least one item on each side of a
    list of two or more (the item nearest the threshold moves). A single item serves both sides."""
    scores = [_held_out_score(t, seed) for t in items]
    mask = [s < fraction for s in scores]
    if len(items) >= 2 and fraction > 0 and len(set(mask)) == 1:
        move = (max if mask[0] else min)(range(len(items)), key=scores.__getitem__)
        mask[move] = not mask[move]
    return mask


SIDES = ("train", "validation", "eval")
VALIDATION_SALT = 1_000_003  # the validation cut hashes with another seed: independent of the eval cut
T = TypeVar("T")


def side_name(held_out: bool | None, validation: bool) -> str:
    """The side a request or row draws its phrases from: dev/test's, the validation slice's, or train's."""
    return "eval" if held_out else "validation" if validation else "train"


def three_sides(
    whole: T, split: Callable[[T, bool, int, float], T], seed: int, eval_share: float, validation_share: float
):
    """{train, validation, eval} → `split(whole, held_out, seed, share)` applied twice: eval keeps `eval_share` of
    every list, validation `validation_share` of the rest, train what is left. With no validation share, validation
    is the train side (no request uses it) and train is exactly the two-way cut."""
    rest = split(whole, False, seed, eval_share)
    held = split(whole, True, seed, eval_share)
    if validation_share <= 0:
        return {"train": rest, "validation": rest, "eval": held}
    salt = seed + VALIDATION_SALT
    return {
        "train": split(rest, False, salt, validation_share),
        "validation": split(rest, True, salt, validation_share),
        "eval": held,
    }


def apart(
    sides: dict[str, T],
    phrases: Callable[[T], set[str]],
    without: Callable[[T, set[str]], T],
    eval_share: float,
    validation_share: float,
) -> dict[str, T]:
    """`three_sides` output with no title or pitch on two sides: a phrase shared by several kinds can land on different
    sides in different lists; it stays on train, then on validation (eval loses what either uses)."""
    if eval_share > 0:
        sides["eval"] = without(sides["eval"], phrases(sides["train"]) | phrases(sides["validation"]))
    if validation_share > 0:
        sides["validation"] = without(sides["validation"], phrases(sides["train"]))
    return sides


def pick(items: list[str], held_out: bool, seed: int, fraction: float, by: list[str] | None = None) -> list[str]:
    """The items of one side (see `held_out_mask`, computed on `by` when given); a one-item list is shared."""
    if len(items) < 2 or fraction <= 0:
        return list(items)
    mask = held_out_mask(by or items, seed, fraction)
    return [t for t, m in zip(items, mask, strict=True) if m == held_out]


def pick_slots(slots: dict[str, list[str]], held_out: bool, seed: int, fraction: float) -> dict[str, list[str]]:
    """`pick` for every slot. {x} and {x_title} are parallel lists (a topic and its title): both are cut to the shorter
    one's length and split by {x}'s values, so a topic and its title stay on the same side."""
    out = {}
    for name, pool in slots.items():
        family = name.removesuffix("_title")
        pair = [slots[k] for k in (family, f"{family}_title") if k in slots]
        n = min(len(p) for p in pair)
        out[name] = pick(pool[:n], held_out, seed, fraction, by=pair[0][:n])
    return out


def slot_names(text: str) -> list[str]:
    return [name for _, name, _, _ in _FORMATTER.parse(text) if name]


@dataclass
class Spec:
    """The content of one listing before styling."""

    title: str
    pitch: str
    details: list[str]
    why: str
    tags: list[str] = field(default_factory=list)
    templates: tuple[str, ...] = ()  # the title and pitch templates it was filled from (leak accounting)


def fill(kind: Kind, rng: random.Random, extra_slots: dict[str, list[str]] | None = None) -> Spec:
    """Draw a title, a pitch and details from `kind`, then fill every slot with one value used throughout."""
    title = rng.choice(kind.titles)
    pitch = rng.choice(kind.pitches)
    details = rng.sample(kind.details, k=rng.randint(min(1, len(kind.details)), min(3, len(kind.details))))
    shown = " ".join([title, pitch, *details])
    for name in slot_names(kind.why):
        # the rationale may only cite what the listing shows: bring in a detail or title that carries this slot
        if name not in slot_names(shown):
            carriers = [d for d in kind.details if name in slot_names(d)]
            if carriers:
                details.append(rng.choice(carriers))
            elif titles := [t for t in kind.titles if name in slot_names(t)]:
                title = rng.choice(titles)
            elif pitches := [p for p in kind.pitches if name in slot_names(p)]:
                pitch = rng.choice(pitches)
            shown = " ".join([title, pitch, *details])
    parts = [title, pitch, kind.why, *details]
    names = sorted({n for part in parts for n in slot_names(part)})

    def pool_of(name: str) -> list[str]:
        pool = kind.slots.get(name) or (extra_slots or {}).get(name)
        if not pool:
            raise UserError(f"lexicon kind {kind.kind or kind.titles[0]!r} uses slot {{{name}}} with no values")
        return pool

    # {x} and {x_title} are parallel lists (a topic and its title-cased name): one index serves both
    values: dict[str, str] = {}
    index: dict[str, int] = {}
    for name in names:
        pool = pool_of(name)
        family = name.removesuffix("_title")
        partner = f"{family}_title" if name == family else family
        if family in index and index[family] < len(pool):
            values[name] = pool[index[family]]
            continue
        limit = min(len(pool), len(pool_of(partner))) if partner in names else len(pool)
        index[family] = rng.randrange(limit)
        values[name] = pool[index[family]]

    def sub(text: str) -> str:
        return text.format(**values)

    why = _A_BEFORE_VOWEL.sub(r"\1n \2", sub(kind.why))
    title_text, pitch_text = _capitalise(sub(title)), _capitalise(sub(pitch))
    return Spec(title_text, pitch_text, [sub(d) for d in details], why, kind.tags, (title, pitch))


def combine(first: Spec, second: Spec) -> Spec:
    """A listing that violates two categories: the first framing carries the second offer along."""
    return Spec(
        title=f"{first.title} + {second.title[:1].lower()}{second.title[1:]}",
        pitch=f"{first.pitch} {second.pitch}",
        details=first.details[:2] + second.details[:2],
        why=f"{first.why} {second.why}",
        tags=list(dict.fromkeys(first.tags + second.tags)),
        templates=first.templates + second.templates,
    )


def fallback_kinds(category: Category) -> CategoryKinds:
    """Kinds built from a policy category's own examples, for categories the lexicon does not cover."""
    offers = _example_kinds(category.disallowed_examples, f"Offers {{}}, which is {_lower(category.description)}")
    near = _example_kinds(
        category.allowed_examples, f"{{}} is nearby content the policy allows: {_lower(category.allowed_nearby)}"
    )
    return CategoryKinds(offers=offers, hard_negatives=near)


def _example_kinds(examples: list[str], why: str) -> list[Kind]:
    """One kind per example: the example is the pitch, and the rationale quotes it (braces escaped for `fill`)."""
    return [
        Kind(titles=[_escape(_short_title(e))], pitches=[_escape(e)], why=_escape(why.format(_quote(e))))
        for e in examples
    ]


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# --- styling -------------------------------------------------------------------------------------------------------

STYLES = ("plain", "bullets", "markdown", "oneliner", "hype", "casual", "qa", "numbered")


def render(spec: Spec, rng: random.Random, shared: SharedStyle) -> tuple[str, str]:
    """Render `spec` as listing text in a random style with random noise. Returns (text, style name)."""
    # the number of detail lines is drawn independently of the kind; generic lines make up the difference
    target = rng.choice((2, 3, 3, 4, 4, 5, 6))
    details = list(spec.details)[:target]
    details += rng.sample(shared.generic_details, k=max(0, target - len(details)) + rng.choice((0, 0, 1)))
    rng.shuffle(details)
    price = _price(rng, shared) if rng.random() < 0.8 else ""
    opener = rng.choice(shared.openers)
    closer = rng.choice(shared.closers)
    style = rng.choice(STYLES)
    emoji = rng.choice(shared.emoji)
    title, pitch = spec.title, spec.pitch
    if style == "plain":
        body = " ".join(s for s in (opener, pitch, *(_sentence(d) for d in details), _sentence(price), closer) if s)
        text = f"{title}\n\n{body}"
    elif style == "bullets":
        bullets = "\n".join(f"- {d}" for d in details)
        text = f"{title} {emoji}\n{pitch}\n\nWhat you get:\n{bullets}\n\n{price}\n{closer}"
    elif style == "markdown":
        bullets = "\n".join(f"* {d}" for d in details)
        text = f"## {title}\n\n{opener} {pitch}\n\n**Included**\n{bullets}\n\n**Price:** {price or 'see options'}"
    elif style == "oneliner":
        text = f"{title} - {pitch} {price}"
    elif style == "hype":
        checks = "\n".join(f"{rng.choice(shared.emoji)} {d}" for d in details)
        text = f"{emoji} {title.upper()} {emoji}\n{pitch.rstrip('.')}!!\n{checks}\n👉 {price or 'DM for price'} {emoji}"
    elif style == "casual":
        body = ", ".join(d.lower() for d in details)
        text = f"{title.lower()}\n{opener.lower()} {pitch.lower()} {body}. {price} {closer.lower()}"
    elif style == "qa":
        text = (
            f"{title}\nWhat is it? {pitch}\nWhat's inside? {', '.join(details)}.\n"
            f"How do I get it? {_capitalise(rng.choice(shared.delivery))}.\n{price}"
        )
    else:  # numbered
        items = "\n".join(f"{i}. {d}" for i, d in enumerate(details, 1))
        text = f"{title} | {price}\n{pitch}\n{items}\n{closer}"
    if spec.tags and rng.random() < 0.3:
        intro = rng.choice(shared.tags_intro)
        tags = rng.sample(spec.tags, k=min(len(spec.tags), rng.randint(2, 4)))
        text += "\n" + (" ".join(f"#{t}" for t in tags) if intro == "#" else f"{intro} {', '.join(tags)}")
    if rng.random() < 0.25:
        text = _typos(text, rng, n=rng.randint(1, 3))
    if rng.random() < 0.15:
        text = text.replace(". ", f". {rng.choice(shared.emoji)} ", 1)
    return _tidy(text), style


def amount(rng: random.Random, shared: SharedStyle) -> str:
    """A bare price in one of the shared currency formats ("$19", "12 EUR")."""
    return rng.choice(shared.currencies).format(amount=rng.choice(shared.amounts))


def _price(rng: random.Random, shared: SharedStyle) -> str:
    return rng.choice(shared.price_phrases).format(price=amount(rng, shared))


def _typos(text: str, rng: random.Random, n: int) -> str:
    """Swap two adjacent letters in `n` random longer words: the kind of typo real sellers make."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    for i in rng.sample(candidates, k=min(n, len(candidates))):
        w = words[i]
        j = rng.randrange(1, len(w) - 2)
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def _tidy(text: str) -> str:
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _sentence(text: str) -> str:
    text = text.strip()
    return f"{text}." if text and text[-1] not in ".!?)" else text


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:].rstrip(".")


def _quote(text: str) -> str:
    return "“" + text.rstrip(".") + "”"


def _short_title(text: str, words: int = 6) -> str:
    head = re.split(r"[:,.!(]", text, maxsplit=1)[0].split()
    return " ".join(head[:words])
