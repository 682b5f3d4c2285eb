"""The runner end to end (keyword baseline, tiny random model), resume, robustness, compare and CLI errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evals.__main__ import main
from evals.baselines import KeywordModerator
from evals.data import Item
from evals.files import read_predictions
from evals.report import compare
from evals.robustness import TRANSFORMS, run_robustness, score, transform_items
from evals.runner import EvalConfig, predict, run_eval
from inference.generate import Moderation
from moderation.errors import UserError
from moderation.verdict import parse

ROWS = [
    {"text": "Premium IPTV 12 months, 18,000 live channels + PPV sports, M3U playlist link", "label": "disallow",
     "categories": ["iptv"]},
    {"text": "Fixed-match betting tips, sure wins, online casino bonus credits", "label": "disallow",
     "categories": ["gambling"]},
    {"text": "Watercolor brush pack for Procreate, 40 brushes", "label": "allow", "categories": []},
    {"text": "Poker night art print: vintage playing cards illustration, A3 PDF", "label": "allow"},
]  # fmt: skip
OUTPUTS = ("metrics.json", "predictions.jsonl", "manifest.json", "report.md", "confusion_binary.png",
           "confusion_categories.png", "per_category_f1.png", "reliability_by_length.png")  # fmt: skip


TRAIN_ROWS = Path(__file__).parent / "fixtures" / "evals" / "train_rows.jsonl"


def write_train(folder: Path) -> Path:
    """The fixture train split as `folder/train.parquet`, where the baselines look for it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in TRAIN_ROWS.read_text(encoding="utf-8").splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), folder / "train.parquet")
    return folder / "train.parquet"


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "outside.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    write_train(tmp_path)
    return path


class CountingModerator:
    """Answers ALLOW to everything and records what it was asked."""

    def __init__(self, policy, batch_size=2):
        self.policy, self.batch_size, self.seen = policy, batch_size, []

    def moderate_batches(self, texts):
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            self.seen += batch
            yield [Moderation("<answer>ALLOW</answer>", parse("<answer>ALLOW</answer>"), 0.01) for _ in batch]


def test_keyword_run_writes_every_output(tmp_path, data_file):
    out = tmp_path / "eval"
    metrics = run_eval(EvalConfig(model="keyword", data=str(data_file), out=str(out), n_bootstrap=50))
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n"] == 4 and saved["config"]["model"] == "keyword"
    assert (saved["recall"], saved["fpr"]) == (metrics["recall"], metrics["fpr"])
    record = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert {"id", "completion", "decision", "status", "latency_s", "label"} <= set(record)


def test_tiny_model_run_and_resume(tmp_path, data_file, tiny_model_dir):
    config = EvalConfig(
        model=str(tiny_model_dir), data=str(data_file), out=str(tmp_path / "e"), max_new_tokens=4, batch_size=3,
        n_bootstrap=0,
    )  # fmt: skip
    metrics = run_eval(config, report=False)
    assert metrics["n"] == 4
    assert metrics["parse_failure_rate"] == 1.0  # random weights never write the format, and that is counted
    assert metrics["accuracy"] == 0.0
    lines = (tmp_path / "e" / "predictions.jsonl").read_text().splitlines()
    assert run_eval(config, report=False)["n"] == 4
    assert (tmp_path / "e" / "predictions.jsonl").read_text().splitlines() == lines  # nothing re-scored


def test_resume_skips_scored_ids_and_redoes_a_torn_line(tmp_path, policy):
    items = [Item(f"i{n}", f"listing {n}", "allow") for n in range(5)]
    path = tmp_path / "predictions.jsonl"
    first = CountingModerator(policy)
    predict(first, items[:3], path)
    with path.open("a") as handle:
        handle.write('{"id": "i3", "label": "al')  # a crash mid-write
    second = CountingModerator(policy)
    records = predict(second, items, path)
    assert second.seen == ["listing 3", "listing 4"]
    assert [r["id"] for r in records] == [f"i{n}" for n in range(5)]
    assert set(read_predictions(path)) == {f"i{n}" for n in range(5)}


def test_other_settings_in_the_same_folder_are_refused(tmp_path, data_file):
    out = str(tmp_path / "eval")
    run_eval(EvalConfig(model="keyword", data=str(data_file), out=out, n_bootstrap=0), report=False)
    with pytest.raises(UserError, match="keyword_min_hits"):
        run_eval(EvalConfig(model="keyword", data=str(data_file), out=out, keyword_min_hits=3), report=False)


