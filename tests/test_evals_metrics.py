"""Metrics against hand-computed values (tests/cases/evals_metrics.json), plus the parts that are not tables."""

import json
from pathlib import Path

import pytest
from sklearn.metrics import f1_score

from evals.metrics import bootstrap_intervals, compute_metrics, paired_difference
from evals.report import source_section

CASES = json.loads((Path(__file__).parent / "cases" / "evals_metrics.json").read_text())
CATEGORY_IDS = ("harassment", "adult", "spam", "non_fiat_currency", "gambling", "iptv", "phishing")


def records(rows, latency=0.5):
    return [
        {
            "label": label,
            "categories": gold,
            "decision": decision,
            "predicted_categories": predicted,
            "status": "ok" if decision else "missing_answer",
            "reasoning": "two words",
            "latency_s": latency,
            "text": "x" * 50,
        }
        for label, gold, decision, predicted in rows
    ]


def lookup(metrics, dotted):
    value = metrics
    for key in dotted.split("."):
        value = value[key]
    return value


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_metrics_case(case):
    metrics = compute_metrics(records(case["rows"]), CATEGORY_IDS, n_bootstrap=0)
    for key, expected in case["expected"].items():
        actual = lookup(metrics, key)
        if isinstance(expected, float):
            assert actual == pytest.approx(expected, abs=1e-9), key
        else:
            assert actual == expected, key


class TestBootstrap:
    rows = CASES[0]["rows"] * 5

    def test_interval_brackets_the_point_estimate_and_is_reproducible(self):
        first = compute_metrics(records(self.rows), CATEGORY_IDS, n_bootstrap=200, seed=1)
        low, high = first["f1_ci95"]
        assert 0 <= low <= first["f1"] <= high <= 1
        assert compute_metrics(records(self.rows), CATEGORY_IDS, n_bootstrap=200, seed=1)["f1_ci95"] == [low, high]

    def test_resampled_scores_match_the_point_estimates_on_the_unresampled_data(self):
        rows = records(self.rows)
        expected = f1_score(
            [r[0] for r in self.rows], [r[2] or "parse_failure" for r in self.rows], labels=["disallow"],
            average="macro", zero_division=0,
        )  # fmt: skip
        # With every resample equal to the data itself, each interval collapses onto the point estimate.
        one = records(self.rows[:1] * 3)
        assert bootstrap_intervals(one, CATEGORY_IDS, 5, 0)["f1"] == [1.0, 1.0]
        metrics = compute_metrics(rows, CATEGORY_IDS, n_bootstrap=0)
        assert metrics["f1"] == pytest.approx(expected)
        intervals = bootstrap_intervals(rows, CATEGORY_IDS, 2000, 0)
        for name in ("accuracy", "f1", "fpr", "macro_f1"):
            low, high = intervals[name]
            assert low < metrics[name] < high, name
        alike = records([self.rows[4]] * 2 + [self.rows[6]] * 2)  # allowed: one answered ALLOW, one unparseable
        assert bootstrap_intervals(alike, CATEGORY_IDS, 3000, 0)["fpr"] == [0.0, 1.0]

    def test_disabled_gives_none(self):
        metrics = compute_metrics(records(self.rows), CATEGORY_IDS, n_bootstrap=0)
        assert metrics["f1_ci95"] is metrics["fpr_ci95"] is metrics["accuracy_ci95"] is metrics["macro_f1_ci95"] is None


def test_latency_throughput_and_reasoning_length():
    rows = records(CASES[1]["rows"])
    for record, latency in zip(rows, [0.1, 0.2, 0.3], strict=True):
        record["latency_s"] = latency
    metrics = compute_metrics(rows, CATEGORY_IDS, n_bootstrap=0)
    assert metrics["latency_p50_s"] == pytest.approx(0.2)
    assert metrics["latency_p95_s"] == pytest.approx(0.29)
    assert metrics["items_per_s"] == pytest.approx(3 / 0.6)
    assert metrics["mean_reasoning_words"] == 2.0


def test_metrics_json_has_the_issue_keys():
    metrics = compute_metrics(records(CASES[0]["rows"]), CATEGORY_IDS, n_bootstrap=10)
    keys = (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "fpr",
        "fpr_parsed",
        "macro_f1",
        "parse_failure_rate",
        "per_category",
    )
    for key in keys:
        assert key in metrics
    json.dumps(metrics)  # serialisable as is


def test_no_records_is_an_error():
    with pytest.raises(ValueError):
        compute_metrics([], CATEGORY_IDS)


def with_ids(rows):
    return [{**r, "id": str(i)} for i, r in enumerate(records(rows))]


