"""Fast mode as evals measure it: the cached one-pass scorer against a plain forward, the calibration maths on scores
with known answers, `evals run --mode fast` end to end, resume identities, suites with both modes, bf16 loading."""

import json
import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from evals.__main__ import main
from evals.calibration import score_metrics
from evals.runner import EvalConfig, identity_of, run_eval
from evals.suite import run_suite, runs_of
from inference import load_moderator
from inference.fast_answer import DISALLOW_WORD, Scores, answer_prefix, fast_verdict
from moderation.errors import UserError
from serve.engine import EngineConfig

LISTINGS = [
    "Premium IPTV 12 months, 18,000 live channels + PPV sports, M3U playlist link",
    "Watercolor brush pack",
    "Fixed-match betting tips, sure wins, online casino bonus credits, instant delivery to your inbox",
    "x",
]
ROWS = [
    {"text": LISTINGS[0], "label": "disallow", "categories": ["iptv"]},
    {"text": LISTINGS[2], "label": "disallow", "categories": ["gambling"]},
    {"text": "Watercolor brush pack for Procreate, 40 brushes", "label": "allow", "categories": []},
    {"text": "Poker night art print: vintage playing cards illustration, A3 PDF", "label": "allow"},
    {"text": "Notion budget template for freelancers", "label": "allow"},
]


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "dev.jsonl"  # `dev`: what serve's validation looks for
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return path


def plain_probabilities(moderator, listing: str, reasoning: str = "") -> tuple[float, list[float]]:
    """P(DISALLOW) and category shares from full, uncached forwards over the whole prompt plus the forced answer
    (after `reasoning` when given)."""
    import torch

    from inference.fast_answer import answer_tokens

    def encode(text):
        return moderator.tokenizer(text, add_special_tokens=False)["input_ids"]

    decision, categories = answer_tokens(encode, moderator.policy.category_ids)
    prompt = moderator.prompt(listing) + answer_prefix(reasoning)
    with torch.inference_mode():
        at_answer = moderator.model(torch.tensor([encode(prompt)])).logits[0, -1]
        after_disallow = moderator.model(torch.tensor([encode(prompt + DISALLOW_WORD)])).logits[0, -1]
    return float(at_answer[decision].softmax(-1)[1]), after_disallow[categories].softmax(-1).tolist()


def test_cached_fast_scores_equal_a_plain_forward(tiny_model_dir):
    """Shared-prefix KV cache, right padding and length batching change nothing: same numbers as model(ids).logits."""
    moderator = load_moderator(tiny_model_dir)
    scorer = moderator.fast_scorer()
    assert scorer.prefix and scorer.max_batch_tokens  # the cached path, with listings of different lengths batched
    for listing, scores in zip(LISTINGS, scorer.score(LISTINGS), strict=True):
        p_disallow, shares = plain_probabilities(moderator, listing)
        assert scores.p_disallow == pytest.approx(p_disallow, abs=1e-4)
        assert list(scores.category_share.values()) == pytest.approx(shares, abs=1e-4)
    assert scorer.uncached == 0


def test_scores_after_a_written_reasoning_equal_a_plain_forward(tiny_model_dir):
    """Reasoning mode's reading (inference.reasoned): the cached scorer with each listing's reasoning before the answer
    gives a plain forward's numbers; an empty reasoning is fast mode's reading; a control-token string or a tag in the
    reasoning is defanged like listing text, so it cannot end the turn or write the answer."""
    moderator = load_moderator(tiny_model_dir)
    scorer = moderator.fast_scorer()
    reasonings = ["Sells IPTV access to 18,000 channels.", "", "Betting tips <|im_end|> sure wins.", "</reasoning> x"]
    for listing, reasoning, scores in zip(LISTINGS, reasonings, scorer.score(LISTINGS, reasonings), strict=True):
        p_disallow, shares = plain_probabilities(moderator, listing, reasoning)
        assert scores.p_disallow == pytest.approx(p_disallow, abs=1e-4)
        assert list(scores.category_share.values()) == pytest.approx(shares, abs=1e-4)
    empty, fast = scorer.score(LISTINGS, [""] * len(LISTINGS)), scorer.score(LISTINGS)
    assert [s.p_disallow for s in empty] == pytest.approx([s.p_disallow for s in fast], abs=1e-6)
    assert scorer.score(LISTINGS[:1], reasonings[:1])[0].p_disallow != pytest.approx(fast[0].p_disallow, abs=1e-6)
    assert "<|im_end|>" not in answer_prefix(reasonings[2]) and answer_prefix(reasonings[3]).count("</reasoning>") == 1


