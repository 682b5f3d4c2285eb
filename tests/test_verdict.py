import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moderation.policy import load_policy
from moderation.verdict import ALLOW, DISALLOW, Status, parse, render

CASES = json.loads((Path(__file__).parent / "cases" / "verdict_cases.json").read_text())
CATEGORY_IDS = load_policy("marketplace").category_ids


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_parse_case(case):
    verdict = parse(case["text"], CATEGORY_IDS)
    assert verdict.decision == case["decision"]
    assert list(verdict.categories) == case["categories"]
    assert verdict.status == Status(case["status"])
    assert list(verdict.unknown_categories) == case.get("unknown", [])


def test_disallow_never_reads_as_allow():
    for text in ["<answer>DISALLOW</answer>", "<answer>disallow</answer>", "<answer> DisAllow: spam </answer>"]:
        assert parse(text).decision != ALLOW


def test_without_known_categories_any_name_is_accepted():
    verdict = parse("<reasoning>x</reasoning><answer>DISALLOW: drugs</answer>")
    assert verdict.categories == ("drugs",)
    assert verdict.ok


def test_non_string_input_is_a_parse_failure():
    assert parse(None).status is Status.EMPTY
    assert parse(b"<answer>ALLOW</answer>").decision is None


class TestRender:
    def test_matches_the_documented_format(self):
        assert render(DISALLOW, ["gambling", "phishing"], "Sells bets.") == (
            "<reasoning>\nSells bets.\n</reasoning>\n<answer>\nDISALLOW: gambling, phishing\n</answer>"
        )

    @pytest.mark.parametrize(
        "args",
        [("maybe", (), "x"), (ALLOW, ("spam",), "x"), (DISALLOW, (), "x"), (ALLOW, (), "a </reasoning> b")],
    )
    def test_rejects_contradictions(self, args):
        with pytest.raises(ValueError):
            render(*args)


reasoning_text = st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=300).filter(
    str.strip
)


@settings(max_examples=300, deadline=None)
@given(subset=st.lists(st.sampled_from(CATEGORY_IDS), min_size=1, unique=True), reasoning=reasoning_text)
def test_disallow_round_trips_for_every_category_subset(subset, reasoning):
    verdict = parse(render(DISALLOW, subset, reasoning), CATEGORY_IDS)
    assert (verdict.decision, verdict.categories, verdict.status) == (DISALLOW, tuple(subset), Status.OK)
    assert verdict.reasoning == reasoning.strip()


@settings(max_examples=100, deadline=None)
@given(reasoning=reasoning_text)
def test_allow_round_trips(reasoning):
    verdict = parse(render(ALLOW, (), reasoning), CATEGORY_IDS)
    assert (verdict.decision, verdict.categories, verdict.status) == (ALLOW, (), Status.OK)


tag_soup = st.lists(
    st.one_of(
        st.sampled_from(["<reasoning>", "</reasoning>", "<answer>", "</answer>", "ALLOW", "DISALLOW:", ", ", "spam"]),
        st.text(max_size=20),
        st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(text=tag_soup)
def test_arbitrary_text_never_raises(text):
    verdict = parse(text, CATEGORY_IDS)
    assert isinstance(verdict.status, Status)
    assert (verdict.decision is None) or verdict.decision in (ALLOW, DISALLOW)
    assert set(verdict.categories) <= set(CATEGORY_IDS)


def test_huge_input_parses_quickly():
    text = "<reasoning>" + "x" * 2_000_000 + "</reasoning><answer>" + "DISALLOW: spam, " * 10_000 + "</answer>"
    assert parse(text, CATEGORY_IDS).categories == ("spam",)