def test_keyword_baseline_learns_from_the_policy_alone(policy):
    moderator = KeywordModerator(policy)
    flagged = [parse(moderator.judge(e)).decision for c in policy.categories for e in c.disallowed_examples]
    allowed = [parse(moderator.judge(e)).decision for c in policy.categories for e in c.allowed_examples]
    assert flagged.count("disallow") / len(flagged) >= 0.7
    assert allowed.count("allow") / len(allowed) >= 0.7


def test_robustness_transforms_and_scores(tmp_path, data_file, policy):
    items = [Item("d", "Buy cheap IPTV", "disallow", ("iptv",)), Item("a", "Watercolor brushes", "allow")]
    variants = transform_items(items, long_chars=200)
    names = {v.meta["transform"] for v in variants}
    assert names == {"clean", "scary_words", *TRANSFORMS, "position_start", "position_middle", "position_end"}
    middle = next(v for v in variants if v.meta["transform"] == "position_middle")
    assert "Buy cheap IPTV" in middle.text and len(middle.text) > 200 and middle.label == "disallow"
    assert "\u200b" in next(v.text for v in variants if v.meta["transform"] == "zero_width")

    results = run_robustness(EvalConfig(model="keyword", data=str(data_file), out=str(tmp_path / "r")), long_chars=300)
    assert results["clean"]["n"] == 4 and results["injection"]["n"] == 2
    assert (tmp_path / "r" / "robustness.md").exists()


def test_attack_success_rate_counts_flips_of_caught_items():
    def rec(oid, transform, label, decision):
        return {"original_id": oid, "transform": transform, "label": label, "decision": decision}

    records = [
        rec("a", "clean", "disallow", "disallow"),
        rec("b", "clean", "disallow", "disallow"),
        rec("c", "clean", "disallow", "allow"),  # missed when clean: not an attack success
        rec("a", "leetspeak", "disallow", "allow"),
        rec("b", "leetspeak", "disallow", None),  # unparseable: the verdict is stopped, so the attack succeeded
        rec("c", "leetspeak", "disallow", "allow"),
        rec("a", "spacing", "disallow", "disallow"),
        rec("b", "spacing", "disallow", None),
    ]
    leet = score(records)["leetspeak"]
    assert leet["attack_success_rate"] == 1.0 and leet["caught_when_clean"] == 2
    assert (leet["flipped_to_allow"], leet["parse_failure_successes"]) == (1, 1)
    spacing = score(records)["spacing"]
    assert (spacing["attack_success_rate"], spacing["flipped_to_allow"], spacing["parse_failure_successes"]) == (
        0.5, 0, 1,
    )  # fmt: skip
    assert leet["accuracy"] == 0.0 and score(records)["clean"]["attack_success_rate"] is None


def test_compare_puts_runs_side_by_side(tmp_path, data_file):
    for hits in (1, 2):
        out = str(tmp_path / f"k{hits}")
        config = EvalConfig(model="keyword", data=str(data_file), out=out, keyword_min_hits=hits, n_bootstrap=0)
        run_eval(config, report=False)
    path = compare([tmp_path / "k1", tmp_path / "k2"], tmp_path / "cmp")
    text = path.read_text()
    assert "keyword (k2)" in text and (tmp_path / "cmp" / "per_category_f1.png").exists()
    paired = next(line for line in text.splitlines() if line.startswith("| keyword (k2) − keyword |"))
    assert paired.split(" | ")[1] == str(len(ROWS))  # every item paired


def test_compare_pairs_only_the_ids_each_run_evaluated(tmp_path, data_file):
    settings = {"model": "keyword", "data": str(data_file), "n_bootstrap": 0}
    run_eval(EvalConfig(out=str(tmp_path / "k1"), keyword_min_hits=1, **settings), report=False)
    run_eval(EvalConfig(out=str(tmp_path / "k1"), keyword_min_hits=1, limit=2, **settings), report=False)
    assert len(read_predictions(tmp_path / "k1" / "predictions.jsonl")) == len(ROWS)  # the file keeps all four
    run_eval(EvalConfig(out=str(tmp_path / "k2"), keyword_min_hits=2, **settings), report=False)
    text = compare([tmp_path / "k1", tmp_path / "k2"], tmp_path / "cmp").read_text()
    paired = next(line for line in text.splitlines() if line.startswith("| keyword (k2) − keyword |"))
    assert paired.split(" | ")[1] == "2"