def test_paired_difference_counts_fixed_and_broken_items():
    gold = [("disallow", ["spam"]), ("disallow", ["iptv"]), ("allow", []), ("allow", [])] * 5
    base = with_ids([(label, g, "allow", []) for label, g in gold])  # misses every violation
    better = with_ids([(label, g, label, g) for label, g in gold[:-1]] + [("allow", [], "disallow", ["spam"])])

    same = paired_difference(base, base, CATEGORY_IDS)
    assert same["accuracy"] == {"delta": 0.0, "ci95": [0.0, 0.0]} and same["fixed"] == same["broken"] == 0

    d = paired_difference(base, better, CATEGORY_IDS)
    assert (d["n"], d["fixed"], d["broken"]) == (20, 10, 1)
    assert d["accuracy"]["delta"] == pytest.approx((10 - 1) / 20)
    full = [compute_metrics(r, CATEGORY_IDS, n_bootstrap=0) for r in (base, better)]
    for name in ("macro_f1", "f1", "fpr"):  # the point deltas are the full metrics' differences
        assert d[name]["delta"] == pytest.approx(full[1][name] - full[0][name])
    low, high = d["accuracy"]["ci95"]
    assert 0 < low < d["accuracy"]["delta"] < high
    assert d["macro_f1"]["ci95"][0] > 0 and d["f1"]["ci95"][0] > 0
    assert d["fpr"]["delta"] == pytest.approx(0.1) and d["fpr"]["ci95"][0] >= 0  # one false alarm in ten allowed


def test_paired_difference_refuses_unpaired_items():
    rows = with_ids([("allow", [], "allow", [])] * 3)
    with pytest.raises(ValueError, match="same items"):
        paired_difference(rows, rows[::-1], CATEGORY_IDS)


def test_paired_difference_leaves_out_rows_outside_the_policy():
    rows = [
        ("disallow", ["spam"], "disallow", ["spam"]),
        ("allow", [], "allow", []),
        ("disallow", ["other"], "allow", []),
    ]
    base = with_ids(rows)
    other = with_ids([*rows[:2], ("disallow", ["other"], "disallow", ["spam"])])
    d = paired_difference(base, other, CATEGORY_IDS)
    assert (d["n"], d["fixed"], d["accuracy"]["delta"]) == (2, 0, 0.0)


def test_scores_give_roc_auc_and_brier_only_when_every_item_has_one():
    rows = records([("disallow", ["spam"], "disallow", ["spam"]), ("allow", [], "allow", []),
                    ("allow", [], "disallow", ["spam"])])  # fmt: skip
    assert "scores" not in compute_metrics(rows, CATEGORY_IDS, n_bootstrap=0)
    for row, score in zip(rows, [0.9, 0.2, 0.6], strict=True):
        row["score"] = score
    scores = compute_metrics(rows, CATEGORY_IDS, n_bootstrap=0)["scores"]
    assert scores["roc_auc"] == 1.0
    assert scores["brier"] == pytest.approx((0.1**2 + 0.2**2 + 0.6**2) / 3)


def test_flagged_share_by_source_names_which_allowed_pages_pay():
    rows = [
        ("allow", [], "allow", []),  # an ordinary page, passed
        ("allow", [], "allow", []),
        ("allow", [], "disallow", ["gambling"]),  # a look-alike flagged: a false alarm
        ("allow", [], None, []),  # a look-alike with no readable answer: served flagged, so a false alarm too
        ("disallow", ["iptv"], "disallow", ["iptv"]),
        ("disallow", ["spam"], "allow", []),
    ]
    listed = records(rows)
    for record, source in zip(listed, ["seed", "seed", "look", "look", "synthetic", "synthetic"], strict=True):
        record["source"] = source
    metrics = compute_metrics(listed, CATEGORY_IDS, n_bootstrap=0)
    by_source = metrics["by_source"]
    assert {s: (v["n"], v["n_allowed"], v["flagged"]) for s, v in by_source.items()} == {
        "look": (2, 2, 1.0), "seed": (2, 2, 0.0), "synthetic": (2, 0, 0.5),
    }  # fmt: skip
    only_seed = {"label": "b", "by_source": {"seed": by_source["seed"]}}
    table = "\n".join(source_section([{**metrics, "label": "a"}, only_seed]))
    assert "| look | 2 | allow | 1.000 | – |" in table and "| synthetic | 2 | disallow | 0.500 | – |" in table
    assert "| seed | 2 | allow | 0.000 | 0.000 |" in table
    older = {"label": "old", "by_source": {"seed": {"n": 2, "accuracy": 1.0}}}  # before flagged and n_allowed
    assert "| seed | 2 | allow | – | 0.000 |" in "\n".join(source_section([older, {**metrics, "label": "a"}]))
