"""reasoning_grounded: grounded reasoning outscores boilerplate, contradicting, copied and empty reasoning."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moderation.errors import UserError
from moderation.verdict import render
from rewards import build_rewards
from rewards.grounding import content_words, contradicts

LISTING = (
    "Premium IPTV 12 months, 18,000 live channels including every football league, M3U link and Firestick setup "
    "delivered by email within minutes. Pay once, no contract."
)
GROUNDED = "Sells a 12-month IPTV subscription with 18,000 live channels via an M3U link, unlicensed streaming."


@pytest.fixture(scope="module")
def reward(policy):
    return build_rewards(["reasoning_grounded"], policy)[0]


def score(reward, completion: str, listing: str = LISTING) -> float:
    return reward([completion], text=[listing])[0]


class TestReasoningGrounded:
    def test_grounded_reasoning_scores_full_marks(self, reward):
        assert score(reward, render("disallow", ["iptv"], GROUNDED)) == 1.0

    @pytest.mark.parametrize(
        "reasoning",
        ["The listing is fine.", "This product violates the policy.", "Clearly a violation of the rules here."],
    )
    def test_boilerplate_scores_zero(self, reward, reasoning):
        assert score(reward, render("disallow", ["iptv"], reasoning)) == 0.0

    def test_harmless_reasoning_before_disallow_scores_zero(self, reward):
        harmless = "An IPTV setup guide for live channels on a Firestick; harmless."
        assert score(reward, render("disallow", ["iptv"], harmless)) == 0.0
        assert score(reward, render("allow", [], harmless)) == 1.0

    def test_violation_named_above_allow_scores_zero(self, reward):
        assert score(reward, render("allow", [], GROUNDED + " It violates the iptv category.")) == 0.0

    def test_negated_cues_flip_the_stance(self):
        assert contradicts("disallow", "The IPTV channels do not violate anything.")
        assert contradicts("disallow", "This isn't a violation.")
        assert not contradicts("disallow", "Streaming channels without a licence are not allowed.")
        assert not contradicts("allow", "A poker strategy ebook; it does not violate the gambling rules.")

    def test_copying_the_listing_scores_low(self, reward):
        assert score(reward, render("disallow", ["iptv"], LISTING)) == 0.0
        half_copy = "Premium IPTV 12 months, 18,000 live channels including every football league: unlicensed resale."
        assert 0.0 < score(reward, render("disallow", ["iptv"], half_copy)) < 1.0

    def test_empty_or_missing_reasoning_scores_zero(self, reward):
        assert score(reward, render("disallow", ["iptv"], "")) == 0.0
        assert score(reward, "<answer>\nDISALLOW: iptv\n</answer>") == 0.0

    def test_non_latin_words_count_as_content(self, reward):
        listing = "正版 IPTV 订阅 12个月 直播 频道 体育 电影"
        assert {"订阅", "频道"} <= content_words(listing)
        assert (
            score(reward, render("disallow", ["iptv"], "出售 IPTV 订阅 和 直播 频道，属于未授权流媒体。"), listing)
            == 1.0
        )

    def test_params_are_validated(self, policy):
        with pytest.raises(UserError, match="min_cited"):
            build_rewards(["reasoning_grounded"], policy, {"reasoning_grounded": {"min_cited": 0}})

    def test_picklable_with_its_registry_name(self, reward):
        assert pickle.loads(pickle.dumps(reward)).__name__ == "reasoning_grounded"


WORD = st.text(alphabet="bcdfghjklmnpqrstvwxz", min_size=4, max_size=9).map(lambda w: "q" + w)


@settings(max_examples=60, deadline=None)
@given(st.lists(WORD, min_size=12, max_size=40, unique=True))
def test_grounded_beats_boilerplate_contradicting_copied_and_empty(policy, vocabulary):
    reward = build_rewards(["reasoning_grounded"], policy)[0]
    listing = " ".join(vocabulary)
    grounded = f"Sells {vocabulary[0]} and {vocabulary[3]} with {vocabulary[7]}, an unlicensed stream."
    worse = [
        "The listing is fine and clearly a violation.",
        grounded + " It is harmless.",
        listing,
        "",
    ]
    best = score(reward, render("disallow", ["iptv"], grounded), listing)
    assert best == 1.0
    for reasoning in worse:
        assert score(reward, render("disallow", ["iptv"], reasoning), listing) < best
