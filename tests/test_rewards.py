"""Rewards: data-driven cases (tests/cases/rewards_cases.json), one class per reward for the properties that matter
(gaming, asymmetry, padding), the registry/builder contract, and hypothesis checks that no reward ever raises."""

import json
import math
import pickle
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rewards
from moderation.errors import UserError
from moderation.verdict import render
from rewards.reasoning import words

CASES = json.loads((Path(__file__).parent / "cases" / "rewards_cases.json").read_text())

LISTING = (
    "Watch 500+ live sports channels with our 12 month IPTV subscription. M3U link delivered instantly after "
    "purchase, works on any smart TV."
)
OWN_WORDS = "The seller offers paid sports channels through an M3U playlist, which is unlicensed streaming."
GOOD_DISALLOW = render("disallow", ["iptv"], OWN_WORDS)
GOOD_ALLOW = render("allow", (), "A printable weekly planner template; nothing in it touches a policy category.")
PLACEHOLDERS = {  # longest first, so COPY_LISTING is not read as COPY_ + LISTING
    "GOOD_DISALLOW": GOOD_DISALLOW,
    "COPY_LISTING": render("disallow", ["iptv"], LISTING),
    "TRAILING_5000": "x" * 5000,
    "DISTINCT_200": render("allow", (), " ".join(f"word{i}" for i in range(200))),
    "DISTINCT_90": render("allow", (), " ".join(f"word{i}" for i in range(90))),
    "GOOD_ALLOW": GOOD_ALLOW,
    "SPAM_ALL": None,  # filled from the policy in `expand`
    "LISTING": LISTING,
}


def expand(value, policy):
    if isinstance(value, list):
        return [expand(v, policy) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, policy) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    spam = render("disallow", policy.category_ids, "It could be anything.")
    for key, text in PLACEHOLDERS.items():
        value = value.replace(key, spam if key == "SPAM_ALL" else text)
    return value


def build(name, policy, **params):
    (reward,) = rewards.build_rewards([name], policy, {name: params} if params else None)
    return reward


def score(name, policy, completion, label="disallow", categories=("iptv",), text=LISTING, **params):
    (value,) = build(name, policy, **params)([completion], label=[label], categories=[list(categories)], text=[text])
    return value


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case, policy):
    reward = build(case["reward"], policy, **case.get("params", {}))
    columns = {
        "label": [case.get("label", "disallow")],
        "categories": [case.get("categories", ["iptv"])],
        "text": [expand(case.get("text", "LISTING"), policy)],
    }
    (value,) = reward([expand(case["completion"], policy)], **columns)
    if case["expected"] is None:
        assert value is None
    else:
        assert value == pytest.approx(case["expected"], abs=1e-6)


class TestFormatPartial:
    def test_more_structure_never_scores_less(self, policy):
        """The shaping ladder a model climbs from zero compliance, each rung strictly better."""
        ladder = [
            "The listing is fine.",
            "<reasoning>The listing is fine.",
            "<reasoning>The listing is fine.</reasoning>",
            "<reasoning>The listing is fine.</reasoning><answer>",
            "<reasoning>The listing is fine.</reasoning><answer>fine</answer>",
            "<reasoning>The listing is fine.</reasoning><answer>ALLOW</answer> Thanks!",
            "<reasoning>The listing is fine.</reasoning><answer>ALLOW</answer>",
        ]
        scores = [score("format_partial", policy, text) for text in ladder]
        assert scores == sorted(set(scores)), scores

    def test_tag_spam_does_not_pay(self, policy):
        spam = "<reasoning></reasoning>" * 20 + "<answer>ALLOW</answer>" * 20
        assert score("format_partial", policy, spam) < score("format_partial", policy, GOOD_ALLOW)
        assert score("format_partial", policy, spam) <= 0.1


class TestVerdict:
    def test_missed_violation_can_cost_more_than_false_alarm(self, policy):
        params = {"missed_violation": -2.0, "false_alarm": -1.0}
        missed = score("verdict", policy, GOOD_ALLOW, label="disallow", **params)
        false_alarm = score("verdict", policy, GOOD_DISALLOW, label="allow", **params)
        assert missed < false_alarm < score("verdict", policy, GOOD_ALLOW, label="allow", **params)

    def test_unparseable_may_not_beat_a_wrong_answer(self, policy):
        with pytest.raises(UserError, match="unparseable"):
            build("verdict", policy, unparseable=0.0)
        with pytest.raises(UserError, match="correct"):
            build("verdict", policy, correct=-5.0)

    def test_a_bad_label_fails_loud(self, policy):
        with pytest.raises(UserError, match="label"):
            score("verdict", policy, GOOD_ALLOW, label="ALLOWED")


