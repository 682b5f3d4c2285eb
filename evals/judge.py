"""An LLM judge of the moderator's reasoning, over any OpenAI-compatible endpoint (vLLM, llama.cpp, a hosted API).

    python -m evals judge --run runs/evals/trained-dev --endpoint http://localhost:8000/v1 --model Qwen/Qwen3-8B
    python -m evals judge --calibrate --endpoint http://localhost:8000/v1 --model Qwen/Qwen3-8B

The verdict metrics say whether the moderator is right; they cannot tell a reasoning that cites the listing from
boilerplate ("The listing is fine.") or from one that argues against its own verdict. The judge rates each reasoning
1-5 on the criteria in the versioned prompt (evals/judge_prompts/<version>.md) and writes, next to the evaluation:
judge.jsonl (one line per item, appended as replies arrive, so a rerun resumes), judge_metrics.json (mean score
overall, per gold category, for right and wrong verdicts), judge_scores.png and a judge section in report.md.

A reply that cannot be read as {"score": 1-5, "justification": ...} is recorded as unscored with the reason; a timeout
or server error (after the SDK's own retries) is left out of judge.jsonl, so the next run asks again. Replies are
cached on disk by (judge model, prompt hash), so rerunning or calibrating again costs no calls.
`--calibrate` scores tests/fixtures/judge_calibration.jsonl (outputs with human scores) and reports how well the
judge agrees: run it before trusting a judge model's numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from evals.files import METRICS, PREDICTIONS, read_predictions, write_json, write_text
from evals.metrics import predicted_label
from moderation.errors import UserError
from moderation.files import atomic_write_text
from moderation.jsonl import drop_torn_tail, split_jsonl
from moderation.paths import REPO_ROOT, cache_dir
from moderation.plotting import pyplot
from moderation.policy import Policy, load_policy
from moderation.prompt import defang
from moderation.secrets import ApiKeyEnv, RedactedUrl, redact_url
from moderation.verdict import DISALLOW

JUDGE = "judge.jsonl"
JUDGE_METRICS = "judge_metrics.json"
JUDGE_PLOT = "judge_scores.png"
REPORT = "report.md"
PROMPTS = Path(__file__).parent / "judge_prompts"
CALIBRATION = REPO_ROOT / "tests" / "fixtures" / "judge_calibration.jsonl"
USER_MARKER = "=== user ==="
SECTION_START, SECTION_END = "<!-- judge:start -->", "<!-- judge:end -->"
SCORES = (1, 2, 3, 4, 5)
# Structured output where the server supports it (OpenAI, vLLM guided decoding); the parser below covers the rest.
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "judgement",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"score": {"type": "integer", "enum": list(SCORES)}, "justification": {"type": "string"}},
            "required": ["score", "justification"],
            "additionalProperties": False,
        },
    },
}


class JudgeConfig(BaseModel):
    """Which judge to ask and how; `model` and the prompt version are recorded with every judgement."""

    model_config = ConfigDict(extra="forbid")

    endpoint: RedactedUrl = Field(description="base URL of an OpenAI-compatible API (e.g. http://localhost:8000/v1)")
    model: str = Field(min_length=1, description="the judge model's name on that endpoint")
    api_key_env: ApiKeyEnv = Field(
        "OPENAI_API_KEY", description="environment variable holding the API key (must end in _API_KEY or _TOKEN)"
    )
    prompt: str = Field("v1", pattern=r"^[A-Za-z0-9_.-]+$", description="judge prompt version: judge_prompts/<v>.md")
    policy: str | None = Field(None, description="policy name or YAML; default: the evaluation's policy")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")
    timeout: float = Field(60.0, gt=0, description="per-request timeout in seconds")
    max_retries: int = Field(2, ge=0, le=10, description="the openai SDK's retries on timeouts, 429 and 5xx")
    max_tokens: int = Field(256, ge=16, description="reply budget: a score and one or two sentences")
    cache: bool = Field(True, description="reuse replies cached by (judge model, prompt hash)")


@dataclass(frozen=True)
class Judgement:
    """A parsed reply: a score 1-5 with its justification, or score None and the reason it could not be read."""

    score: int | None
    justification: str = ""
    unscored_reason: str | None = None


def parse_judgement(text: object) -> Judgement:
    """Read a judge's reply: a JSON object (bare, fenced or inside prose), else a `score: N` line. Never raises."""
    if not isinstance(text, str) or not text.strip():
        return Judgement(None, unscored_reason="empty reply")
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL | re.IGNORECASE)
    body = fenced.group(1) if fenced else text
    found = _first_json_object(body)
    if found is not None:
        if "score" not in found:
            return Judgement(None, unscored_reason="no score in the JSON reply")
        return _judgement(found["score"], found.get("justification", ""))
    if "{" in body:
        return _cut_short(body) or Judgement(None, unscored_reason=f"malformed JSON reply: {text.strip()[:80]!r}")
    loose = re.search(r"\bscore\b\W{0,3}\s*(-?\d+(?:\.\d+)?)", text, re.IGNORECASE)
    if loose:
        rest = (text[: loose.start()] + " " + text[loose.end() :]).strip(" \n\t:-,.{}\"'")
        return _judgement(loose.group(1), rest)
    return Judgement(None, unscored_reason=f"no JSON object or score in the reply: {text.strip()[:80]!r}")


