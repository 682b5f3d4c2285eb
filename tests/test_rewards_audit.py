"""`rewards.audit`: statistics, zero-variance groups and suspected hacks over a file of completions."""

import json

import pytest

from moderation.errors import UserError
from moderation.verdict import render
from rewards.audit import audit, load_completions, main

LISTING = "Watch 500+ live sports channels with our 12 month IPTV subscription. M3U link delivered instantly."
GOOD = render("disallow", ["iptv"], "Sells paid sports channels through an M3U playlist without any licence.")


def rows(policy):
    spam = render("disallow", policy.category_ids, "Could be anything at all, really, so every category.")
    base = {"label": "disallow", "categories": ["iptv"], "text": LISTING}
    return [
        {**base, "group": "a", "completion": GOOD},
        {**base, "group": "a", "completion": render("disallow", ["iptv"], LISTING)},  # copied listing
        {**base, "group": "a", "completion": "<reasoning></reasoning><answer>DISALLOW: iptv</answer>"},  # empty
        {**base, "group": "a", "completion": spam},
        {**base, "group": "b", "completion": "garbage"},
        {**base, "group": "b", "completion": [{"role": "assistant", "content": "more garbage"}]},
    ]


def test_reports_stats_zero_variance_and_hacks(policy):
    report = audit(rows(policy), policy)
    assert (report.completions, report.groups) == (6, 2)
    verdict = report.rewards["verdict"]
    assert (verdict.mean, verdict.count, verdict.not_applicable) == (pytest.approx(2 / 6), 6, 0)
    assert verdict.zero_variance_groups == 1.0  # a: all right, b: all unparseable; no verdict signal in either
    assert report.rewards["format_strict"].zero_variance_groups == 0.5  # a varies (empty reasoning), b does not
    assert report.hacks == {
        "copied_listing": 1,
        "empty_reasoning_right_verdict": 1,
        "category_spam": 1,
        "template_reasoning": 1,
    }
    assert report.hack_rows == {
        "copied_listing": [1],
        "empty_reasoning_right_verdict": [2],
        "category_spam": [3],
        "template_reasoning": [3],  # "Could be anything at all" cites nothing of the listing
    }
    assert report.total.count == 6
    weighted = audit(rows(policy), policy, ["verdict", "format_strict"], weights={"verdict": 2.0, "format_strict": 0.0})
    assert weighted.total.mean == pytest.approx(2 * verdict.mean)
    text = report.render()
    assert "verdict" in text and "suspected category_spam: 1 (rows 3)" in text


def test_allowed_rows_are_not_applicable_for_categories(policy):
    records = [{"completion": GOOD, "label": "allow", "categories": [], "text": LISTING}] * 3
    stats = audit(records, policy, ["categories", "verdict"]).rewards
    assert (stats["categories"].count, stats["categories"].not_applicable, stats["categories"].mean) == (0, 3, None)
    assert stats["verdict"].mean == -0.5 and stats["verdict"].zero_variance_groups is None  # no groups given


def test_logged_rewards_stand_in_for_missing_labels(policy):
    records = [{"completion": GOOD, "rewards": {"verdict": 1.0}}, {"completion": "x", "rewards": {"verdict": -1.0}}]
    report = audit(records, policy, ["verdict", "categories", "format_strict"])
    assert (report.rewards["verdict"].source, report.rewards["verdict"].mean) == ("logged", 0.0)
    assert report.skipped == {"categories": "needs column(s) label, categories"}
    assert report.rewards["format_strict"].mean == 0.5


def test_cli_prints_the_report_and_json(policy, tmp_path, capsys):
    path = tmp_path / "completions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows(policy)) + "\n")
    assert len(load_completions(path)) == 6
    main([str(path)])
    assert "suspected copied_listing: 1 (rows 1)" in capsys.readouterr().out
    main([str(path), "--json", "--rewards", "verdict"])
    assert list(json.loads(capsys.readouterr().out)["rewards"]) == ["verdict"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json\n", "invalid JSON"), ('{"label": "allow"}\n', "'completion' field"), ("", "no completions")],
)
def test_bad_input_ends_with_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        main([str(path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_reward_is_a_user_error(policy):
    with pytest.raises(UserError, match="unknown reward"):
        audit([{"completion": GOOD, "label": "allow"}], policy, ["nope"])


def test_boilerplate_reasoning_is_flagged_as_template(policy):
    base = {"label": "allow", "categories": [], "text": "Lightroom preset pack, 24 warm film looks for weddings."}
    report = audit(
        [
            {**base, "completion": render("allow", [], "The listing is fine.")},
            {**base, "completion": render("allow", [], "Warm film Lightroom presets for wedding photos.")},
        ],
        policy,
        ["reasoning_grounded"],
    )
    assert report.hack_rows["template_reasoning"] == [0]
    assert report.rewards["reasoning_grounded"].mean == pytest.approx(0.5)
