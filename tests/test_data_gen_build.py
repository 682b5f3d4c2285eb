"""Dataset builder, template generator, dedup, importer and CLI: small offline builds in a temp folder."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_gen.build import SCHEMA, BuildConfig, build, normalise
from data_gen.dedup import clusters, near_duplicate_pairs
from data_gen.importer import main as import_main
from data_gen.pages import PageLexicon
from data_gen.synth import Request, TemplateBackend, seed_sides
from data_gen.templates import SIDES, PolicyLexicon, SeedLexicon, SharedStyle, slot_names
from moderation.config import load_config, parse_overrides
from moderation.errors import UserError
from moderation.paths import CONFIGS
from moderation.policy import load_policy

LEXICON = CONFIGS / "data" / "lexicon"
SMALL = {
    "seed_listings": 200,
    "disallowed_per_category": 20,
    "multi_label": 36,
    "hard_negatives_per_category": 8,
    "min_train_disallowed_per_category": 10,
}


def small(tmp: Path, **overrides) -> BuildConfig:
    return BuildConfig(out_dir=str(tmp), **(SMALL | overrides))


def read_split(out: Path, split: str) -> list[dict]:
    return pq.read_table(out / f"{split}.parquet").to_pylist()


def made_from(rows: list[dict], kinds) -> list[dict]:
    """The rows whose rationale is one of `kinds`' `why` templates, filled."""
    patterns = [re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(kind.why))) for kind in kinds]
    return [r for r in rows if any(p.fullmatch(r["rationale"]) for p in patterns)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    manifest = build(small(tmp))
    return tmp / "default", manifest


class TestBuild:
    def test_files_schema_and_contract(self, built, policy):
        out, manifest = built
        names = {p.name for p in out.iterdir()}
        assert {"train.parquet", "dev.parquet", "test.parquet", "manifest.json", "DATA_CARD.md"} <= names
        assert {"length_by_label.png", "length_by_source.png"} <= names
        assert pq.read_schema(out / "train.parquet").names == SCHEMA.names
        rows = [r for s in ("train", "dev", "test") for r in read_split(out, s)]
        assert len({r["id"] for r in rows}) == len(rows)
        for r in rows:
            assert r["label"] in ("allow", "disallow") and r["text"].strip() and r["rationale"].strip()
            assert (r["label"] == "disallow") == bool(r["categories"])
            assert set(r["categories"]) <= set(policy.category_ids)
        train = read_split(out, "train")
        for category in policy.category_ids:
            assert sum(category in r["categories"] for r in train) >= SMALL["min_train_disallowed_per_category"]
            assert any(r["near_category"] == category and r["label"] == "allow" for r in train)
        assert any(len(r["categories"]) == 2 for r in train)
        assert manifest["dedup"]["cross_split_near_duplicates"] == 0

    def test_loads_with_datasets(self, built):
        from datasets import load_dataset

        out, _ = built
        files = {s: str(out / f"{s}.parquet") for s in ("train", "dev", "test")}
        dataset = load_dataset("parquet", data_files=files)
        assert set(dataset) == {"train", "dev", "test"} and "rationale" in dataset["dev"].column_names

    def test_no_near_duplicates_across_splits(self, built):
        out, _ = built
        rows = [r for s in ("train", "dev", "test") for r in read_split(out, s)]
        pairs = near_duplicate_pairs([r["text"] for r in rows], 0.5)
        assert all(rows[i]["split"] == rows[j]["split"] for i, j, _ in pairs)

    def test_rationales_are_specific(self, built):
        out, _ = built
        rows = read_split(out, "train")
        disallowed = [r for r in rows if r["label"] == "disallow"]
        assert len({r["rationale"] for r in disallowed}) > 0.5 * len(disallowed)
        for r in rows:
            assert r["rationale"].lower() not in ("allow", "disallow", "allowed", "disallowed")

    @staticmethod
    def sides(policy, seed: int, fraction: float, validation: float = 0.0) -> dict[str, dict[str, list[str]]]:
        """side (train, validation, eval) → the phrases the generator really draws on that side: title/pitch
        templates, other templates (details), slot values and tags."""
        shared = load_config(SharedStyle, LEXICON / "shared.yaml")
        lexicon = load_config(PolicyLexicon, LEXICON / "marketplace.yaml")
        seed_lexicon = load_config(SeedLexicon, LEXICON / "seed.yaml")
        backend = TemplateBackend(policy, lexicon, shared, seed, fraction, validation)
        seeds = seed_sides(seed_lexicon, seed, fraction, validation)
        out = {}
        for side in SIDES:
            categories, slots = backend.sides[side]
            kinds = [k for c in categories.values() for k in c.kinds] + seeds[side][0]
            all_slots = [slots, seeds[side][1], *(k.slots for k in kinds)]
            out[side] = {
                "title_pitch": [t for k in kinds for t in k.titles + k.pitches],
                "details": [t for k in kinds for t in k.details],
                "values": [v for s in all_slots for vs in s.values() for v in vs],
                "tags": [t for k in kinds for t in k.tags],
            }
        return out

    @staticmethod
    def only_on(side: dict[str, list[str]], other: dict[str, list[str]], fields: tuple[str, ...]) -> re.Pattern:
        """A pattern for the phrases of `side` that `other` (and the material every page shares) never shows: the
        slot-free runs of 3+ words of its templates, slot values of 5+ characters and #tags."""
        pages = load_config(PageLexicon, LEXICON / "pages.yaml")
        shared = load_config(SharedStyle, LEXICON / "shared.yaml")
        shown = [t for vs in other.values() for t in vs] + [v for vs in shared.model_dump().values() for v in vs]
        blob = "\n".join([*shown, json.dumps(pages.model_dump(), ensure_ascii=False)]).lower()
        templates = [t for f in fields if f in ("title_pitch", "details") for t in side[f]]
        runs = {f.strip(" ,.:;-!").lower() for t in templates for f in re.split(r"\{\w+\}", t)}
        phrases = {r for r in runs if len(r.split()) >= 3}
        if "values" in fields:
            phrases |= {v.lower() for v in side["values"] if len(v) >= 5}
        only = {p for p in phrases if p not in blob}
        if "tags" in fields:
            only |= {f"#{t.lower()}" for t in set(side["tags"]) - set(other["tags"])}
        assert len(only) > 50
        return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, sorted(only))) + r")(?!\w)")

    def test_eval_wording_never_in_train(self, built, policy):
        """Phrases only the held-out pools hold (cues, titles, pitches, details, tags) show in dev/test, never in
        train."""
        out, manifest = built
        sides = self.sides(policy, manifest["seed"], manifest["config"]["held_out_phrases"])
        pattern = self.only_on(sides["eval"], sides["train"], ("title_pitch", "details", "values", "tags"))
        leaks = [(m.group(), r["text"]) for r in read_split(out, "train") if (m := pattern.search(r["text"].lower()))]
        assert not leaks, leaks[:3]
        held = [r for s in ("dev", "test") for r in read_split(out, s) if pattern.search(r["text"].lower())]
        assert len(held) > 0.5 * sum(len(read_split(out, s)) for s in ("dev", "test"))

    def test_train_templates_never_in_eval(self, built, policy):
        """The reverse: title and pitch templates only train uses never show in dev/test, and the build counts 0
        dev/test rows filled from a template a train row was filled from."""
        out, manifest = built
        sides = self.sides(policy, manifest["seed"], manifest["config"]["held_out_phrases"])
        pattern = self.only_on(sides["train"], sides["eval"], ("title_pitch",))
        leaks = [
            (m.group(), r["text"][:300])
            for s in ("dev", "test")
            for r in read_split(out, s)
            if (m := pattern.search(r["text"].lower()))
        ]
        assert not leaks, leaks[:3]
        train = read_split(out, "train")
        assert sum(bool(pattern.search(r["text"].lower())) for r in train) > 0.3 * len(train)
        assert manifest["dedup"]["held_out_rows_reusing_train_template"] == {"dev": 0, "test": 0}

    def test_a_validation_slice_has_wording_of_its_own(self, built, policy, tmp_path):
        """validation_fraction: a slice written from a phrase share neither train nor dev/test draws on, so choices
        made on it face unseen wording as dev/test do; dev and test are the build's without it, and a later build
        without the slice removes its file (training would otherwise choose on a stale slice)."""
        manifest = build(small(tmp_path, validation_fraction=0.1, validation_phrases=0.2))
        out = tmp_path / "default"
        validation, train = read_split(out, "validation"), read_split(out, "train")
        assert manifest["counts"]["validation"]["rows"] == len(validation) > 0.05 * (len(train) + len(validation))
        assert {r["label"] for r in validation} == {"allow", "disallow"}
        sides = self.sides(policy, manifest["seed"], 0.3, 0.2)
        others = {field: sides["train"][field] + sides["eval"][field] for field in sides["train"]}
        own = self.only_on(sides["validation"], others, ("title_pitch", "details", "values"))
        elsewhere = [
            r["text"] for s in ("train", "dev", "test") for r in read_split(out, s) if own.search(r["text"].lower())
        ]
        assert not elsewhere, elsewhere[:1]
        assert sum(bool(own.search(r["text"].lower())) for r in validation) > 0.3 * len(validation)
        for split in ("dev", "test"):
            assert (out / f"{split}.parquet").read_bytes() == (built[0] / f"{split}.parquet").read_bytes()
        build(small(tmp_path))
        assert not (out / "validation.parquet").exists()

    def test_same_seed_same_bytes(self, built, tmp_path):
        out, manifest = built
        build(small(tmp_path))
        for name in ("train.parquet", "dev.parquet", "test.parquet", "DATA_CARD.md", "length_by_label.png"):
            assert (tmp_path / "default" / name).read_bytes() == (out / name).read_bytes(), name
        assert json.loads((tmp_path / "default" / "manifest.json").read_text())["files"] == manifest["files"]

    def test_data_card_reports_what_matters(self, built, policy):
        out, manifest = built
        card = (out / "DATA_CARD.md").read_text()
        for category in policy.category_ids:
            assert f"| {category} |" in card
        assert "Cross-split near-duplicates: 0" in card and "style_only" in card and "Held-out phrasings" in card
        style = manifest["style_baseline"]
        # content still carries the label on unseen wording, but no longer perfectly (train and test share no phrasing)
        assert 0 <= style["style_only"]["accuracy"] <= 1 and 0.6 < style["content_tfidf"]["accuracy"] < 1
        assert "page_shape_only" in card and "language_only" in card and "p90" in card
        # pages: long, in several languages, alike for both labels
        for label in ("allow", "disallow"):
            assert manifest["length_chars"][label]["p50"] >= 1500 and manifest["length_chars"][label]["p90"] >= 5000
            mix = manifest["language_mix"][label]
            assert sum(mix.values()) == pytest.approx(1.0, abs=1e-3) and "en" in mix  # shares rounded to 4 digits
            assert sum(share for language, share in mix.items() if language != "en") >= 0.2
        rows = [r for s in ("train", "dev", "test") for r in read_split(out, s)]
        assert {r["language"] for r in rows} >= {"en", "es", "de", "ru", "zh", "ja", "ar"}