def _cut_short(body: str) -> Judgement | None:
    """A JSON reply cut off by max_tokens after its score. An unescaped `"score":` cannot sit inside a JSON string,
    so it is the key; the justification is kept as far as it got."""
    score = re.search(r'"score"\s*:\s*"?(-?\d+(?:\.\d+)?)', body)
    if not score:
        return None
    partial = re.search(r'"justification"\s*:\s*"((?:[^"\\]|\\.)*)', body)
    try:
        justification = json.loads(f'"{partial.group(1)}"') if partial else ""
    except json.JSONDecodeError:
        justification = partial.group(1)
    return _judgement(score.group(1), f"{justification} [reply cut off]".strip())


def _first_json_object(text: str) -> dict | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _judgement(raw_score: object, justification: object) -> Judgement:
    if isinstance(raw_score, bool):
        return Judgement(None, unscored_reason=f"score is not a number: {raw_score!r}")
    try:
        score = float(raw_score)
    except (TypeError, ValueError):
        return Judgement(None, unscored_reason=f"score is not a number: {str(raw_score)[:40]!r}")
    if not score.is_integer() or int(score) not in SCORES:
        return Judgement(None, unscored_reason=f"score out of range 1-5: {raw_score!r}")
    return Judgement(int(score), str(justification or "").strip())


@dataclass(frozen=True)
class JudgePrompt:
    """A versioned judge prompt: a system part with the policy and few-shot examples, and a per-item user part."""

    version: str
    system: str
    user: str

    @classmethod
    def load(cls, version: str) -> JudgePrompt:
        path = PROMPTS / f"{version}.md"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            known = ", ".join(sorted(p.stem for p in PROMPTS.glob("*.md")))
            raise UserError(f"no judge prompt {version!r} (known: {known})") from None
        system, marker, user = text.partition(USER_MARKER)
        if not marker:
            raise UserError(f"{path}: no '{USER_MARKER}' line between the system and user parts")
        return cls(version, system.strip(), user.strip())

    def messages(self, policy: Policy, listing: str, verdict: str, reasoning: str) -> list[dict[str, str]]:
        """Chat messages for one item. Values are substituted in one pass, so a listing that contains `{{...}}`
        is never expanded; listing and reasoning are defanged like the moderator's own prompt."""
        categories = "\n".join(f"- {c.id}: {c.description} Allowed: {c.allowed_nearby}" for c in policy.categories)
        system = _fill(self.system, {"policy_description": policy.description, "categories": categories})
        user = _fill(self.user, {"listing": defang(listing), "verdict": verdict, "reasoning": defang(reasoning)})
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values.get(m.group(1), m.group(0)), template)


def verdict_text(decision: str | None, categories: Sequence[str]) -> str:
    """The verdict as the judge reads it: `ALLOW`, `DISALLOW: a, b`, or a note that there was no answer."""
    if decision is None:
        return "(no parseable answer)"
    if decision == DISALLOW:
        return f"DISALLOW: {', '.join(categories)}" if categories else "DISALLOW"
    return decision.upper()


