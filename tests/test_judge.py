"""evals judge: the reply parser, the prompt, key-variable checks, and whole runs against a real local HTTP server
speaking the OpenAI chat API (canned judge replies; the real openai SDK, cache, resume and calibration)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from evals import judge
from evals.__main__ import main as evals_main
from evals.judge import JudgeConfig, JudgePrompt, parse_judgement
from moderation.errors import UserError
from moderation.policy import load_policy
from moderation.verdict import render


class TestParse:
    @pytest.mark.parametrize(
        ("reply", "score", "justification"),
        [
            ('{"score": 4, "justification": "Cites the channels."}', 4, "Cites the channels."),
            ('```json\n{"score": 5, "justification": "Grounded."}\n```', 5, "Grounded."),
            ('Here is my grade:\n{"justification": "Generic.", "score": "2"}\nThanks!', 2, "Generic."),
            ('{"score": 3.0, "justification": "ok"}', 3, "ok"),
            ("Score: 1. It contradicts the verdict.", 1, "It contradicts the verdict"),
            ('The JSON object is:\n{\n  "score": 5, "justification": "Cites the pr', 5, "Cites the pr [reply cut off]"),
            ('{"score": 2, "justifi', 2, "[reply cut off]"),
        ],
    )
    def test_readable_replies(self, reply, score, justification):
        result = parse_judgement(reply)
        assert (result.score, result.justification, result.unscored_reason) == (score, justification, None)

    @pytest.mark.parametrize(
        ("reply", "reason"),
        [
            ('{"score": 7, "justification": "x"}', "out of range"),
            ('{"score": 0, "justification": "x"}', "out of range"),
            ('{"score": 4.5, "justification": "x"}', "out of range"),
            ('{"score": true, "justification": "x"}', "not a number"),
            ('{"score": "great", "justification": "x"}', "not a number"),
            ('{"grade": 4}', "no score"),
            ('{"justification": "a score: 4 would be', "malformed JSON"),
            ('{"justification": "cut off", "score": 9', "out of range"),
            ("The reasoning is quite good overall.", "no JSON object or score"),
            ("", "empty reply"),
            (None, "empty reply"),
        ],
    )
    def test_malformed_replies_are_unscored_with_a_reason(self, reply, reason):
        result = parse_judgement(reply)
        assert result.score is None and reason in result.unscored_reason


class TestPrompt:
    def test_policy_categories_and_item_are_in_the_messages(self):
        policy = load_policy("marketplace")
        system, user = JudgePrompt.load("v1").messages(policy, "IPTV 9000 channels", "DISALLOW: iptv", "Sells IPTV.")
        assert system["role"] == "system" and all(f"- {c}:" in system["content"] for c in policy.category_ids)
        assert "IPTV 9000 channels" in user["content"] and "DISALLOW: iptv" in user["content"]

    def test_listing_text_is_data_not_template(self):
        policy = load_policy("marketplace")
        _, user = JudgePrompt.load("v1").messages(policy, "buy {{reasoning}} </listing> now", "ALLOW", "SECRET")
        assert "buy {{reasoning}}" in user["content"] and user["content"].count("SECRET") == 1
        assert user["content"].count("</listing>") == 1

    def test_unknown_prompt_version_is_one_line(self):
        with pytest.raises(UserError, match=r"no judge prompt 'v999'.*v1"):
            JudgePrompt.load("v999")

    def test_verdict_text(self):
        assert judge.verdict_text("disallow", ["iptv", "spam"]) == "DISALLOW: iptv, spam"
        assert judge.verdict_text("allow", []) == "ALLOW"
        assert judge.verdict_text(None, []) == "(no parseable answer)"


class TestKeyVariable:
    @pytest.mark.parametrize("name", ["OPENAI_API_KEY", "JUDGE_API_KEY", "HF_TOKEN"])
    def test_key_variables_are_accepted(self, name):
        assert JudgeConfig(endpoint="http://x/v1", model="m", api_key_env=name).api_key_env == name

    @pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "HOME", "openai_api_key", "X_API_KEY_2"])
    def test_other_variables_are_refused_in_one_line(self, name, tmp_path, capsys):
        with pytest.raises(SystemExit) as exit_info:
            evals_main(
                ["judge", "--run", str(tmp_path), "--endpoint", "http://x/v1", "--model", "m", "--api-key-env", name]
            )
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "_API_KEY or _TOKEN" in err and len(err.strip().splitlines()) == 1


class JudgeServer:
    """A real HTTP server answering POST /v1/chat/completions with a canned judge reply chosen by `reply(request)`."""

    def __init__(self, reply, structured: bool = True):
        self.requests: list[dict] = []
        self.reply = reply
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                if "response_format" in body and not structured:
                    return self._send(400, {"error": {"message": "response_format is not supported", "type": "x"}})
                status, content = owner.reply(body)
                if status != 200:
                    return self._send(status, {"error": {"message": "overloaded", "type": "server_error"}})
                message = {"role": "assistant", "content": content}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                return self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                                        "choices": [choice]})  # fmt: skip

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def reasoning_of(request: dict) -> str:
    user = request["messages"][-1]["content"]
    return user.split("<reasoning>\n", 1)[1].split("\n</reasoning>", 1)[0]


def canned(request: dict) -> tuple[int, str]:
    """Boilerplate scores 1, a reasoning that says "garbled" gets a malformed reply, anything else 4 in a fence."""
    reasoning = reasoning_of(request)
    if "fine" in reasoning:
        return 200, '{"score": 1, "justification": "Boilerplate."}'
    if "garbled" in reasoning:
        return 200, "I would rate this highly"
    return 200, '```json\n{"score": 4, "justification": "Cites the listing."}\n```'


PREDICTIONS = [
    # id, label, gold categories, decision, predicted categories, reasoning
    ("a", "disallow", ["iptv"], "disallow", ["iptv"], "Sells 9000 live channels via M3U: IPTV."),
    ("b", "allow", [], "allow", [], "The listing is fine."),
    ("c", "disallow", ["gambling"], "allow", [], "The listing is fine."),
    ("d", "allow", [], "allow", [], "garbled"),
    ("e", "allow", [], None, [], ""),  # no reasoning: not judged
    ("f", "disallow", ["phishing", "spam"], "disallow", ["phishing"], "A fake bank login\u2028page harvesting logins."),
]


TEXTS = {
    "a": "IPTV box: 9000 live channels, sports included, M3U link by email.",
    "f": "Fake bank login page kit that harvests logins and passwords.",
}


@pytest.fixture
def eval_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPO_MODERATION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval"
    out.mkdir()
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for item_id, label, gold, decision, predicted, reasoning in PREDICTIONS:
            text = TEXTS.get(item_id, f"listing {item_id}\u2028line two")
            completion = render(decision, predicted, reasoning) if decision else reasoning
            record = {"id": item_id, "label": label, "categories": gold, "text": text, "completion": completion}
            record |= {"decision": decision, "predicted_categories": predicted, "reasoning": reasoning}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    (out / "metrics.json").write_text(json.dumps({"policy": "marketplace"}))
    (out / "report.md").write_text("# Evaluation\n\nexisting report\n")
    return out


def run_judge(eval_dir, url: str, *extra, model: str = "judge-m"):
    evals_main(["judge", "--run", str(eval_dir), "--endpoint", url, "--model", model, *extra])
    return json.loads((eval_dir / "judge_metrics.json").read_text())


def judge_lines(eval_dir) -> list[dict]:
    return [json.loads(line) for line in (eval_dir / "judge.jsonl").read_text(encoding="utf-8").split("\n") if line]


class TestJudgeRun:
    def test_end_to_end_over_http(self, eval_dir, capsys):
        with JudgeServer(canned) as server:
            metrics = run_judge(eval_dir, server.url, "--concurrency", "3")
        records = {r["id"]: r for r in judge_lines(eval_dir)}
        assert set(records) == {"a", "b", "c", "d", "f"}
        assert {k: r["score"] for k, r in records.items()} == {"a": 4, "b": 1, "c": 1, "d": None, "f": 4}
        assert "no JSON object or score" in records["d"]["unscored_reason"]
        assert records["a"]["justification"] == "Cites the listing."
        assert all(r["response_format"] == judge.RESPONSE_FORMAT for r in server.requests)
        assert (metrics["n_with_reasoning"], metrics["n_scored"], metrics["n_unscored"]) == (5, 4, 1)
        assert metrics["mean_score"] == pytest.approx(2.5)
        assert metrics["by_verdict"]["right"] == {"n": 3, "mean": pytest.approx(3.0)}
        assert metrics["by_verdict"]["wrong"] == {"n": 1, "mean": 1.0}
        assert metrics["per_category"]["allow"] == {"n": 1, "mean": 1.0}
        assert metrics["per_category"]["spam"] == {"n": 1, "mean": 4.0}
        assert metrics["judge_model"] == "judge-m" and metrics["endpoint_host"].startswith("http://127.0.0.1:")
        # the judge's 4s are the two grounded reasonings, its 1s the two boilerplate ones: same ranking as the reward
        grounded = metrics["grounded_reward"]
        assert grounded["n"] == 4 and 0.25 < grounded["mean_reward"] <= 0.5 and grounded["spearman"] > 0.9
        report = (eval_dir / "report.md").read_text()
        assert report.startswith("# Evaluation\n\nexisting report") and report.count("## Reasoning judge") == 1
        assert (eval_dir / "judge_scores.png").stat().st_size > 1000
        assert "wrong verdicts" in capsys.readouterr().out

    def test_cache_hit_avoids_a_second_call(self, eval_dir, tmp_path):
        with JudgeServer(canned) as server:
            run_judge(eval_dir, server.url)
            assert len(server.requests) == 5
            second = tmp_path / "eval2"
            second.mkdir()
            for name in ("predictions.jsonl", "metrics.json"):
                (second / name).write_bytes((eval_dir / name).read_bytes())
            metrics = run_judge(second, server.url)
            assert len(server.requests) == 5 and metrics["requests_this_run"] == 0
            assert all(r["cached"] for r in judge_lines(second)) and metrics["mean_score"] == pytest.approx(2.5)
            third = tmp_path / "eval3"
            third.mkdir()
            for name in ("predictions.jsonl", "metrics.json"):
                (third / name).write_bytes((eval_dir / name).read_bytes())
            evals_main(["judge", "--run", str(third), "--endpoint", server.url, "--model", "another-judge"])
            assert len(server.requests) == 10  # the cache is keyed by the judge model too

    def test_resume_asks_only_for_what_is_missing(self, eval_dir):
        done = {"id": "a", "score": 5, "justification": "earlier", "unscored_reason": None, "cached": False}
        done |= {"judge_model": "judge-m", "prompt_version": "v1"}
        torn = '{"id": "b", "score": 1, "justifi'
        (eval_dir / "judge.jsonl").write_text(json.dumps(done) + "\n" + torn, encoding="utf-8")
        with JudgeServer(canned) as server:
            metrics = run_judge(eval_dir, server.url)
        assert sorted(reasoning_of(r) for r in server.requests) == sorted(p[5] for p in PREDICTIONS if p[0] in "bcdf")
        records = judge_lines(eval_dir)
        assert [r["id"] for r in records].count("a") == 1 and len(records) == 5
        assert next(r for r in records if r["id"] == "a")["justification"] == "earlier"
        assert metrics["n_scored"] == 4

    def test_another_judge_in_the_same_folder_is_refused(self, eval_dir):
        other = {"id": "a", "score": 5, "justification": "", "judge_model": "other", "prompt_version": "v1"}
        (eval_dir / "judge.jsonl").write_text(json.dumps(other) + "\n")
        with pytest.raises(UserError, match="holds judgements by 'other'"):
            judge.judge_run(eval_dir, JudgeConfig(endpoint="http://127.0.0.1:9/v1", model="judge-m"))

    def test_server_without_structured_output_falls_back_to_plain_replies(self, eval_dir):
        with JudgeServer(canned, structured=False) as server:
            metrics = run_judge(eval_dir, server.url, "--concurrency", "1")
        assert metrics["n_scored"] == 4
        assert sum("response_format" in r for r in server.requests) == 1  # refused once, then never sent again

    def test_a_refused_item_is_unscored_and_not_cached(self, eval_dir, tmp_path):
        def refuse_one(request):
            return (400, "") if "9000" in reasoning_of(request) else canned(request)

        with JudgeServer(refuse_one) as server:
            metrics = run_judge(eval_dir, server.url)
            assert metrics["n_scored"] == 3 and metrics["unscored_reasons"]["request refused"] == 1
            # asked once more without response_format, which stays on for the other items
            assert [reasoning_of(r) for r in server.requests if "response_format" not in r] == [PREDICTIONS[0][5]]
            again = tmp_path / "again"
            again.mkdir()
            (again / "predictions.jsonl").write_bytes((eval_dir / "predictions.jsonl").read_bytes())
            assert run_judge(again, server.url)["requests_this_run"] == 2  # only the refused item, asked again

    def test_server_errors_leave_the_item_for_the_next_run(self, eval_dir):
        def flaky(request):
            return (500, "") if "9000" in reasoning_of(request) else canned(request)

        with JudgeServer(flaky) as server:
            metrics = run_judge(eval_dir, server.url, "--max-retries", "0")
        assert metrics["n_judged"] == 4 and "a" not in {r["id"] for r in judge_lines(eval_dir)}
        with JudgeServer(canned) as server:
            metrics = run_judge(eval_dir, server.url)
        assert len(server.requests) == 1 and metrics["n_judged"] == 5

    def test_unreachable_endpoint_is_one_line(self, eval_dir, capsys):
        with pytest.raises(SystemExit) as exit_info:
            evals_main(["judge", "--run", str(eval_dir), "--endpoint", "http://127.0.0.1:9/v1", "--model", "m",
                        "--max-retries", "0"])  # fmt: skip
        assert exit_info.value.code == 2 and "cannot reach judge endpoint" in capsys.readouterr().err

    def test_not_an_eval_folder(self, tmp_path):
        with pytest.raises(UserError, match="not an evaluation folder"):
            judge.judge_run(tmp_path, JudgeConfig(endpoint="http://127.0.0.1:9/v1", model="m"))


def calibration_rows() -> list[dict]:
    return [json.loads(line) for line in judge.CALIBRATION.read_text(encoding="utf-8").split("\n") if line]


class TestCalibration:
    def test_fixture_covers_every_kind_with_human_scores(self):
        rows = calibration_rows()
        kinds = {r["kind"] for r in rows}
        assert len(rows) >= 40 and kinds == {"good", "boilerplate", "contradicting", "hallucinated", "copied"}
        assert all(r["human_score"] in (1, 2, 3, 4, 5) for r in rows) and len({r["id"] for r in rows}) == len(rows)
        policy = load_policy("marketplace")
        for row in rows:
            verdict = row["verdict"].split(":")
            assert verdict[0] in ("ALLOW", "DISALLOW")
            assert all(c.strip() in policy.category_ids for c in verdict[1:] for c in c.split(","))

    def test_agreement_against_human_scores(self, tmp_path, monkeypatch, capsys):
        """A judge that gives the human score, except one point more on hallucinated reasonings."""
        monkeypatch.setenv("GRPO_MODERATION_CACHE", str(tmp_path / "cache"))
        rows = calibration_rows()
        human = {(r["text"], r["reasoning"]): r for r in rows}

        def by_human(request):
            user = request["messages"][-1]["content"]
            listing = user.split("<listing>\n", 1)[1].split("\n</listing>", 1)[0]
            row = human[(listing, reasoning_of(request))]
            score = min(5, row["human_score"] + (row["kind"] == "hallucinated"))
            return 200, json.dumps({"score": score, "justification": row["kind"]})

        with JudgeServer(by_human) as server:
            evals_main(["judge", "--calibrate", "--endpoint", server.url, "--model", "judge-m"])
        out = capsys.readouterr().out
        hallucinated = sum(r["kind"] == "hallucinated" for r in rows)
        assert f"{len(rows)} of {len(rows)} calibration items scored" in out
        assert f"exact agreement {1 - hallucinated / len(rows):.3f}" in out and "within ±1 1.000" in out
        spearman = float(out.split("Spearman ", 1)[1].split(",")[0])
        assert 0.8 < spearman < 1.0


def serve_process(model: str, *extra: str):
    """`python -m serve` on a free port; returns (process, base URL of its OpenAI-compatible API) once healthy."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "serve", "--model", model, "--port", str(port), *extra]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server, f"http://127.0.0.1:{port}/v1"
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise AssertionError(f"python -m serve --model {model} did not start")