class TestOtherPolicies:
    def test_kids_crafts_policy_uses_its_own_categories(self, tmp_path):
        manifest = build(small(tmp_path, policy="kids-crafts", min_train_disallowed_per_category=5))
        policy = load_policy("kids-crafts")
        assert manifest["categories"] == list(policy.category_ids)
        rows = read_split(tmp_path / "default", "train")
        assert {c for r in rows for c in r["categories"]} == set(policy.category_ids)
        assert {r["near_category"] for r in rows} >= set(policy.category_ids)

    def test_category_subset(self, tmp_path):
        manifest = build(small(tmp_path, categories=["gambling", "iptv"], seed=1, seed_listings=60))
        assert set(manifest["counts"]["train"]["category"]) == {"gambling", "iptv"}
        assert manifest["seed"] == 1

    def test_extra_seed_kinds_join_the_allowed_rows(self, tmp_path):
        physical = load_config(SeedLexicon, LEXICON / "seed_physical.yaml")
        build(small(tmp_path, categories=["spam"], seed_listings=120, extra_seed_lexicons=["seed_physical.yaml"]))
        rows = [r for split in ("train", "dev", "test") for r in read_split(tmp_path / "default", split)]
        extra = made_from(rows, physical.kinds)
        assert extra and all(r["label"] == "allow" for r in extra)
        with pytest.raises(UserError, match=r"nope\.yaml"):
            build(small(tmp_path, categories=["spam"], extra_seed_lexicons=["nope.yaml"]))

    def test_extra_policy_kinds_join_their_category(self, tmp_path):
        physical = load_config(PolicyLexicon, LEXICON / "marketplace_physical.yaml")
        kinds = physical.categories["iptv"]
        build(small(tmp_path, categories=["iptv"], extra_policy_lexicons=["marketplace_physical.yaml"]))
        rows = [r for split in ("train", "dev", "test") for r in read_split(tmp_path / "default", split)]
        offers, look_alikes = made_from(rows, kinds.offers), made_from(rows, kinds.hard_negatives)
        assert offers and all(r["label"] == "disallow" and "iptv" in r["categories"] for r in offers)
        assert look_alikes and all(r["label"] == "allow" for r in look_alikes)
        with pytest.raises(UserError, match=r"nope\.yaml"):
            build(small(tmp_path, categories=["iptv"], extra_policy_lexicons=["nope.yaml"]))