def test_resume_identity_has_the_weights_hash_and_generation_settings(tmp_path, data_file, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = EvalConfig(
        model=str(model), data=str(data_file), out=str(tmp_path / "e"), max_new_tokens=2, limit=1, n_bootstrap=0
    )
    run_eval(config, report=False)
    with pytest.raises(UserError, match="generation"):
        run_eval(config.model_copy(update={"max_new_tokens": 3}), report=False)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x01")  # retrained in place: same path
    with pytest.raises(UserError, match="fingerprint"):
        run_eval(config, report=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--model", "keyword", "--data", "missing.jsonl"], "data file not found"),
        (["run", "--model", "MODEL_DIR_WITHOUT_WEIGHTS", "--data", "DATA"], "cannot load"),
        (["run", "--model", "keyword", "--data", "DATA", "--batch-size", "0"], "batch_size: Input should be greater"),
        (["compare", "TMP", "--out", "TMP/c"], "has no metrics.json"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, data_file, capsys, args, message):
    empty_model = tmp_path / "model"
    empty_model.mkdir()
    (empty_model / "config.json").write_text("{}")
    replace = {"MODEL_DIR_WITHOUT_WEIGHTS": str(empty_model), "DATA": str(data_file), "TMP": str(tmp_path)}
    argv = [replace.get(a, a).replace("TMP", str(tmp_path)) for a in args] + ["--out", str(tmp_path / "o")] * (
        args[0] == "run"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_suite_evaluates_every_model_and_compares(tmp_path, data_file):
    from evals.suite import run_suite

    (report,) = run_suite(["keyword"], [str(data_file)], tmp_path / "suite", n_bootstrap=0)
    assert report == tmp_path / "suite" / "outside" / "compare.md"
    assert (tmp_path / "suite" / "outside" / "keyword" / "metrics.json").exists()


def test_suite_pools_several_datasets_into_one_paired_comparison(tmp_path, data_file):
    from evals.suite import run_suite

    second = tmp_path / "more.jsonl"
    more = [{**row, "text": row["text"] + ", second edition"} for row in ROWS]
    second.write_text("".join(json.dumps(r) + "\n" for r in more), encoding="utf-8")
    *_, pooled = run_suite(["keyword", "tfidf"], [str(data_file), str(second)], tmp_path / "suite", n_bootstrap=0)

    assert pooled == tmp_path / "suite" / "pooled" / "compare.md"
    metrics = json.loads((pooled.parent / "tfidf" / "metrics.json").read_text(encoding="utf-8"))
    alone = [json.loads((tmp_path / "suite" / d / "tfidf" / "metrics.json").read_text()) for d in ("outside", "more")]
    assert metrics["n"] == len(set(metrics["ids"])) == 2 * len(ROWS)
    first, second = (np.array(m["confusion"]["matrix"]) for m in alone)
    assert metrics["confusion"]["matrix"] == (first + second).tolist()
    text = pooled.read_text(encoding="utf-8")
    assert "outside.jsonl + more.jsonl" in text and f"| tfidf − keyword | {2 * len(ROWS)} |" in text


def test_the_same_listing_in_two_datasets_is_not_pooled(tmp_path, data_file):
    from evals.suite import run_suite

    again = shutil.copy(data_file, tmp_path / "again.jsonl")
    with pytest.raises(UserError, match="appears in more than one dataset"):
        run_suite(["keyword"], [str(data_file), str(again)], tmp_path / "suite", n_bootstrap=0)


def test_suite_cli_passes_train_to_each_baseline(tmp_path, data_file, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    listings = shutil.copy(data_file, elsewhere / "outside.jsonl")  # no train.parquet beside it
    argv = ["suite", "--models", "keyword", "--data", str(listings), "--out", str(tmp_path / "s"), "n_bootstrap=0"]
    with pytest.raises(SystemExit):
        main(argv)
    assert "pass --train FILE" in capsys.readouterr().err
    main([*argv, "--train", str(tmp_path / "train.parquet")])
    metrics = json.loads((tmp_path / "s" / "outside" / "keyword" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == len(ROWS)


def test_openai_compatible_endpoint(policy):
    import httpx

    from evals.baselines import EndpointModerator

    asked = []

    def reply(request):
        body = json.loads(request.content)
        asked.append(body)
        answer = "DISALLOW: iptv" if "IPTV" in body["messages"][-1]["content"] else "ALLOW"
        message = {"role": "assistant", "content": f"<reasoning>\nx\n</reasoning>\n<answer>\n{answer}\n</answer>"}
        return httpx.Response(
            200,
            json={
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
            },
        )

    client = httpx.Client(transport=httpx.MockTransport(reply))
    moderator = EndpointModerator("http://judge.test/v1", "judge-1", policy, http_client=client)
    results = moderator.moderate([row["text"] for row in ROWS[:3]])
    assert [r.verdict.decision for r in results] == ["disallow", "allow", "allow"]
    assert asked[0]["model"] == "judge-1" and asked[0]["temperature"] == 0.0
    assert asked[0]["messages"][0]["role"] == "system"


@pytest.mark.parametrize("status", [429, 503])
def test_endpoint_errors_after_retries_are_one_line(policy, status):
    import httpx

    from evals.baselines import MAX_RETRIES, EndpointModerator

    calls = []

    def refuse(request):
        calls.append(request)
        return httpx.Response(status, headers={"retry-after-ms": "1"}, json={"error": {"message": "busy"}})

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    moderator = EndpointModerator("http://user:pw@judge.test/v1", "judge-1", policy, http_client=client)
    with pytest.raises(UserError, match=r"endpoint http://judge\.test/v1/ model 'judge-1'") as error:
        moderator.moderate(["Premium IPTV"])
    assert len(calls) == MAX_RETRIES + 1 and "pw" not in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_embedded_model_on_an_outside_file(tmp_path):
    """The must-show path with the real 135M model, kept to 4 listings."""
    from evals.suite import FIXTURE_LISTINGS

    out = tmp_path / "e"
    metrics = run_eval(
        EvalConfig(model="smollm2-135m", data=str(FIXTURE_LISTINGS), out=str(out), limit=4, max_new_tokens=32)
    )
    assert metrics["n"] == 4 and 0 <= metrics["parse_failure_rate"] <= 1
    for name in OUTPUTS:
        assert (out / name).exists(), name


def test_run_stage_folders_and_prompt_from(tmp_path, tiny_model_dir):
    from evals.runner import build_moderator

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "merged")
    shutil.copytree(tiny_model_dir, run / "sft" / "merged")  # train_grpo.py's warm-start stage: no manifest of its own
    (run / "manifest.json").write_text(json.dumps({"policy": "kids-crafts", "prompt": {"max_listing_tokens": 64}}))

    stage = build_moderator(EvalConfig(model=str(run / "sft"), data="-", out="-", threshold="written"))
    assert stage.policy.name == "kids-crafts" and stage.prompt_config.max_listing_tokens == 64
    base = build_moderator(
        EvalConfig(model=str(tiny_model_dir), data="-", out="-", prompt_from=str(run), threshold="written")
    )
    assert base.policy.name == "kids-crafts" and base.prompt_config.max_listing_tokens == 64
    with pytest.raises(UserError, match="not a run folder"):
        build_moderator(EvalConfig(model="keyword", data="-", out="-", prompt_from=str(tiny_model_dir)))


def test_endpoint_secrets_never_reach_eval_artifacts(tmp_path, monkeypatch):
    """An eval through an endpoint whose URL and key variable carry secrets leaves none in any file it writes."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from evals.suite import FIXTURE_LISTINGS

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            content = "<reasoning>\nSells channels.\n</reasoning>\n<answer>\nALLOW\n</answer>"
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
            body = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-FAKE-KEY-1618")
    endpoint = f"http://reader:FAKE-PASS-1414@127.0.0.1:{server.server_address[1]}/v1?token=FAKE-QUERY-1732"
    try:
        run_eval(EvalConfig(model="m", endpoint=endpoint, data=str(FIXTURE_LISTINGS), out=str(tmp_path / "e"), limit=3))
    finally:
        server.shutdown()
    files = [p for p in (tmp_path / "e").rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files)
    for path in files:
        data = path.read_bytes()
        assert b"FAKE-KEY-1618" not in data and b"FAKE-PASS-1414" not in data and b"FAKE-QUERY" not in data, path