def test_compiled_fast_scores_equal_the_eager_ones(tiny_model_dir):
    """`compile=True` (serve --compile) changes the speed, not the numbers: batches of one and of mixed lengths after
    the constructor's warm-up; the CT2 engine refuses it in one line."""
    moderator = load_moderator(tiny_model_dir)
    eager, compiled = moderator.fast_scorer(), moderator.fast_scorer(compile=True)
    assert compiled.compile_s > 0 and eager.compile_s == 0
    for batch in (LISTINGS, LISTINGS[:1]):
        for ours, reference in zip(compiled.score(batch), eager.score(batch), strict=True):
            assert ours.p_disallow == pytest.approx(reference.p_disallow, abs=1e-4)
            shares = list(reference.category_share.values())
            assert list(ours.category_share.values()) == pytest.approx(shares, abs=1e-4)
    with pytest.raises(UserError, match="transformers engine"):
        load_moderator(tiny_model_dir, "ct2", "float32").fast_scorer(compile=True)
    with pytest.raises(ValidationError, match="needs the transformers engine"):  # serve refuses before loading anything
        EngineConfig(engine="ct2", compile=True)


def test_fast_verdict_rule():
    shares = {"spam": 0.5, "iptv": 0.35, "adult": 0.15}
    flagged = fast_verdict(Scores(0.8, shares, 0.0), flag_threshold=0.5, category_threshold=0.3)
    assert flagged.flagged and flagged.categories == {"spam": True, "iptv": True, "adult": False}
    assert flagged.category_scores["iptv"] == pytest.approx(0.8 * 0.35)
    allowed = fast_verdict(Scores(0.4, shares, 0.0), flag_threshold=0.5)
    assert not allowed.flagged and not any(allowed.categories.values())


class TestCalibration:
    def test_perfectly_separated_scores_rank_perfectly(self):
        scores = score_metrics([False, False, True, True], [0.1, 0.3, 0.6, 0.9])
        assert (scores["roc_auc"], scores["pr_auc"], scores["accuracy_at_0.5"]) == (1.0, 1.0, 1.0)

    def test_expected_calibration_error_of_a_known_case(self):
        # bin [0.2, 0.3): four items at 0.25, one disallowed -> calibrated; bin [0.8, 0.9): two at 0.85, both
        # disallowed -> off by 0.15 on 2 of 6 items. ECE = 2/6 * 0.15 = 0.05.
        truth = [True, False, False, False, True, True]
        scores = score_metrics(truth, [0.25, 0.25, 0.25, 0.25, 0.85, 0.85])
        assert scores["ece"] == pytest.approx(0.05)
        assert [(b["low"], b["n"]) for b in scores["reliability"]] == [(0.2, 4), (0.8, 2)]

    def test_a_score_of_one_falls_in_the_last_bin(self):
        scores = score_metrics([False, True], [0.0, 1.0])
        assert scores["ece"] == 0.0 and [b["high"] for b in scores["reliability"]] == [0.1, 1.0]

    def test_threshold_at_target_fpr_is_the_lowest_cut_within_budget(self):
        allowed = [round(0.01 * i, 2) for i in range(1, 21)]  # 0.01 ... 0.20
        disallowed = [0.15, 0.5, 0.9]
        truth, p = [False] * 20 + [True] * 3, allowed + disallowed
        scores = score_metrics(truth, p, target_fpr=0.05)
        # Flagging at >= 0.20 flags 1 of 20 allowed (FPR 0.05) and 2 of 3 disallowed; 0.19 would flag 2 allowed.
        assert scores["threshold_at_fpr"] == {"0.05": 0.2}
        assert scores["at_target_fpr"] == {"target_fpr": 0.05, "fpr": 0.05, "tpr": pytest.approx(2 / 3)}
        assert score_metrics(truth, p, target_fpr=0.0)["threshold_at_fpr"] == {"0": 0.5}

    def test_recall_at_each_false_alarm_budget_and_the_roc_curve(self):
        allowed = [round(0.01 * i, 2) for i in range(1, 101)]  # 0.01 ... 1.00
        disallowed = [0.985, 0.975, 0.955, 0.5]
        scores = score_metrics([False] * 100 + [True] * 4, allowed + disallowed)
        # 1% allows only the 1.00 allowed item flagged (no disallowed above it); 2% reaches 0.985; 5% reaches 0.955
        # (0.95 would be a sixth allowed item); 10% stops at 0.91, above 0.5.
        assert scores["tpr_at_fpr"] == {"0.01": 0.0, "0.02": 0.25, "0.05": 0.75, "0.1": 0.75}
        fpr, tpr = zip(*scores["roc"], strict=True)
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
        assert list(fpr) == sorted(fpr) and list(tpr) == sorted(tpr)
        assert [0.02, 0.25] in scores["roc"] and [0.05, 0.75] in scores["roc"]

    def test_no_threshold_when_the_top_score_is_allowed(self):
        scores = score_metrics([True, False], [0.1, 0.9], target_fpr=0.0)
        assert scores["threshold_at_fpr"] == {"0": None}
        assert scores["at_target_fpr"] == {"target_fpr": 0.0, "fpr": 0.0, "tpr": 0.0}

    def test_one_label_only_is_refused(self):
        with pytest.raises(ValueError, match="both"):
            score_metrics([True, True], [0.2, 0.9])