class Judge:
    """Asks the judge model through the openai SDK, with a disk cache of raw replies keyed by (model, prompt)."""

    def __init__(self, config: JudgeConfig, http_client=None):
        from moderation.openai_client import openai_client

        self.config = config
        self.client = openai_client(
            config.endpoint,
            config.api_key_env,
            timeout_s=config.timeout,
            max_retries=config.max_retries,
            http_client=http_client,
        )
        self.cache_dir = cache_dir() / "judge"
        self.structured = True  # cleared for the whole run the first time the server refuses response_format
        self.calls = 0
        self._lock = threading.Lock()

    def cache_key(self, messages: list[dict[str, str]]) -> str:
        payload = json.dumps({"model": self.config.model, "messages": messages}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def rate(self, messages: list[dict[str, str]]) -> tuple[Judgement, bool]:
        """(judgement, came from the cache). Raises UserError when the endpoint cannot be used at all, and the SDK's
        timeout / rate-limit / server errors after its retries (the caller leaves those items for the next run)."""
        import openai

        path = self.cache_dir / f"{self.cache_key(messages)}.json"
        if self.config.cache and path.is_file():
            return parse_judgement(json.loads(path.read_text(encoding="utf-8"))["reply"]), True
        try:
            reply = self._ask(messages)
        except openai.BadRequestError as error:  # e.g. too long for the judge: unscored, not cached, not retried
            return Judgement(None, unscored_reason=f"request refused: {error.message}"[:300]), False
        if self.config.cache:
            atomic_write_text(path, json.dumps({"model": self.config.model, "reply": reply}))
        return parse_judgement(reply), False

    def _ask(self, messages: list[dict[str, str]]) -> str:
        import openai

        request = {
            "model": self.config.model,
            "messages": messages,
            "max_tokens": self.config.max_tokens,
            "temperature": 0.0,
        }
        try:
            if self.structured:
                try:
                    response = self._create(request, response_format=RESPONSE_FORMAT)
                except (openai.BadRequestError, openai.UnprocessableEntityError):
                    response = self._create(request)  # a 400 here is about the item, not response_format
                    self.structured = False  # the server has no structured output: ask for JSON in words only
            else:
                response = self._create(request)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as error:
            endpoint = redact_url(self.config.endpoint)
            raise UserError(f"judge endpoint {endpoint} model {self.config.model!r}: {error}") from None
        except openai.APIConnectionError as error:
            if isinstance(error, openai.APITimeoutError):
                raise
            raise UserError(f"cannot reach judge endpoint {redact_url(self.config.endpoint)}: {error}") from None
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""

    def _create(self, request: dict, **extra):
        with self._lock:
            self.calls += 1
        return self.client.chat.completions.create(**request, **extra)


def _read_jsonl(path: Path) -> list[dict]:
    """Complete JSON lines of an append-only file, split on "\\n" only (U+2028 inside a string is not a break)."""
    rows = []
    for line in split_jsonl(drop_torn_tail(path).decode("utf-8")):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def judge_items(judge: Judge, items: Sequence[dict], policy: Policy, prompt: JudgePrompt, out: Path | None) -> dict:
    """Rate `items` (dicts with id, text, verdict, reasoning) `concurrency` at a time, appending each result to `out`
    as it arrives; return {id: record} for the items rated now. Items that failed transiently are left out."""
    import openai

    results: dict[str, dict] = {}
    failed: Counter = Counter()
    handle = out.open("a", encoding="utf-8") if out else None
    pool = ThreadPoolExecutor(max_workers=judge.config.concurrency)
    try:
        pending = {
            pool.submit(judge.rate, prompt.messages(policy, i["text"], i["verdict"], i["reasoning"])): i for i in items
        }
        with tqdm(total=len(pending), desc="judging", unit="item") as bar:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    item = pending.pop(future)
                    bar.update(1)
                    try:
                        judgement, cached = future.result()
                    except (openai.APITimeoutError, openai.APIStatusError) as error:  # after the SDK's retries
                        failed[type(error).__name__] += 1
                        continue
                    record = {
                        "id": item["id"],
                        "score": judgement.score,
                        "justification": judgement.justification,
                        "unscored_reason": judgement.unscored_reason,
                        "cached": cached,
                        "judge_model": judge.config.model,
                        "prompt_version": prompt.version,
                    }
                    results[item["id"]] = record
                    if handle:
                        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                        handle.flush()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if handle:
            os.fsync(handle.fileno())
            handle.close()
    if failed:
        what = ", ".join(f"{n} {name}" for name, n in failed.items())
        print(f"{sum(failed.values())} items not judged this time ({what}); rerun the same command to retry them")
    return results


def eval_policy(run: Path, override: str | None) -> Policy:
    """The policy the evaluation used (metrics.json), unless overridden."""
    if override:
        return load_policy(override)
    metrics_path = run / METRICS
    name = json.loads(metrics_path.read_text(encoding="utf-8")).get("policy") if metrics_path.is_file() else None
    return load_policy(name or "marketplace")


def judge_run(run: Path, config: JudgeConfig, http_client=None) -> dict:
    """Judge every prediction with a reasoning in eval folder `run`; write judge.jsonl, judge_metrics.json, the plot
    and the report section; return the metrics."""
    predictions_path = run / PREDICTIONS
    if not predictions_path.is_file():
        raise UserError(f"{run} is not an evaluation folder (no {PREDICTIONS})")
    predictions = read_predictions(predictions_path)
    policy = eval_policy(run, config.policy)
    prompt = JudgePrompt.load(config.prompt)
    out = run / JUDGE
    done = {r["id"]: r for r in _read_jsonl(out)}
    others = {(r.get("judge_model"), r.get("prompt_version")) for r in done.values()} - {(config.model, prompt.version)}
    if others:
        model, version = sorted(others, key=str)[0]
        raise UserError(f"{out} holds judgements by {model!r} with prompt {version}; move it away to judge again")
    items = [
        {
            "id": r["id"],
            "text": r.get("text", ""),
            "verdict": verdict_text(r.get("decision"), r.get("predicted_categories", [])),
            "reasoning": r["reasoning"],
        }
        for r in predictions.values()
        if (r.get("reasoning") or "").strip() and r["id"] not in done
    ]
    judge = Judge(config, http_client)
    done.update(judge_items(judge, items, policy, prompt, out))
    metrics = summarize(predictions, done, policy)
    metrics["grounded_reward"] = grounded_agreement(predictions, done, policy)
    metrics.update(judge_model=config.model, endpoint_host=_host(config.endpoint), prompt_version=prompt.version)
    metrics["requests_this_run"] = judge.calls
    write_json(run / JUDGE_METRICS, metrics)
    plot_scores(metrics, run / JUDGE_PLOT)
    append_report(run / REPORT, metrics)
    return metrics


def _host(endpoint: str) -> str:
    """Scheme and host only: a URL may embed credentials, which must not land in an artifact."""
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def _mean(scores: Sequence[int]) -> dict:
    return {"n": len(scores), "mean": float(np.mean(scores)) if scores else None}


def summarize(predictions: dict[str, dict], judged: dict[str, dict], policy: Policy) -> dict:
    """Mean score overall, per gold category (allowed listings under "allow"), for right and wrong verdicts."""
    scored = {i: r["score"] for i, r in judged.items() if r.get("score") is not None and i in predictions}
    by_category: dict[str, list[int]] = defaultdict(list)
    by_verdict: dict[str, list[int]] = {"right": [], "wrong": []}
    for item_id, score in scored.items():
        record = predictions[item_id]
        for category in record.get("categories") or ["allow"]:
            by_category[category].append(score)
        right = predicted_label(record) == record.get("label")
        by_verdict["right" if right else "wrong"].append(score)
    unscored = Counter(
        (r.get("unscored_reason") or "").split(":")[0] for r in judged.values() if r.get("score") is None
    )
    order = ["allow", *policy.category_ids]
    return {
        "n_predictions": len(predictions),
        "n_with_reasoning": sum(1 for r in predictions.values() if (r.get("reasoning") or "").strip()),
        "n_judged": len(judged),
        "n_scored": len(scored),
        "n_unscored": len(judged) - len(scored),
        "unscored_reasons": dict(unscored),
        "mean_score": _mean(list(scored.values()))["mean"],
        "score_counts": {str(s): sum(1 for v in scored.values() if v == s) for s in SCORES},
        "by_verdict": {key: _mean(values) for key, values in by_verdict.items()},
        "by_verdict_counts": {key: {str(s): values.count(s) for s in SCORES} for key, values in by_verdict.items()},
        "per_category": {c: _mean(by_category[c]) for c in sorted(by_category, key=lambda c: (c not in order, c))},
    }


def grounded_agreement(predictions: dict[str, dict], judged: dict[str, dict], policy: Policy) -> dict:
    """How the judge's scores rank against the deterministic `reasoning_grounded` reward on the same completions:
    a judge that disagrees with a cheap evidence test on most items is worth a look before trusting either."""
    from scipy.stats import spearmanr

    from rewards.grounding import ReasoningGrounded

    reward = ReasoningGrounded(policy)
    pairs = [
        (r["score"], reward.score(predictions[i].get("completion", ""), predictions[i].get("text", "")))
        for i, r in judged.items()
        if r.get("score") is not None and i in predictions
    ]
    judge_scores, rewards = [p[0] for p in pairs], [p[1] for p in pairs]
    varied = len(set(judge_scores)) > 1 and len(set(rewards)) > 1
    return {
        "n": len(pairs),
        "mean_reward": float(np.mean(rewards)) if pairs else None,
        "spearman": float(spearmanr(judge_scores, rewards).statistic) if varied else None,
    }


def plot_scores(metrics: dict, path: Path) -> None:
    """Score histogram, right and wrong verdicts side by side."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    x = np.arange(len(SCORES))
    for offset, key in ((-0.2, "right"), (0.2, "wrong")):
        counts = [metrics["by_verdict_counts"][key][str(s)] for s in SCORES]
        ax.bar(x + offset, counts, 0.4, label=f"{key} verdict (n={sum(counts)})")
    ax.set_xticks(x, [str(s) for s in SCORES])
    ax.set_xlabel("judge score of the reasoning")
    ax.set_ylabel("items")
    ax.set_title(f"judge {metrics.get('judge_model', '')}: reasoning scores", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def judge_section(metrics: dict) -> str:
    from evals.report import markdown_table

    rows = [["all", metrics["n_scored"], metrics["mean_score"]]]
    rows += [[f"{key} verdicts", v["n"], v["mean"]] for key, v in metrics["by_verdict"].items()]
    rows += [[f"gold {c}", v["n"], v["mean"]] for c, v in metrics["per_category"].items()]
    unscored = ", ".join(f"{n} {reason}" for reason, n in metrics["unscored_reasons"].items()) or "none"
    grounded = metrics.get("grounded_reward") or {}
    spearman = "n/a" if grounded.get("spearman") is None else f"{grounded['spearman']:.3f}"
    return "\n".join(
        [
            SECTION_START,
            "## Reasoning judge",
            "",
            f"Judge `{metrics.get('judge_model')}`, prompt {metrics.get('prompt_version')}: "
            f"{metrics['n_scored']} of {metrics['n_with_reasoning']} reasonings scored 1-5; unscored: {unscored}.",
            "",
            markdown_table(["items", "n", "mean score"], rows),
            "",
            f"Against the deterministic `reasoning_grounded` reward on the same {grounded.get('n', 0)} items: "
            f"Spearman {spearman}, mean reward {_fmt(grounded.get('mean_reward'))}.",
            "",
            f"![judge scores]({JUDGE_PLOT})",
            SECTION_END,
        ]
    )


def append_report(path: Path, metrics: dict) -> None:
    """Add the judge section to report.md, replacing the one a previous judge run wrote."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start != -1 and end != -1:
        text = text[:start].rstrip("\n") + text[end + len(SECTION_END) :]
    write_text(path, text.rstrip("\n") + ("\n\n" if text.strip() else "") + judge_section(metrics) + "\n")


def calibrate(config: JudgeConfig, path: Path = CALIBRATION, http_client=None) -> dict:
    """Judge the human-scored outputs in `path`; Spearman correlation and exact / ±1 agreement with the humans."""
    from scipy.stats import spearmanr

    if not path.is_file():
        raise UserError(f"calibration file not found: {path}")
    rows = _read_jsonl(path)
    if not rows:
        raise UserError(f"{path} holds no calibration items")
    policy = load_policy(config.policy or "marketplace")
    judged = judge_items(Judge(config, http_client), rows, policy, JudgePrompt.load(config.prompt), None)
    pairs = [(row["human_score"], judged[row["id"]]["score"]) for row in rows if judged.get(row["id"], {}).get("score")]
    human, model = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    by_kind: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in rows:
        if judged.get(row["id"], {}).get("score"):
            by_kind[row["kind"]].append((row["human_score"], judged[row["id"]]["score"]))
    spearman = float(spearmanr(human, model).statistic) if len(pairs) > 2 else None
    return {
        "judge_model": config.model,
        "prompt_version": config.prompt,
        "n": len(rows),
        "n_scored": len(pairs),
        "spearman": None if spearman is None or np.isnan(spearman) else spearman,
        "exact_agreement": float(np.mean(human == model)) if pairs else None,
        "within_one_agreement": float(np.mean(np.abs(human - model) <= 1)) if pairs else None,
        "by_kind": {
            kind: {
                "n": len(v),
                "human_mean": float(np.mean([h for h, _ in v])),
                "judge_mean": float(np.mean([j for _, j in v])),
            }
            for kind, v in sorted(by_kind.items())
        },
    }


def calibration_table(result: dict) -> str:
    from evals.report import markdown_table

    lines = [
        f"judge {result['judge_model']} (prompt {result['prompt_version']}): {result['n_scored']} of {result['n']} "
        f"calibration items scored",
        f"Spearman {_fmt(result['spearman'])}, exact agreement {_fmt(result['exact_agreement'])}, "
        f"within ±1 {_fmt(result['within_one_agreement'])}",
        "",
        markdown_table(
            ["kind", "n", "human mean", "judge mean"],
            [[k, v["n"], v["human_mean"], v["judge_mean"]] for k, v in result["by_kind"].items()],
        ),
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
