"""Build a dataset: seed + scraped + imported allowed listings, synthetic disallowed listings, hard negatives.

    python -m data_gen build --config configs/data/default.yaml seed=1 size_scale=0.5

Steps: mark a share of the requests (dev_fraction + test_fraction of each group) as held out → generate (held-out
requests draw from held-out phrase pools that train requests never see, so dev/test measure unseen wording) →
normalise and drop empties → near-duplicate dedup (exact Jaccard, `dedup_threshold`) → drop held-out rows still similar
(`leakage_threshold`) to a train row → cluster what is still similar so a cluster never straddles splits → train rows to
train, held-out rows to dev/test stratified by label, categories and source → leakage check (0 cross-split
near-duplicates, or the build fails) → parquet + manifest.json + DATA_CARD.md + PNGs, each written atomically. Same
config and seed → byte-identical files (timings go to build_log.json).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import random
import re
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rich.console import Console

from data_gen import card
from data_gen.dedup import clusters, near_duplicate_pairs
from data_gen.importer import read_records
from data_gen.io import ensure_writable_dir
from data_gen.pages import Content, PageLexicon, detect_language, language_of, render_page, render_record
from data_gen.synth import (
    Generated,
    OpenAIBackend,
    OpenAIConfig,
    Request,
    TemplateBackend,
    hold_out,
    rng_for,
    seed_listings,
    set_aside,
)
from data_gen.templates import PolicyLexicon, SeedLexicon, SharedStyle, amount, side_name, three_sides
from moderation.config import load_config
from moderation.errors import UserError
from moderation.files import atomic_write_bytes, atomic_write_text, file_sha256
from moderation.paths import REPO_ROOT, PlainName, cache_dir
from moderation.policy import Policy, load_policy
from moderation.provenance import git_commit, versions
from moderation.splits import SPLITS, VALIDATION

KEEP_FIRST = ("train", "eval", "validation")  # which of two similar rows of different sides stays
DATA_PACKAGES = ("grpo-moderation", "pyarrow", "numpy", "scikit-learn", "matplotlib", "httpx", "pydantic")
# Earlier sources win when two listings are near-duplicates: real data over our own, our own over generated.
SOURCE_PRIORITY = ("imported", "scraped", "seed", "hard_negative", "synthetic")

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("categories", pa.list_(pa.string())),
        ("source", pa.string()),
        ("generator", pa.string()),
        ("split", pa.string()),
        ("rationale", pa.string()),
        ("near_category", pa.string()),
        ("language", pa.string()),
    ]
)


class BuildConfig(BaseModel):
    """Everything a dataset build depends on. YAML keys are these field names; CLI `key=value` overrides them."""

    model_config = ConfigDict(extra="forbid")

    name: PlainName = Field("default", description="dataset name (a plain folder name): writes <out_dir>/<name>/")
    out_dir: str = Field("data", description="parent folder of datasets")
    policy: str = Field("marketplace", description="policy name in configs/policies or a path")
    categories: list[str] | None = Field(None, description="subset of the policy's category ids (default: all)")
    seed: int = Field(0, description="same seed and config → byte-identical dataset")
    seed_listings: int = Field(1500, ge=0, description="allowed listings from the offline seed grammar")
    disallowed_per_category: int = Field(240, ge=0, description="single-category disallowed listings per category")
    multi_label: int = Field(180, ge=0, description="listings violating two categories at once")
    hard_negatives_per_category: int = Field(80, ge=0, description="allowed look-alikes per category")
    backend: Literal["template", "openai"] = Field("template", description="synthetic generator backend")
    openai: OpenAIConfig = Field(default_factory=OpenAIConfig, description="endpoint settings for backend=openai")
    lexicon_dir: str = Field(
        "configs/data/lexicon", description="shared.yaml, seed.yaml, <policy>.yaml (repo-relative ok)"
    )
    extra_seed_lexicons: list[str] = Field(
        default_factory=list,
        description="more allowed seed kinds (files in seed.yaml's format, in lexicon_dir), added after seed.yaml's: "
        "e.g. [seed_physical.yaml], physical goods and local services (docs/experiments.md, rule P)",
    )
    extra_policy_lexicons: list[str] = Field(
        default_factory=list,
        description="more violations and look-alikes (files in <policy>.yaml's format, in lexicon_dir), added after "
        "<policy>.yaml's: e.g. [marketplace_physical.yaml], private sellers' ads (docs/experiments.md, rule Q)",
    )
    scraped: list[str] = Field(default_factory=list, description="JSONL files written by `python -m data_gen scrape`")
    imported: list[str] = Field(default_factory=list, description="JSONL files written by `python -m data_gen import`")
    dedup_threshold: float = Field(0.7, gt=0, le=1, description="word-3-gram Jaccard at which the later row is dropped")
    leakage_threshold: float = Field(0.5, gt=0, le=1, description="rows this similar always share a split")
    dev_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of rows in dev (by stratum)")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="share of rows in test (by stratum)")
    held_out_phrases: float = Field(
        0.3,
        ge=0,
        lt=1,
        description="share of each phrase list (titles, pitches, details, slot values) kept for dev/test",
    )
    validation_fraction: float = Field(
        0.0,
        ge=0,
        lt=0.5,
        description="share of the generated train-side rows (by stratum) written to validation.parquet instead, drawn "
        "from their own phrase share (validation_phrases) and page shapes: a slice for training choices whose wording "
        "neither train nor dev/test shows, as dev/test's is unseen by train (0: no validation slice)",
    )
    validation_phrases: float = Field(
        0.15, ge=0, lt=1, description="share of the train-side phrase lists kept for the validation slice"
    )
    min_train_disallowed_per_category: int = Field(150, ge=0, description="fail the build below this (0: no check)")

    @model_validator(mode="after")
    def _thresholds(self) -> BuildConfig:
        if self.leakage_threshold > self.dedup_threshold:
            raise ValueError("leakage_threshold must be ≤ dedup_threshold")
        return self


def normalise(text: str) -> str:
    """NFC, unified newlines, no trailing spaces, at most one blank line in a row, stripped."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def row_id(source: str, text: str) -> str:
    return hashlib.sha1(f"{source}\n{text}".encode()).hexdigest()[:16]