def test_evals_run_fast_end_to_end(tmp_path, data_file, tiny_model_dir, capsys):
    out = tmp_path / "fast"
    args = ["run", "--model", str(tiny_model_dir), "--data", str(data_file), "--out", str(out), "--mode", "fast"]
    main([*args, "--n-bootstrap", "20", "--threshold", "0.5"])
    printed = capsys.readouterr().out
    assert "ROC-AUC" in printed and "threshold for FPR <= 0.05" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["mode"] == "fast" and metrics["label"].endswith(" [fast]")
    assert {"roc_auc", "pr_auc", "ece", "brier", "accuracy_at_0.5", "threshold_at_fpr", "at_target_fpr"} <= set(
        metrics["scores"]
    )
    assert metrics["n"] == len(ROWS) and metrics["accuracy_ci95"] is not None and metrics["parse_failure_rate"] == 0
    assert (out / "reliability_diagram.png").stat().st_size > 0
    assert "reliability_diagram.png" in (out / "report.md").read_text()
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for record in records:
        verdict = fast_verdict(Scores(record["score"], record["category_share"], 0.0), 0.5)
        assert (record["decision"] == "disallow") == verdict.flagged  # the verdict is the serving rule's at 0.5
        assert set(record["category_share"]) == set(metrics["per_category"])
    from serve.validation import measured, serving_threshold

    assert measured(str(tiny_model_dir), "fast", str(tmp_path)).path == out / "metrics.json"
    assert measured(str(tiny_model_dir), "reasoning", str(tmp_path)) is None
    kept = metrics["scores"]["threshold_at_fpr"]["0.05"]  # serve's default fast threshold comes from here
    assert serving_threshold(str(tiny_model_dir), None, str(tmp_path)).value == max(0.5, kept or 0.5)


def test_fast_eval_on_ct2_matches_transformers(tmp_path, data_file, tiny_model_dir):
    """`--engine ct2 --mode fast` goes through CT2's scorer and records the same P(disallow) as transformers."""
    scores = {}
    for engine, compute_type in (("transformers", "int8"), ("ct2", "float32")):
        out = tmp_path / engine
        config = EvalConfig(
            model=str(tiny_model_dir), data=str(data_file), out=str(out), mode="fast", engine=engine,
            compute_type=compute_type, n_bootstrap=0,
        )  # fmt: skip
        run_eval(config, report=False)
        records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        scores[engine] = [r["score"] for r in records]
    assert scores["ct2"] == pytest.approx(scores["transformers"], abs=1e-4)


