"""`evals recut`: a finished fast-mode evaluation read again at another threshold, from its saved scores."""

import json
import shutil

import pytest

from evals.__main__ import main
from evals.recut import recut
from inference.fast_answer import Scores, fast_verdict
from moderation.errors import UserError

ROWS = [
    {"text": "Premium IPTV 12 months, 18,000 live channels, M3U link", "label": "disallow", "categories": ["iptv"]},
    {
        "text": "Fixed-match betting tips, sure wins, casino bonus credits",
        "label": "disallow",
        "categories": ["gambling"],
    },
    {"text": "Watercolor brush pack for Procreate, 40 brushes", "label": "allow", "categories": []},
    {"text": "Poker night art print: vintage playing cards, A3 PDF", "label": "allow", "categories": []},
    {"text": "Notion budget template for freelancers", "label": "allow", "categories": []},
    {"text": "Bank login clone kit, captures passwords", "label": "disallow", "categories": ["phishing"]},
]


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory, tiny_model_dir):
    """A model folder of its own (serve's threshold is read from <model>/eval) and its fast-mode eval on dev."""
    root = tmp_path_factory.mktemp("recut")
    model = root / "model"
    shutil.copytree(tiny_model_dir, model)
    data = root / "dev.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    out = root / "dev-fast"
    main(
        ["run", "--model", str(model), "--data", str(data), "--out", str(out), "--mode", "fast", "--n-bootstrap", "20"]
    )
    return model, out


def records(folder):
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_recut_at_the_eval_threshold_changes_nothing(fast_run, tmp_path):
    _, run = fast_run
    recut([run], 0.5, tmp_path)
    before, after = metrics(run), metrics(tmp_path / run.name)
    for key in ("accuracy", "f1", "fpr", "macro_f1", "accuracy_ci95", "macro_f1_ci95", "scores"):
        assert after[key] == before[key]
    assert [r["completion"] for r in records(tmp_path / run.name)] == [r["completion"] for r in records(run)]
    assert after["config"]["recut_from"] == str(run) and after["label"] == before["label"]  # as evals run labels it


@pytest.mark.parametrize("threshold", [0.0, 0.37, 1.0])
def test_recut_verdicts_are_the_serving_rule_at_the_new_threshold(fast_run, tmp_path, threshold):
    _, run = fast_run
    recut([run], threshold, tmp_path)
    got = records(tmp_path / run.name)
    for record in got:
        verdict = fast_verdict(Scores(record["score"], record["category_share"], 0.0), threshold)
        assert (record["decision"] == "disallow") == verdict.flagged
        assert set(record["predicted_categories"]) == {c for c, hit in verdict.categories.items() if hit}
    if threshold == 0.0:
        assert metrics(tmp_path / run.name)["fpr"] == 1.0  # everything flagged
    assert (tmp_path / run.name / "report.md").is_file() and (tmp_path / "compare.md").is_file()


def test_served_takes_each_models_held_back_threshold(fast_run, tmp_path):
    model, run = fast_run
    held_back = model / "eval" / "holdout"
    held_back.mkdir(parents=True)
    record = {
        "config": {"model": str(model), "data": "runs/x/holdout.parquet", "mode": "fast"},
        "accuracy": 0.9,
        "n": 200,
        "scores": {"threshold_at_fpr": {"0.05": 0.62}},
    }
    (held_back / "metrics.json").write_text(json.dumps(record))
    try:
        recut([run, run], "served", tmp_path)  # the same run twice: its paired difference with itself is zero
    finally:
        shutil.rmtree(model / "eval")
    chosen = metrics(tmp_path / run.name)["config"]
    assert chosen["threshold"] == 0.62 and "holdout" in chosen["threshold_source"]
    assert "Paired differences" in (tmp_path / "compare.md").read_text()


def test_served_without_a_held_back_eval_is_one_line(fast_run, tmp_path, capsys):
    _, run = fast_run
    with pytest.raises(SystemExit) as exit_info:
        main(["recut", str(run), "--threshold", "served", "--out", str(tmp_path / "served")])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err.strip()
    assert "no fast-mode eval of its held-back slice" in error and "\n" not in error
    assert not (tmp_path / "served").exists()


def test_a_reasoning_run_or_its_own_folder_is_refused(fast_run, tmp_path):
    _, run = fast_run
    reasoning = tmp_path / "reasoning"
    reasoning.mkdir()
    (reasoning / "metrics.json").write_text(json.dumps({"config": {"mode": "reasoning"}}))
    with pytest.raises(UserError, match="not a fast-mode evaluation"):
        recut([reasoning], 0.5, tmp_path / "out")
    with pytest.raises(UserError, match="overwrite"):
        recut([run], 0.5, run.parent)


def test_one_label_data_recuts_without_scores(tiny_model_dir, tmp_path):
    """Real pages are all allowed: no ROC or reliability diagram, yet the FPR at the new cut is written."""
    data = tmp_path / "pages.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS if r["label"] == "allow"), encoding="utf-8")
    run = tmp_path / "pages-fast"
    main(["run", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(run), "--mode", "fast"])
    recut([run], 0.0, tmp_path / "cut")
    assert "scores" not in metrics(run)
    assert metrics(tmp_path / "cut" / run.name)["fpr"] == 1.0
    assert not (tmp_path / "cut" / run.name / "reliability_diagram.png").exists()
