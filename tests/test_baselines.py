"""The baselines fit on the train split only: TF-IDF (cached by train's hash) and the keyword matcher's min_hits."""

import json
import os

import joblib
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_evals_runner import TRAIN_ROWS, write_train

import evals.tfidf
from evals.baselines import MIN_HITS_CANDIDATES, KeywordModerator, choose_min_hits
from evals.data import Item
from evals.report import compare
from evals.runner import EvalConfig, run_eval
from moderation.errors import UserError

DEV_ONLY = "zqxvelbrat"  # a token no train row has
DEV = [
    {"text": f"{DEV_ONLY} IPTV premium channels M3U playlist, {DEV_ONLY} codes", "label": "disallow",
     "categories": ["iptv"]},
    {"text": f"Guaranteed casino betting wins {DEV_ONLY} {DEV_ONLY}", "label": "disallow", "categories": ["gambling"]},
    {"text": f"{DEV_ONLY} watercolor brush pack for Procreate", "label": "allow"},
    {"text": f"Printable {DEV_ONLY} planner template", "label": "allow"},
]  # fmt: skip


@pytest.fixture
def dev_file(tmp_path):
    write_train(tmp_path)
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in DEV), encoding="utf-8")
    return path


def evaluate(model, data, out, **settings):
    run_eval(EvalConfig(model=model, data=str(data), out=str(out), n_bootstrap=0, **settings), report=False)
    return json.loads((out / "metrics.json").read_text())


class TestTfidf:
    def test_fits_on_train_only_and_records_what_it_chose(self, tmp_path, dev_file):
        metrics = evaluate("tfidf", dev_file, tmp_path / "t")
        fitted = metrics["baseline"]
        assert fitted["from_cache"] is False and fitted["n_train"] == len(TRAIN_ROWS.read_text().splitlines())
        assert fitted["decision_C"] in evals.tfidf.SETTINGS["C_grid"]
        assert fitted["categories_C"] in evals.tfidf.SETTINGS["C_grid"]
        assert fitted["cache_key"] == evals.tfidf.cache_key(tmp_path / "train.parquet")
        model = joblib.load(fitted["cache_path"])
        word, char = (vectorizer for _, vectorizer in model.features.transformer_list)
        assert "iptv" in word.vocabulary_ and DEV_ONLY not in word.vocabulary_
        assert not any(DEV_ONLY[:5] in gram for gram in char.vocabulary_)
        assert metrics["n"] == len(DEV) and metrics["parse_failure_rate"] == 0.0
        assert 0.0 <= metrics["scores"]["roc_auc"] <= 1.0  # every prediction carries P(disallow)
        records = [json.loads(line) for line in (tmp_path / "t" / "predictions.jsonl").read_text().splitlines()]
        assert all(0.0 <= r["score"] <= 1.0 and r["status"] == "ok" for r in records)

    def test_compare_sets_scored_runs_side_by_side_at_equal_false_alarms(self, tmp_path, dev_file):
        evaluate("tfidf", dev_file, tmp_path / "t")
        evaluate("keyword", dev_file, tmp_path / "k")  # no scores: no row in the scores table, no curve
        text = compare([tmp_path / "t", tmp_path / "k"], tmp_path / "cmp").read_text()
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("| model | ROC-AUC"))
        assert lines[start].endswith("| TPR@1% | TPR@2% | TPR@5% | TPR@10% |")
        rows = lines[start + 2 : lines.index("", start)]
        assert [row.split(" | ")[0] for row in rows] == ["| tfidf"]
        assert "![ROC curves, low-FPR region](roc.png)" in text and (tmp_path / "cmp" / "roc.png").stat().st_size

    def test_a_cache_hit_does_not_refit(self, tmp_path, dev_file, monkeypatch):
        first = evaluate("tfidf", dev_file, tmp_path / "a")["baseline"]
        stamp = os.stat(first["cache_path"]).st_mtime_ns

        def refit(*args, **kwargs):
            raise AssertionError("refitted despite a cached model")

        monkeypatch.setattr(evals.tfidf, "fit", refit)
        second = evaluate("tfidf", dev_file, tmp_path / "b")["baseline"]
        assert second["from_cache"] is True and second["cache_key"] == first["cache_key"]
        assert second["decision_C"] == first["decision_C"]
        assert os.stat(first["cache_path"]).st_mtime_ns == stamp

    def test_another_train_split_is_another_cache_key(self, tmp_path, dev_file):
        first = evals.tfidf.cache_key(tmp_path / "train.parquet")
        rows = pq.read_table(tmp_path / "train.parquet").to_pylist()
        pq.write_table(pa.Table.from_pylist(rows[:-1]), tmp_path / "train.parquet")
        assert evals.tfidf.cache_key(tmp_path / "train.parquet") != first

    def test_no_train_split_is_a_one_line_error(self, tmp_path):
        data = tmp_path / "elsewhere" / "dev.jsonl"
        data.parent.mkdir()
        data.write_text(json.dumps(DEV[0]) + "\n")
        with pytest.raises(UserError, match="--train"):
            evaluate("tfidf", data, tmp_path / "t")


def cue_rows(policy, hits_disallowed: int, hits_allowed: int) -> list[Item]:
    """Rows made of cue words: each disallowed row holds `hits_disallowed` cues of one category, each allowed row
    `hits_allowed` cues of one category."""
    cues = {cid: sorted(words) for cid, words in KeywordModerator(policy).cues.items() if len(words) >= 5}
    rows = []
    for n, (cid, words) in enumerate(sorted(cues.items())):
        rows.append(Item(f"d{n}", " ".join(words[:hits_disallowed]), "disallow", (cid,)))
        rows.append(Item(f"a{n}", " ".join(words[:hits_allowed]) or "plain planner", "allow"))
    return rows


class TestKeywordMinHits:
    def test_chosen_on_train(self, policy):
        assert choose_min_hits(policy, cue_rows(policy, 1, 0))["min_hits"] == 1
        # Ties (3 and 4 both separate perfectly) go to the stricter value.
        strict = choose_min_hits(policy, cue_rows(policy, 4, 2))
        assert strict["min_hits"] == 4 and strict["train_f1"]["2"] < 1.0
        assert set(strict["train_f1"]) == {str(m) for m in MIN_HITS_CANDIDATES}

    def test_recorded_in_metrics_and_used(self, tmp_path, dev_file, policy):
        metrics = evaluate("keyword", dev_file, tmp_path / "k")
        train = [
            Item(r["id"], r["text"], r["label"], tuple(r["categories"]))
            for r in pq.read_table(tmp_path / "train.parquet").to_pylist()
        ]
        chosen = choose_min_hits(policy, train)
        assert metrics["baseline"]["min_hits"] == chosen["min_hits"]
        assert metrics["baseline"]["train_sha256"]
        moderator = KeywordModerator(policy, chosen["min_hits"])
        records = [json.loads(line) for line in (tmp_path / "k" / "predictions.jsonl").read_text().splitlines()]
        assert [r["completion"] for r in records] == [moderator.judge(row["text"]) for row in DEV]

    def test_a_given_value_needs_no_train_split(self, tmp_path):
        data = tmp_path / "elsewhere.jsonl"
        data.write_text(json.dumps(DEV[0]) + "\n")
        metrics = evaluate("keyword", data, tmp_path / "k", keyword_min_hits=3)
        assert metrics["baseline"]["min_hits"] == 3