class TestBadInput:
    def test_unknown_category(self, tmp_path):
        with pytest.raises(UserError, match="unknown category 'nope'"):
            build(small(tmp_path, categories=["spam", "nope"]))

    def test_empty_policy(self, tmp_path):
        path = tmp_path / "empty.yaml"
        path.write_text("name: empty\ndescription: nothing\ncategories: []\n")
        with pytest.raises(UserError, match="categories"):
            build(small(tmp_path, policy=str(path)))

    def test_unwritable_output_dir(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("x")
        with pytest.raises(UserError, match="not writable"):
            build(small(blocker))

    def test_broken_lexicon(self, tmp_path):
        (tmp_path / "shared.yaml").write_text("generic_details: [a\n")
        with pytest.raises(UserError, match=r"shared\.yaml"):
            build(small(tmp_path, lexicon_dir=str(tmp_path)))

    def test_failed_build_keeps_existing_files(self, built, tmp_path):
        first = build(small(tmp_path, categories=["spam"], seed_listings=40))
        with pytest.raises(UserError):
            build(small(tmp_path, categories=["spam"], seed_listings=40, min_train_disallowed_per_category=10_000))
        assert json.loads((tmp_path / "default" / "manifest.json").read_text())["files"] == first["files"]

    def test_cli_error_is_one_line_exit_2(self, tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "data_gen", f"out_dir={tmp_path}", "categories=[nope]"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [result.stderr.strip()]
        assert "unknown category 'nope'" in result.stderr

    def test_bad_override(self):
        with pytest.raises(UserError, match="unexpected argument 'seed'"):
            parse_overrides(BuildConfig, ["seed"])
        with pytest.raises(UserError, match="no_such_field"):
            load_config(BuildConfig, None, ["no_such_field=1"])


class TestConfig:
    def test_yaml_then_overrides(self):
        config = load_config(BuildConfig, CONFIGS / "data" / "default.yaml", ["seed=7", "categories=[spam, adult]"])
        assert config.seed == 7 and config.categories == ["spam", "adult"] and config.name == "default"
        nested = load_config(BuildConfig, None, ["backend=openai", "openai.base_url=http://127.0.0.1:9/v1"])
        assert nested.openai.base_url == "http://127.0.0.1:9/v1"

    def test_help_documents_fields(self):
        result = subprocess.run([sys.executable, "-m", "data_gen", "build", "--help"], capture_output=True, text=True)
        assert "dedup_threshold" in result.stdout and "disallowed_per_category" in result.stdout


class TestTemplates:
    @pytest.fixture(scope="class")
    def backend(self, policy):
        shared = load_config(SharedStyle, LEXICON / "shared.yaml")
        lexicon = load_config(PolicyLexicon, LEXICON / "marketplace.yaml")
        return TemplateBackend(policy, lexicon, shared, seed=0)

    def test_every_category_and_pair_renders(self, backend, policy):
        ids = policy.category_ids
        requests = [Request(f"k/{c}/{i}", "disallowed", (c,)) for c in ids for i in range(20)]
        requests += [Request(f"m/{a}/{b}", "disallowed", (a, b)) for a in ids for b in ids if a < b]
        requests += [Request(f"h/{c}/{i}", "hard_negative", (c,)) for c in ids for i in range(10)]
        out = backend.generate(requests)
        assert all(g.text and g.rationale for g in out)
        assert len({g.text for g in out}) == len(out)

    def test_every_kind_can_cite_its_rationale(self, policy):
        # on each side, each slot a rationale names is shown by some title, pitch or detail, and every slot has values
        shared = load_config(SharedStyle, LEXICON / "shared.yaml")
        lexicon = load_config(PolicyLexicon, LEXICON / "marketplace.yaml")
        backend = TemplateBackend(policy, lexicon, shared, seed=0, held_out_phrases=0.3)
        for categories, _ in backend.sides.values():
            for kind in (k for c in categories.values() for k in c.kinds):
                shown = {n for t in kind.titles + kind.pitches + kind.details for n in slot_names(t)}
                assert set(slot_names(kind.why)) <= shown, kind.titles[0]
                assert all(kind.slots.get(n) or lexicon.slots.get(n) for n in shown), kind.titles[0]

    def test_same_key_same_listing(self, backend):
        request = Request("x/iptv/1", "disallowed", ("iptv",))
        assert backend.generate([request]) == backend.generate([request])

    def test_rationale_cites_the_listing(self, backend):
        # numbers drawn into a rationale (channels, months, counts) appear in the listing text itself
        import re

        out = backend.generate([Request(f"r/iptv/{i}", "disallowed", ("iptv",)) for i in range(40)])
        cited = [g for g in out if re.search(r"\d", g.rationale)]
        assert cited
        for g in cited:
            for number in re.findall(r"\b\d[\d,]*\b", g.rationale):
                assert number in g.text, (number, g.text)


class TestDedup:
    def test_near_duplicates_found_and_clustered(self):
        rng = random.Random(0)
        words = [f"w{rng.randrange(10_000)}" for _ in range(60)]
        base = " ".join(words)
        near = " ".join([*words[:-1], "changed"])
        other = " ".join(reversed(words))
        pairs = near_duplicate_pairs([base, other, near], 0.8)
        assert [(i, j) for i, j, _ in pairs] == [(0, 2)]
        assert clusters(3, pairs) == [0, 1, 0]

    def test_normalise(self):
        assert normalise("  a\r\nb  \n\n\n\nc \u0065\u0301 ") == "a\nb\n\nc é"


class TestImport:
    def test_csv_with_mapping_then_build(self, tmp_path, capsys):
        source = tmp_path / "mine.csv"
        source.write_text("body,kind\nBuy 10k followers now,spam\nHand-knit scarf pattern,ham\n,ham\n")
        out = tmp_path / "mine.jsonl"
        import_main(
            [
                str(source),
                "--text-column",
                "body",
                "--label-column",
                "kind",
                "--map",
                "spam=disallow/spam",
                "--map",
                "ham=allow",
                "--out",
                str(out),
            ]
        )
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert rows == [
            {
                "text": "Buy 10k followers now",
                "label": "disallow",
                "categories": ["spam"],
                "generator": "import:mine.csv",
            },
            {"text": "Hand-knit scarf pattern", "label": "allow", "categories": [], "generator": "import:mine.csv"},
        ]
        manifest = build(small(tmp_path, imported=[str(out)], min_train_disallowed_per_category=0))
        assert sum(manifest["counts"][s]["source"].get("imported", 0) for s in ("train", "dev", "test")) == 2

    def test_unmapped_label_and_unknown_category(self, tmp_path):
        source = tmp_path / "x.jsonl"
        source.write_text('{"text": "hello", "label": "weird"}\n')
        with pytest.raises(UserError, match="no mapping"):
            import_main([str(source), "--out", str(tmp_path / "o.jsonl")])
        with pytest.raises(UserError, match=r"no category 'bogus'"):
            import_main([str(source), "--map", "weird=disallow/bogus", "--out", str(tmp_path / "o.jsonl")])