class TestCategories:
    @pytest.mark.parametrize("metric", ["f1", "jaccard"])
    def test_category_spam_does_not_pay(self, policy, metric):
        """Naming every category scores below naming the right one, and below a blind single guess on average."""
        ids = policy.category_ids
        spam = render("disallow", ids, "It could be anything.")
        for gold in [ids[:1], ids[2:4], ids[:3]]:
            right = score("categories", policy, render("disallow", gold, "x"), categories=gold, metric=metric)
            guesses = [
                score("categories", policy, render("disallow", [c], "x"), categories=gold, metric=metric) for c in ids
            ]
            spammed = score("categories", policy, spam, categories=gold, metric=metric)
            assert spammed < sum(guesses) / len(guesses) < right
        half = render("disallow", ids[: len(ids) // 2 + 1], "x")
        assert score("categories", policy, half, categories=ids[:1]) < 0

    def test_gold_outside_the_policy_fails_loud(self, policy):
        with pytest.raises(UserError, match="gold categories"):
            score("categories", policy, GOOD_DISALLOW, categories=["not_a_category"])
        with pytest.raises(UserError, match="gold categories"):
            score("categories", policy, GOOD_DISALLOW, categories=[])

    def test_bad_metric_is_a_user_error(self, policy):
        with pytest.raises(UserError, match="f1"):
            build("categories", policy, metric="recall")


class TestReasoningLength:
    def test_repetition_scores_low(self, policy):
        sentence = "The seller offers paid sports channels through an M3U playlist."
        scores = [
            score("reasoning_length", policy, render("disallow", ["iptv"], " ".join([sentence] * k)))
            for k in (1, 2, 4, 6, 8)
        ]
        assert scores[0] == 1.0
        assert scores == sorted(scores, reverse=True)
        assert scores[2] <= 0.5 and scores[-1] <= 0.25, scores

    def test_copying_the_listing_scores_low(self, policy):
        copied = score("reasoning_length", policy, render("disallow", ["iptv"], LISTING))
        copied_plus = score("reasoning_length", policy, render("disallow", ["iptv"], f"It says: {LISTING} So IPTV."))
        assert copied == 0.0
        assert copied_plus < 0.5

    def test_quoting_a_little_of_the_listing_is_free(self, policy):
        quote = "It sells a '12 month IPTV subscription' with an M3U link, which is unlicensed streaming of channels."
        assert score("reasoning_length", policy, render("disallow", ["iptv"], quote)) == 1.0

    def test_padding_never_beats_the_plain_reasoning(self, policy):
        plain = "Paid sports channels over an M3U link without a licence."
        padded = [f"{plain} {plain}", f"{plain} {LISTING}", f"{LISTING} {plain}", f"{plain} " + "very " * 40]
        base = score("reasoning_length", policy, render("disallow", ["iptv"], plain))
        for text in padded:
            assert score("reasoning_length", policy, render("disallow", ["iptv"], text)) <= base

    def test_bad_band_is_a_user_error(self, policy):
        with pytest.raises(UserError, match="min_words"):
            build("reasoning_length", policy, min_words=10, max_words=5)

    @settings(max_examples=300, deadline=None)
    @given(text=st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=80) | st.text(max_size=40))
    def test_words_are_the_lowercased_word_runs(self, text):
        """`words` takes a bytes-translate shortcut on ASCII text; it must match the `\\w+` definition exactly."""
        assert words(text) == re.findall(r"\w+", text.lower())


class TestRegistry:
    def test_lists_the_builtins(self):
        assert {"format_strict", "format_soft", "format_partial", "verdict", "categories", "reasoning_length"} <= set(
            rewards.REGISTRY
        )
        assert set(rewards.DEFAULT_REWARDS) <= set(rewards.REGISTRY)

    def test_builds_only_the_named_rewards_with_stable_names(self, policy):
        built = rewards.build_rewards(["verdict", "format_soft"], policy)
        assert [r.__name__ for r in built] == ["verdict", "format_soft"]

    def test_unknown_name_lists_the_known_ones(self, policy):
        with pytest.raises(UserError, match=r"unknown reward 'verdikt' \(known rewards: categories, format_partial"):
            rewards.build_rewards(["verdikt"], policy)

    def test_unknown_param_lists_the_params(self, policy):
        with pytest.raises(UserError, match=r"no param missed \(params: correct=1\.0, missed_violation=-1\.0"):
            rewards.build_rewards(["verdict"], policy, {"verdict": {"missed": -2.0}})

    def test_params_for_unselected_or_repeated_rewards_are_errors(self, policy):
        with pytest.raises(UserError, match="not selected: categories"):
            rewards.build_rewards(["verdict"], policy, {"categories": {"metric": "f1"}})
        with pytest.raises(UserError, match="more than once"):
            rewards.build_rewards(["verdict", "verdict"], policy)

    def test_missing_column_names_it(self, policy):
        with pytest.raises(UserError, match="column 'label'"):
            build("verdict", policy)([GOOD_ALLOW])

    def test_a_registered_function_is_built_with_its_params(self, policy):
        @rewards.register
        def answer_brevity(completions, *, max_chars=10, **_):
            return [float(len(rewards.completion_text(c)) <= max_chars) for c in completions]

        try:
            plain = build("answer_brevity", policy)
            tuned = build("answer_brevity", policy, max_chars=1000)
            assert (plain([GOOD_ALLOW]), tuned([GOOD_ALLOW], label=["allow"])) == ([0.0], [1.0])
            assert plain.__name__ == tuned.__name__ == "answer_brevity"
            with pytest.raises(ValueError, match="already registered"):
                rewards.register(type("Clash", (rewards.Reward,), {"name": "answer_brevity"}))
        finally:
            del rewards.REGISTRY["answer_brevity"]

    def test_a_registered_function_gets_the_policy_and_columns(self, policy):
        @rewards.register
        def names_policy_category(completions, label, *, policy, **_):
            return [float(any(c in str(completion) for c in policy.category_ids)) for completion in completions]

        try:
            reward = build("names_policy_category", policy)
            assert rewards.registry.required_columns("names_policy_category") == ("label",)
            assert reward([GOOD_DISALLOW, GOOD_ALLOW], label=["disallow", "allow"]) == [1.0, 0.0]
            assert "policy" not in rewards.reward_params("names_policy_category")
        finally:
            del rewards.REGISTRY["names_policy_category"]

    def test_rewards_score_the_whole_answer_when_the_prompt_started_it(self, policy):
        """Fast-form GRPO rows end their prompt in fast mode's empty reasoning (`answer_start`): the model samples only
        `DISALLOW: iptv\n</answer>`, and every reward, built-in or registered function, reads start + completion."""

        @rewards.register
        def starts_with_reasoning(completions, **_):
            return [float(str(c).startswith("<reasoning>")) for c in completions]

        try:
            start = "<reasoning>\n</reasoning>\n<answer>\n"
            columns = {"label": ["disallow"] * 2, "categories": [["iptv"]] * 2, "text": [LISTING] * 2}
            sampled = ["DISALLOW: iptv\n</answer>", "ALLOW\n</answer>"]
            assert build("verdict", policy)(sampled, answer_start=[start] * 2, **columns) == [1.0, -1.0]
            assert build("verdict", policy)(sampled, answer_start=["", ""], **columns) == [-1.0, -1.0]
            assert build("starts_with_reasoning", policy)(sampled, answer_start=[start, ""]) == [1.0, 0.0]
            conversational = [[{"role": "assistant", "content": GOOD_DISALLOW}]]
            assert build("starts_with_reasoning", policy)(conversational, answer_start=[""]) == [0.0]
        finally:
            del rewards.REGISTRY["starts_with_reasoning"]

    @pytest.mark.parametrize("name", rewards.DEFAULT_REWARDS)
    def test_picklable_and_ignores_trainer_keywords(self, name, policy):
        reward = pickle.loads(pickle.dumps(build(name, policy)))
        assert reward.__name__ == name
        trl_keywords = {
            "prompts": [[{"role": "user", "content": "x"}]],
            "completion_ids": [[1, 2, 3]],
            "trainer_state": object(),
            "log_extra": print,
            "log_metric": print,
            "id": ["row-1"],
            "source": ["synthetic"],
        }
        columns = {"label": ["disallow"], "categories": [["iptv"]], "text": [LISTING], **trl_keywords}
        values = reward([[{"role": "assistant", "content": GOOD_DISALLOW}]], **columns)
        assert len(values) == 1


anything = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.sampled_from(["<reasoning>", "</reasoning>", "<answer>", "</answer>", "ALLOW", "DISALLOW:", ", ", "iptv"])
        | st.text(max_size=15),
        max_size=12,
    ).map("".join),
    st.none(),
    st.integers(),
    st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": st.text(max_size=50) | st.none()})),
)
row = st.one_of(
    st.just(("allow", [])),
    st.tuples(st.just("disallow"), st.lists(st.sampled_from(["iptv", "spam", "gambling"]), min_size=1, unique=True)),
)


@settings(max_examples=150, deadline=None)
@given(completions=st.lists(anything, min_size=1, max_size=6), rows=st.data(), listing=st.text(max_size=200))
def test_every_reward_returns_one_finite_float_or_none_per_completion(policy, completions, rows, listing):
    labels, golds = zip(*[rows.draw(row) for _ in completions], strict=True)
    for reward in rewards.build_rewards(list(rewards.REGISTRY), policy):
        values = reward(completions, label=list(labels), categories=list(golds), text=[listing] * len(completions))
        assert len(values) == len(completions)
        assert all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in values), (reward.__name__, values)
        if reward.__name__ != "categories":
            assert None not in values


def test_huge_completion_is_scored_quickly(policy):
    huge = GOOD_ALLOW.replace("A printable", "A printable " + "big " * 50_000) + "tail " * 50_000
    built = rewards.build_rewards(list(rewards.DEFAULT_REWARDS), policy)
    values = [r([huge], label=["allow"], categories=[[]], text=[LISTING])[0] for r in built]
    assert values == [0.0, 1.0, pytest.approx(0.4), 1.0, None, 0.0]