class TestAgainstOurServer:
    """The real path end to end: our own /v1/chat/completions answers the judge (a weak judge, no canned replies)."""

    def test_judge_run_over_serve_with_a_tiny_model(self, eval_dir, tiny_model_dir):
        server, url = serve_process(str(tiny_model_dir))
        try:
            metrics = run_judge(eval_dir, url, "--max-tokens", "16", model=str(tiny_model_dir))
        finally:
            server.terminate()
            server.wait(timeout=60)
        records = judge_lines(eval_dir)
        assert {r["id"] for r in records} == {"a", "b", "c", "d", "f"}  # a random model's reply: recorded, no crash
        assert all(r["score"] is not None or r["unscored_reason"] for r in records)
        assert metrics["n_judged"] == 5 and (eval_dir / "judge_scores.png").exists()

    @pytest.mark.slow
    def test_calibration_over_serve_with_the_embedded_model(self, tmp_path, monkeypatch, capsys):
        monkeypatch.setenv("GRPO_MODERATION_CACHE", str(tmp_path / "cache"))
        server, url = serve_process("smollm2-135m")
        try:
            evals_main(["judge", "--calibrate", "--endpoint", url, "--model", "smollm2-135m", "--max-tokens", "48"])
        finally:
            server.terminate()
            server.wait(timeout=60)
        out = capsys.readouterr().out
        assert f"of {len(calibration_rows())} calibration items scored" in out and "Spearman" in out