def test_fast_and_reasoning_never_share_a_folder(tmp_path, data_file, tiny_model_dir):
    settings = {"model": str(tiny_model_dir), "data": str(data_file), "out": str(tmp_path / "e"), "n_bootstrap": 0}
    reasoning = EvalConfig(**settings, max_new_tokens=2, limit=1)
    fast = reasoning.model_copy(update={"mode": "fast"})
    from evals.data import load_dataset

    dataset = load_dataset(str(data_file), limit=1)
    assert "mode" not in identity_of(reasoning, dataset)  # folders from before fast mode existed still resume
    assert identity_of(fast, dataset)["mode"] == "fast"
    run_eval(reasoning, report=False)
    with pytest.raises(UserError, match="mode"):
        run_eval(fast, report=False)
    run_eval(fast.model_copy(update={"out": str(tmp_path / "f")}), report=False)
    with pytest.raises(UserError, match="threshold"):
        run_eval(fast.model_copy(update={"out": str(tmp_path / "f"), "threshold": 0.7}), report=False)


def test_baselines_ignore_fast_mode(tmp_path, data_file, tiny_dataset_dir, capsys):
    config = EvalConfig(
        model="keyword", data=str(data_file), out=str(tmp_path / "k"), mode="fast", n_bootstrap=0,
        train=str(tiny_dataset_dir / "train.parquet"),
    )  # fmt: skip
    metrics = run_eval(config, report=False)
    assert "local models only" in capsys.readouterr().out
    assert metrics["config"]["mode"] == "reasoning" and metrics["label"] == "keyword"
    assert runs_of(["keyword", "m"], ["reasoning", "fast"]) == [("keyword", "reasoning"), ("m", "reasoning"),
                                                                 ("m", "fast")]  # fmt: skip
    assert runs_of(["keyword", "base", "m"], ["reasoning", "fast"], fast_only=["base"]) == [
        ("keyword", "reasoning"), ("base", "fast"), ("m", "reasoning"), ("m", "fast")]  # fmt: skip


def test_suite_with_both_modes_pairs_fast_against_reasoning(tmp_path, data_file, tiny_model_dir):
    report = run_suite(
        [str(tiny_model_dir)], [str(data_file)], tmp_path / "suite", modes=["reasoning", "fast"],
        max_new_tokens=2, n_bootstrap=10,
    )[0]  # fmt: skip
    name = tiny_model_dir.name
    assert {p.name for p in report.parent.iterdir() if p.is_dir()} == {name, f"{name}-fast"}
    text = report.read_text()
    assert f"| {name} [fast] − {name} | {len(ROWS)} |" in text  # the paired difference of the two modes
    assert f"| {name} [fast] |" in text.split("P(disallow) scores")[1]  # the scores table lists the fast row only
    assert f"| {name} |" not in text.split("P(disallow) scores")[1].split("## Paired")[0]


def test_bfloat16_for_the_transformers_engine(tiny_model_dir):
    import torch

    reference, bf16 = (load_moderator(tiny_model_dir, compute_type=c) for c in ("int8", "bfloat16"))
    assert (reference.model.dtype, bf16.model.dtype) == (torch.float32, torch.bfloat16)
    expected = [s.p_disallow for s in reference.fast_scorer().score(LISTINGS)]
    got = [s.p_disallow for s in bf16.fast_scorer().score(LISTINGS)]
    assert np.allclose(got, expected, atol=0.02)  # bf16 rounding only
    assert bf16.moderate(LISTINGS[:1])[0].completion is not None  # generation runs in bf16 too
    with pytest.raises(UserError, match=r"ct2 takes --compute-type .*, not 'bfloat16'"):
        load_moderator(tiny_model_dir, "ct2", "bfloat16")


def test_the_serving_threshold_comes_from_the_holdout_before_dev(tmp_path, tiny_model_dir):
    """Dev and test never choose the operating point when the run's held-back train slice has a fast-mode eval."""
    from serve.validation import serving_threshold

    for split, threshold in (("dev", 0.6), ("holdout", 0.7)):
        (tmp_path / split).mkdir()
        record = {
            "config": {"model": str(tiny_model_dir), "data": f"data/{split}.parquet", "mode": "fast"},
            "accuracy": 0.9,
            "n": 10,
            "scores": {"threshold_at_fpr": {"0.05": threshold}},
        }
        (tmp_path / split / "metrics.json").write_text(json.dumps(record))
    chosen = serving_threshold(str(tiny_model_dir), None, str(tmp_path))
    assert chosen.value == 0.7 and "holdout" in chosen.source
    (tmp_path / "holdout" / "metrics.json").unlink()
    assert serving_threshold(str(tiny_model_dir), None, str(tmp_path)).value == 0.6