def make_row(
    text: str,
    label: str,
    categories: list[str],
    source: str,
    generator: str,
    rationale: str,
    near: str = "",
    held_out: bool | None = None,
    language: str = "",
    content: str = "",
    templates: tuple[str, ...] = (),
    validation: bool = False,
):
    """One dataset row. Not written: `held_out` (goes to dev/test; None: decided later by hash of its text),
    `validation` (goes to the validation slice), `content` (what the listing sells without its page: dedup and
    leakage compare this), `templates` (title and pitch templates it was filled from)."""
    return {
        "text": text,
        "label": label,
        "categories": categories,
        "source": source,
        "generator": generator,
        "rationale": rationale,
        "near_category": near,
        "language": language or detect_language(text),
        "held_out": held_out,
        "validation": validation,
        "content": content or text,
        "templates": templates,
    }


class Pages:
    """Renders generated content into pages; held-out requests get the held-out page shapes and wording."""

    def __init__(self, lexicon: PageLexicon, shared: SharedStyle, seed: int, fraction: float, validation: float = 0.0):
        self.sides = three_sides(lexicon, PageLexicon.side, seed, fraction, validation)
        self.shared, self.seed = shared, seed

    def rows(self, items: list[Generated], source: str) -> list[dict]:
        rows = []
        for g in items:
            disallowed = g.request.kind == "disallowed"
            near = "" if disallowed or not g.request.categories else g.request.categories[0]
            cats = list(g.request.categories) if disallowed else []
            label = "disallow" if disallowed else "allow"
            rng = rng_for(self.seed, f"page/{g.request.key}")
            side = self.sides[g.request.side]
            language = language_of(rng, side)
            key = cats[0] if disallowed else f"near_{near}" if near else "allowed"
            summaries = side.languages[language].summaries.get(key)
            title = g.title or g.text.strip().split("\n", 1)[0]
            summary = rng.choice(summaries) if summaries else ""
            content = Content(title, g.text, amount(rng, self.shared), list(g.details), summary)
            text, language = render_page(content, rng, side, language)  # an ad's language is its text's
            held_out, validation = g.request.held_out, g.request.validation
            row = make_row(
                text, label, cats, source, g.generator, g.rationale, near, held_out, language, validation=validation
            )
            rows.append(row | {"content": g.text, "templates": g.templates})
        return rows


