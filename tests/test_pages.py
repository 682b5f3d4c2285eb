"""Listing pages: content × page shape, lengths, languages, held-out shapes, scraped records in the same surface."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from data_gen.card import masked, page_shape
from data_gen.pages import Ads, Content, PageLexicon, detect_language, render_page, render_record
from moderation.config import load_config
from moderation.paths import CONFIGS
from moderation.prompt import truncate_listing

LEXICON = CONFIGS / "data" / "lexicon" / "pages.yaml"
CONTENT = Content(
    title="Sourdough Basics: a practical guide",
    body="Sourdough Basics: a practical guide\n\nA 120-page ebook on sourdough baking, written for busy parents.",
    price="$12",
    details=["120 pages, PDF and EPUB", "Chapter on common mistakes"],
)


@pytest.fixture(scope="module")
def lexicon() -> PageLexicon:
    return load_config(PageLexicon, LEXICON)


@pytest.fixture(scope="module")
def with_ads(lexicon: PageLexicon) -> PageLexicon:
    """The shipped wording with three in ten listings written as bare ads (rule V's data)."""
    return lexicon.model_copy(update={"ads": Ads(share=0.3, forms=lexicon.ads.forms)})


def pages(lexicon: PageLexicon, n: int, language: str | None = None) -> list[tuple[str, str]]:
    return [render_page(CONTENT, random.Random(i), lexicon, language) for i in range(n)]


class TestRenderPage:
    def test_real_page_shape(self, lexicon):
        for text, _ in pages(lexicon, 50, "en"):
            head = text[:400]
            assert text.splitlines()[0].strip("#*[]▶= ").lower().startswith("sourdough basics")  # title as heading
            assert CONTENT.body.splitlines()[-1] in head  # the description sits right under the price lines
        texts = "\n".join(t for t, _ in pages(lexicon, 200, "en"))
        for marker in ("ratings", "Buy this", "I want this!", "Pay what you want", "a month", "https://", "FAQ"):
            assert marker in texts, marker

    def test_lengths_have_a_long_tail(self, lexicon):
        lengths = np.array([len(t) for t, _ in pages(lexicon, 400)])
        assert np.median(lengths) >= 1500 and np.percentile(lengths, 90) >= 5000 and lengths.max() >= 15000

    def test_content_survives_head_and_tail_truncation(self, lexicon):
        kept = 0
        for text, _ in pages(lexicon, 200):
            head, _, tail = truncate_listing(text, 128).partition(" tokens cut ...]")
            kept += "sourdough baking, written for busy parents" in head and "Sourdough Basics" in (tail or head)
        # the description survives in the head of (almost) every page, and the title comes back in most tails
        assert kept > 0.5 * 200

    def test_languages_follow_weights(self, lexicon):
        drawn = [language for _, language in pages(lexicon, 600)]
        assert 0.2 <= 1 - drawn.count("en") / len(drawn) <= 0.4
        assert set(drawn) == set(lexicon.languages)

    def test_summary_sits_above_the_description(self, lexicon):
        content = Content(**{**CONTENT.__dict__, "summary": "Guía práctica de masa madre."})
        text, _ = render_page(content, random.Random(0), lexicon, "es")
        assert 0 < text.index("Guía práctica de masa madre.") < text.index(CONTENT.body.splitlines()[-1])

    def test_same_rng_same_page(self, lexicon):
        assert pages(lexicon, 3) == pages(lexicon, 3)


class TestHeldOutShapes:
    def test_sides_share_no_heading_style_or_wording(self, lexicon):
        train, held = lexicon.side(False, 0, 0.3), lexicon.side(True, 0, 0.3)
        assert not set(train.heading_styles) & set(held.heading_styles)
        assert not set(train.title_styles) & set(held.title_styles)
        for code, language in train.languages.items():
            for section, headings in language.headings.items():
                assert not set(headings) & set(held.languages[code].headings[section]), (code, section)
        shapes = {page_shape(masked(t)) for t, _ in pages(train, 100)}
        assert not shapes & {page_shape(masked(t)) for t, _ in pages(held, 100)}


class TestAds:
    def test_a_share_of_listings_are_bare_ads(self, with_ads):
        drawn = [render_page(CONTENT, random.Random(i), with_ads, "es") for i in range(400)]
        ads = [(text, language) for text, language in drawn if len(text) < 400]
        assert abs(len(ads) / len(drawn) - with_ads.ads.share) < 0.07
        for text, language in ads:
            leftover = text
            for part in (CONTENT.body, CONTENT.title.upper(), CONTENT.title, ", ".join(CONTENT.details), CONTENT.price):
                leftover = leftover.replace(part, "")
            assert CONTENT.body in text and not re.sub(r"[\W_]", "", leftover)  # no page wording around the ad
            assert language == "en"  # an ad is in its description's language, not the drawn page language
            assert "\\n" not in text

    def test_an_ad_lays_out_title_body_price_and_details(self):
        ads = Ads(share=1.0, forms=["[{price}] {upper}\n{body}\n{details}"])
        text, _ = render_page(
            CONTENT, random.Random(0), load_config(PageLexicon, LEXICON).model_copy(update={"ads": ads})
        )
        assert text == f"[$12] SOURDOUGH BASICS: A PRACTICAL GUIDE\n{CONTENT.body}\n" + ", ".join(CONTENT.details)

    def test_sides_share_no_ad_form(self, lexicon):
        train, held = lexicon.side(False, 0, 0.3), lexicon.side(True, 0, 0.3)
        assert train.ads.forms and held.ads.forms and not set(train.ads.forms) & set(held.ads.forms)


class TestRecord:
    def test_scraped_record_in_page_layout(self):
        record = {
            "title": "Notion budget planner",
            "description": "Track spending.\nWhat's inside:\n- 12 monthly sheets",
            "price": "$9",
            "currency": "USD",
            "rating": 4.8,
            "rating_count": 31,
            "tags": ["notion", "budget"],
        }
        text = render_record(record)
        assert text.startswith("# Notion budget planner\n$9 USD\n4.8 (31 ratings)")
        assert "- 12 monthly sheets" in text and text.endswith("Tags: notion, budget")
        assert render_record({"title": "x", "description": "y"}) == "# x\n\ny"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("This is the guide you need for the garden", "en"),
        ("Guía práctica para los que empiezan con la huerta", "es"),
        ("Что внутри: модуль 1", "ru"),
        ("内容：第 1 模块", "zh"),
        ("セット内容：モジュール", "ja"),
        ("Was ist enthalten? Die Anleitung für das Projekt", "de"),
    ],
)
def test_detect_language(text, code):
    assert detect_language(text) == code