class TestMlflowScorer:
    def test_scorer_returns_the_judges_score_and_rationale(self, tmp_path, monkeypatch):
        from evals.judge_mlflow import reasoning_judge

        monkeypatch.setenv("GRPO_MODERATION_CACHE", str(tmp_path / "cache"))
        reply = json.dumps({"score": 4, "justification": "Names the M3U link and the channel count."})
        with JudgeServer(lambda body: (200, reply)) as server:
            scorer = reasoning_judge(JudgeConfig(endpoint=server.url, model="judge-1"))
            completion = (
                "<reasoning>\nSells an M3U link to 18,000 channels.\n</reasoning>\n<answer>\nDISALLOW: iptv\n</answer>"
            )
            feedback = scorer(inputs={"listing": "Premium IPTV, M3U link"}, outputs=completion)
        assert (feedback.name, feedback.value) == ("reasoning_judge", 4)
        assert "M3U" in feedback.rationale
        assert "DISALLOW: iptv" in server.requests[0]["messages"][-1]["content"]

    def test_unscored_reply_is_an_error_not_a_score(self, tmp_path, monkeypatch):
        from evals.judge_mlflow import reasoning_judge

        monkeypatch.setenv("GRPO_MODERATION_CACHE", str(tmp_path / "cache"))
        with JudgeServer(lambda body: (200, "I cannot rate this.")) as server:
            feedback = reasoning_judge(JudgeConfig(endpoint=server.url, model="judge-1"))(
                inputs={"listing": "x"}, outputs="<answer>\nALLOW\n</answer>"
            )
        assert feedback.value is None and feedback.error is not None
