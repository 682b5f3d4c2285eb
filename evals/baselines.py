"""Moderators that are not a local causal LM: a keyword baseline and any OpenAI-compatible chat endpoint.

(The TF-IDF baseline lives in `evals.tfidf`.) These subclass `inference.generate.Moderator` for its batching
(`moderate`, `moderate_batches`) and replace only how one batch is judged; their completions go through the same
`moderation.verdict.parse` as a model's.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from inference.generate import GenerationConfig, Moderation, Moderator
from moderation.errors import UserError
from moderation.policy import Policy
from moderation.prompt import PromptConfig, build_messages
from moderation.secrets import redact_url
from moderation.verdict import ALLOW, DISALLOW, parse, render

KEYWORD = "keyword"
MIN_HITS_CANDIDATES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class ScoredModeration(Moderation):
    """A result that also carries P(disallow), for ROC AUC and calibration (baselines with probabilities)."""

    score: float | None = None


_WORD = re.compile(r"[a-z0-9$][a-z0-9$'+\-]*[a-z0-9+]|[a-z0-9$]")
_STOPWORDS = frozenset(
    """
    a about after all also an and any anyone are as at be by can do does done each for from get go has have how if
    in include includes including into is it its just like make more no not of off on one or other our out over per
    real so such than that the their them then there these they this to up use used using via was we what when which
    who will with without you your any anything everything instant delivered delivery only every new
    """.split()  # noqa: SIM905
)


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 4 and word.endswith("s") and not word.endswith("ss") else word


def words(text: str) -> list[str]:
    """Lower-cased, lightly stemmed content words."""
    found = _WORD.findall(text.lower())
    return [_stem(w) for w in found if w not in _STOPWORDS and len(w) > 2 and not w.replace(",", "").isdigit()]


class KeywordModerator(Moderator):
    """A no-training baseline: each category's cue words come from its description and disallowed examples, minus
    words from its own allowed-nearby text and allowed examples and words shared by most categories. A listing is
    disallowed for a category when at least `min_hits` distinct cue words of that category occur in it.
    """

    def __init__(self, policy: Policy, min_hits: int = 2, batch_size: int = 64):
        self.policy = policy
        self.min_hits = min_hits
        self.generation = GenerationConfig(batch_size=batch_size)
        spread = Counter(w for c in policy.categories for w in set(words(_disallowed_text(c))))
        common = {w for w, n in spread.items() if n > max(1, len(policy.categories) // 3)}
        self.cues: dict[str, frozenset[str]] = {}
        for category in policy.categories:
            allowed = set(words(" ".join([category.allowed_nearby, *category.allowed_examples])))
            self.cues[category.id] = frozenset(set(words(_disallowed_text(category))) - allowed - common)

    def hits(self, text: str) -> dict[str, list[str]]:
        """Per category, the distinct cue words present in `text`."""
        present = set(words(text))
        return {cid: sorted(cues & present) for cid, cues in self.cues.items()}

    def judge(self, text: str) -> str:
        hits = self.hits(text)
        flagged = [cid for cid, found in hits.items() if len(found) >= self.min_hits]
        if not flagged:
            return render(ALLOW, (), f"Fewer than {self.min_hits} cue words of any category.")
        cited = "; ".join(f"{cid}: {', '.join(hits[cid])}" for cid in flagged)
        return render(DISALLOW, flagged, f"Cue words found ({cited}).")

    def _moderate_batch(self, listings: Sequence[str]) -> list[Moderation]:
        began = time.perf_counter()
        completions = [self.judge(text) for text in listings]
        latency = (time.perf_counter() - began) / max(1, len(completions))
        return [Moderation(c, parse(c, self.policy.category_ids), latency) for c in completions]


def choose_min_hits(policy: Policy, items: Sequence, candidates: Sequence[int] = MIN_HITS_CANDIDATES) -> dict:
    """The `min_hits` with the best disallow F1 on `items` (the train split; ties go to the larger, stricter value).

    Returns {"min_hits": chosen, "train_f1": {candidate: F1}} for metrics.json.
    """
    from sklearn.metrics import f1_score

    moderator = KeywordModerator(policy)
    most = [max(map(len, moderator.hits(item.text).values()), default=0) for item in items]
    truth = [item.label == DISALLOW for item in items]
    scores = {m: float(f1_score(truth, [n >= m for n in most], zero_division=0)) for m in candidates}
    best = max(candidates, key=lambda m: (scores[m], m))
    return {
        "min_hits": best,
        "criterion": "disallow F1 on train",
        "train_f1": {str(m): round(f, 4) for m, f in scores.items()},
    }


def _disallowed_text(category) -> str:
    return " ".join([category.title, category.description, *category.disallowed_examples])


REQUEST_TIMEOUT_S = 120.0  # one chat completion of a few hundred tokens
MAX_RETRIES = 3  # the openai SDK retries timeouts, 429 and 5xx with backoff before we give up with one line


class EndpointModerator(Moderator):
    """Moderates through an OpenAI-compatible chat endpoint with the project's own prompt (greedy by default).

    The API key is read from the environment variable named by `api_key_env` (a local server accepts any key).
    Requests in a batch run concurrently; the latency of each item is its own request time.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        policy: Policy,
        prompt_config: PromptConfig | None = None,
        generation: GenerationConfig | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        http_client=None,
    ):
        from moderation.openai_client import openai_client

        self.policy = policy
        self.model = model
        self.prompt_config = prompt_config or PromptConfig()
        self.generation = generation or GenerationConfig()
        self.client = openai_client(
            base_url, api_key_env, timeout_s=REQUEST_TIMEOUT_S, max_retries=MAX_RETRIES, http_client=http_client
        )

    def _one(self, text: str) -> Moderation:
        import openai

        from moderation.openai_client import describe

        began = time.perf_counter()
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=build_messages(self.policy, text, None, self.prompt_config),
                max_tokens=self.generation.max_new_tokens,
                temperature=self.generation.temperature,
            )
        except (openai.APIStatusError, openai.APIConnectionError) as error:  # after the SDK's own retries
            endpoint = redact_url(str(self.client.base_url))
            raise UserError(f"endpoint {endpoint} model {self.model!r}: {describe(error)}") from None
        completion = response.choices[0].message.content or ""
        return Moderation(completion, parse(completion, self.policy.category_ids), time.perf_counter() - began)

    def _moderate_batch(self, listings: Sequence[str]) -> list[Moderation]:
        with ThreadPoolExecutor(max_workers=len(listings)) as pool:
            return list(pool.map(self._one, listings))