def read_jsonl_rows(path: str | Path, source: str, policy: Policy) -> list[dict]:
    """Rows from a scrape/import JSONL file: `text` plus optional label/categories/generator/rationale."""
    path = Path(path)
    rows = []
    for number, record in enumerate(read_records(path), 1):
        try:
            text = record["text"] if "text" in record else render_record(record)
        except (KeyError, TypeError):
            raise UserError(f"{path}: record {number} has no text field") from None
        categories = list(record.get("categories") or [])
        unknown = sorted(set(categories) - set(policy.category_ids))
        if unknown:
            raise UserError(f"{path}: record {number}: unknown category {unknown[0]!r} for policy {policy.name!r}")
        label = record.get("label", "disallow" if categories else "allow")
        if label not in ("allow", "disallow") or (label == "disallow") != bool(categories):
            raise UserError(f"{path}: record {number}: label {label!r} does not match categories {categories}")
        rows.append(
            make_row(str(text), label, categories, source, record.get("generator", source), record.get("rationale", ""))
        )
    return rows


def requests_for(categories: list[str], config: BuildConfig) -> list[Request]:
    requests = [
        Request(f"disallowed/{c}/{i:05d}", "disallowed", (c,))
        for c in categories
        for i in range(config.disallowed_per_category)
    ]
    pairs = list(itertools.combinations(categories, 2))
    if pairs:
        requests += [
            Request(f"multi/{'+'.join(pairs[i % len(pairs)])}/{i:05d}", "disallowed", pairs[i % len(pairs)])
            for i in range(config.multi_label)
        ]
    requests += [
        Request(f"hard_negative/{c}/{i:05d}", "hard_negative", (c,))
        for c in categories
        for i in range(config.hard_negatives_per_category)
    ]
    return requests


def assign_splits(rows: list[dict], cluster_of: list[int], config: BuildConfig) -> None:
    """Train rows go to train; held-out rows to dev or test, stratified by (label, categories, source, near_category),
    whole similarity clusters together. The caller makes sure no cluster mixes train and held-out rows."""
    members: dict[int, list[int]] = defaultdict(list)
    for index, cluster in enumerate(cluster_of):
        members[cluster].append(index)
    strata: dict[tuple, list[int]] = defaultdict(list)
    for cluster, indices in members.items():
        first = rows[indices[0]]
        if not first["held_out"]:
            for index in indices:
                rows[index]["split"] = VALIDATION if first["validation"] else "train"
            continue
        # multi-label rows form one stratum: per-pair strata would be too small to reach dev and test
        cats = tuple(first["categories"]) if len(first["categories"]) < 2 else ("multi",)
        strata[(first["label"], cats, first["source"], first["near_category"])].append(cluster)
    fractions = {"dev": config.dev_fraction, "test": config.test_fraction}
    for key in sorted(strata):
        group = sorted(strata[key])
        random.Random(f"{config.seed}:split:{key}").shuffle(group)
        total = sum(len(members[c]) for c in group)
        filled = dict.fromkeys(fractions, 0)
        for cluster in group:
            # the split furthest below its target share takes the next cluster
            split = max(fractions, key=lambda s: (fractions[s] * total - filled[s], s == "dev"))
            filled[split] += len(members[cluster])
            for index in members[cluster]:
                rows[index]["split"] = split


def template_reuse(by_split: dict[str, list[dict]]) -> dict[str, int]:
    """Dev/test rows filled from a title or pitch template that some train row was also filled from (goal: 0)."""
    train = {t for r in by_split["train"] for t in r["templates"]}
    return {s: sum(1 for r in by_split[s] if train & set(r["templates"])) for s in ("dev", "test")}