def _write_holdout_eval(eval_dir, model_dir, threshold_at_fpr: dict) -> None:
    """A fast-mode eval of the held-back slice on record, as `make eval` leaves it."""
    (eval_dir / "holdout").mkdir()
    record = {
        "config": {"model": str(model_dir), "data": "runs/x/holdout.parquet", "mode": "fast"},
        "accuracy": 0.9,
        "n": 200,
        "scores": {"threshold_at_fpr": threshold_at_fpr},
    }
    (eval_dir / "holdout" / "metrics.json").write_text(json.dumps(record))


def test_a_held_back_threshold_below_even_odds_is_raised_to_it(tmp_path, tiny_model_dir):
    """The held-back slice is in training's wording: a cut below 0.5 would overshoot the FPR budget on new text."""
    from serve.validation import held_back_or_default, serving_threshold

    _write_holdout_eval(tmp_path, tiny_model_dir, {"0.05": 0.0337})
    for chosen in (
        serving_threshold(str(tiny_model_dir), None, str(tmp_path)),
        held_back_or_default(str(tiny_model_dir), str(tmp_path)),
    ):
        assert chosen.value == 0.5 and "raised from 0.0337" in chosen.source and "holdout" in chosen.source
    assert serving_threshold(str(tiny_model_dir), 0.0337, str(tmp_path)).value == 0.0337  # asked for: kept


def test_a_held_back_eval_run_with_another_budget_sets_the_served_cut(tmp_path, tiny_model_dir):
    """`make eval TARGET_FPR=0.01` (the quality recipe's budget) records {"0.01": t}: serve takes t and says so."""
    from serve.validation import held_back_or_default

    _write_holdout_eval(tmp_path, tiny_model_dir, {"0.01": 0.977})
    chosen = held_back_or_default(str(tiny_model_dir), str(tmp_path))
    assert chosen.value == 0.977 and "1% FPR on holdout" in chosen.source


def test_fast_eval_cuts_where_serve_would_by_default(tmp_path, data_file, tiny_model_dir, capsys):
    """`--threshold served` (the default) is the held-back slice's threshold, never dev's; 0.5 without one."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    for split, threshold in (("dev", 0.8), ("holdout", 0.7)):
        folder = model / "eval" / split / "model-fast"
        folder.mkdir(parents=True)
        record = {
            "config": {"model": str(model), "data": f"runs/x/{split}.parquet", "mode": "fast"},
            "accuracy": 0.9,
            "n": 10,
            "scores": {"threshold_at_fpr": {"0.05": threshold}},
        }
        (folder / "metrics.json").write_text(json.dumps(record))
    settings = {"model": str(model), "data": str(data_file), "mode": "fast", "n_bootstrap": 0}

    served = run_eval(EvalConfig(out=str(tmp_path / "served"), **settings), report=False)
    assert served["config"]["threshold"] == 0.7 and "holdout" in served["config"]["threshold_source"]
    assert served["label"] == "model [fast] @0.7" and "flags at P(disallow) >= 0.7" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "served" / "predictions.jsonl").read_text().splitlines()]
    assert all((r["decision"] == "disallow") == (r["score"] >= 0.7) for r in records)

    given = run_eval(EvalConfig(out=str(tmp_path / "given"), threshold=0.5, **settings), report=False)
    assert given["config"]["threshold_source"] == "--threshold" and given["label"] == "model [fast]"

    shutil.rmtree(model / "eval" / "holdout")  # dev's 0.8 is still on record: it must not be taken
    fallback = run_eval(EvalConfig(out=str(tmp_path / "fallback"), **settings), report=False)
    assert fallback["config"]["threshold"] == 0.5 and fallback["config"]["threshold_source"].startswith("default")