def write_parquet(path: Path, rows: list[dict]) -> None:
    """Deterministic parquet: fixed schema, no pandas metadata, rows sorted by id."""
    rows = sorted(rows, key=lambda r: r["id"])
    table = pa.Table.from_pylist([{f: r[f] for f in SCHEMA.names} for r in rows], schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", write_statistics=False)
    atomic_write_bytes(path, buffer.getvalue())


def build(config: BuildConfig, console: Console | None = None) -> dict:
    """Build the dataset described by `config`; returns the manifest."""
    console = console or Console(stderr=True)
    timings: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    policy = load_policy(config.policy)
    categories = config.categories if config.categories is not None else list(policy.category_ids)
    unknown = [c for c in categories if c not in policy.category_ids]
    if unknown:
        raise UserError(
            f"unknown category {unknown[0]!r} in config (policy {policy.name!r} has: {', '.join(policy.category_ids)})"
        )
    if not categories:
        raise UserError("no categories selected: the dataset would have no disallowed rows")
    out = ensure_writable_dir(Path(config.out_dir) / config.name)

    # --- generate ---
    lexicon_dir = Path(config.lexicon_dir)
    if not lexicon_dir.is_absolute() and not lexicon_dir.exists():
        lexicon_dir = REPO_ROOT / lexicon_dir
    shared = load_config(SharedStyle, lexicon_dir / "shared.yaml")
    seed_lexicon = load_config(SeedLexicon, lexicon_dir / "seed.yaml")
    for name in config.extra_seed_lexicons:
        seed_lexicon = seed_lexicon.plus(load_config(SeedLexicon, lexicon_dir / name))
    policy_lexicon_path = lexicon_dir / f"{policy.name}.yaml"
    policy_lexicon = (
        load_config(PolicyLexicon, policy_lexicon_path) if policy_lexicon_path.exists() else PolicyLexicon()
    )
    for name in config.extra_policy_lexicons:
        policy_lexicon = policy_lexicon.plus(load_config(PolicyLexicon, lexicon_dir / name))
    validation = config.validation_phrases if config.validation_fraction > 0 else 0.0
    pages = Pages(
        load_config(PageLexicon, lexicon_dir / "pages.yaml"), shared, config.seed, config.held_out_phrases, validation
    )
    rows: list[dict] = []
    for path in config.imported:
        rows += read_jsonl_rows(path, "imported", policy)
    for path in config.scraped:
        rows += [r | {"label": "allow", "categories": []} for r in read_jsonl_rows(path, "scraped", policy)]
    eval_fraction = config.dev_fraction + config.test_fraction
    seeds = [Request(f"seed/{i:05d}", "seed", ()) for i in range(config.seed_listings)]
    seeds = set_aside(hold_out(seeds, eval_fraction, config.seed), config.validation_fraction, config.seed)
    rows += pages.rows(
        seed_listings(seed_lexicon, shared, seeds, config.seed, config.held_out_phrases, validation), "seed"
    )
    if config.backend == "openai":
        backend = OpenAIBackend(policy, config.openai, config.seed, cache_dir())
    else:
        backend = TemplateBackend(policy, policy_lexicon, shared, config.seed, config.held_out_phrases, validation)
    requests = hold_out(requests_for(categories, config), eval_fraction, config.seed)
    generated = backend.generate(set_aside(requests, config.validation_fraction, config.seed))
    rows += pages.rows([g for g in generated if g.request.kind == "hard_negative"], "hard_negative")
    rows += pages.rows([g for g in generated if g.request.kind == "disallowed"], "synthetic")
    lap("generate")
    console.print(f"generated {len(rows)} rows ({config.backend} backend)")

    # --- normalise, dedup, split ---
    generated_count = len(rows)
    for row in rows:
        row["text"] = normalise(row["text"])
        row["content"] = normalise(row["content"])
        row["id"] = row_id(row["source"], row["text"])
        if row["held_out"] is None:  # scraped / imported rows: held out by hash of their id
            row["held_out"] = hashlib.sha1(f"{config.seed}:{row['id']}".encode()).digest()[0] < 256 * eval_fraction
    rows = [r for r in rows if r["text"]]
    empties = generated_count - len(rows)
    rows.sort(
        key=lambda r: SOURCE_PRIORITY.index(r["source"]) if r["source"] in SOURCE_PRIORITY else len(SOURCE_PRIORITY)
    )
    # pages are drawn independently of the content: near-duplicates are judged on what the listings sell
    pairs = near_duplicate_pairs([r["content"] for r in rows], config.leakage_threshold)
    dropped: set[int] = set()
    for i, j, score in pairs:
        if score >= config.dedup_threshold and i not in dropped:
            dropped.add(j)
    dropped_by_source = Counter(rows[j]["source"] for j in dropped)
    side = [side_name(r["held_out"], r["validation"]) for r in rows]
    # a held-out (or validation) row similar to a row of another side would carry that side's wording over: drop it,
    # keeping train rows first, then dev/test's
    similar_to_train = {
        i if KEEP_FIRST.index(side[i]) > KEEP_FIRST.index(side[j]) else j
        for i, j, _ in pairs
        if side[i] != side[j] and not {i, j} & dropped
    }
    dropped |= similar_to_train
    keep = [i for i in range(len(rows)) if i not in dropped]
    remap = {old: new for new, old in enumerate(keep)}
    rows = [rows[i] for i in keep]
    kept_pairs = [(remap[i], remap[j], s) for i, j, s in pairs if i in remap and j in remap]
    assign_splits(rows, clusters(len(rows), kept_pairs), config)
    lap("dedup_split")

    # --- leakage check: recomputed from scratch on the final rows ---
    final_pairs = near_duplicate_pairs([r["content"] for r in rows], config.leakage_threshold)
    cross = [(i, j, s) for i, j, s in final_pairs if rows[i]["split"] != rows[j]["split"]]
    cross_dedup = sum(1 for *_, s in cross if s >= config.dedup_threshold)
    if cross:
        i, j, s = cross[0]
        raise UserError(
            f"leakage check failed: {len(cross)} cross-split near-duplicates "
            f"(e.g. {rows[i]['id']}~{rows[j]['id']}, Jaccard {s:.2f})"
        )
    splits = SPLITS + ((VALIDATION,) if config.validation_fraction > 0 else ())
    by_split = {s: [r for r in rows if r["split"] == s] for s in splits}
    reuse = template_reuse(by_split)
    lap("leakage_check")

    train_disallowed = Counter(c for r in by_split["train"] for c in r["categories"])
    short = [c for c in categories if train_disallowed[c] < config.min_train_disallowed_per_category]
    if short:
        raise UserError(
            f"only {train_disallowed[short[0]]} disallowed train rows for {short[0]!r} "
            f"(min_train_disallowed_per_category={config.min_train_disallowed_per_category}): "
            "raise disallowed_per_category"
        )

    # --- write ---
    for split in splits:
        write_parquet(out / f"{split}.parquet", by_split[split])
    if VALIDATION not in splits:  # a slice left by an earlier build of this folder would be used for choices
        (out / f"{VALIDATION}.parquet").unlink(missing_ok=True)
    style = card.style_baseline(by_split["train"], by_split["test"])
    plots = card.write_plots(out, rows)
    lap("write")
    stats = {
        "generated": generated_count,
        "dropped_empty": empties,
        "dropped_near_duplicates": len(dropped) - len(similar_to_train),
        "dropped_held_out_similar_to_train": len(similar_to_train),
        "dropped_near_duplicates_by_source": dict(sorted(dropped_by_source.items())),
        "similar_pairs_kept_together": len(kept_pairs),
        "cross_split_near_duplicates": len(cross),
        "cross_split_near_duplicates_at_dedup_threshold": cross_dedup,
        "held_out_rows_reusing_train_template": reuse,
        "rows": len(rows),
    }
    manifest = {
        "name": config.name,
        "policy": policy.name,
        "categories": categories,
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "git_commit": git_commit() or "unknown",
        "versions": versions(DATA_PACKAGES),
        "backend": backend.stats(),
        "dedup": stats,
        "counts": card.counts(rows),
        "style_baseline": style,
        "length_chars": card.length_percentiles(rows),
        "language_mix": card.language_mix(rows),
        "files": {},
    }
    card_text = card.render_card(manifest, rows, plots, config)
    atomic_write_text(out / "DATA_CARD.md", card_text)
    manifest["files"] = {
        p.name: file_sha256(p) for p in sorted(out.iterdir()) if p.suffix in (".parquet", ".png", ".md")
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    lap("card")
    timings["total"] = round(time.perf_counter() - started, 3)
    atomic_write_text(out / "build_log.json", json.dumps({"timings_s": timings}, indent=2) + "\n")
    manifest["timings_s"] = timings
    return manifest
