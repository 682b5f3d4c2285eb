"""The reasoning judge as an MLflow GenAI scorer, for teams that evaluate inside MLflow:

    from evals.judge import JudgeConfig
    from evals.judge_mlflow import reasoning_judge
    mlflow.genai.evaluate(data=[{"inputs": {"listing": ...}, "outputs": completion}, ...],
                          scorers=[reasoning_judge(JudgeConfig(endpoint=URL, model=NAME))])

`inputs` holds the listing, `outputs` the moderator's completion (or a dict with `completion`); the same prompt,
parser, cache and retries as `python -m evals judge`, so a score means the same thing in both places.
"""

from __future__ import annotations

from typing import Any

from evals.judge import Judge, JudgeConfig, JudgePrompt, verdict_text
from moderation.policy import load_policy
from moderation.verdict import parse

NAME = "reasoning_judge"


def reasoning_judge(config: JudgeConfig, policy: str = "marketplace", http_client=None):
    """An MLflow scorer: Feedback with the 1-5 score and the judge's justification, or an error when unscored."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    judge, prompt, loaded = Judge(config, http_client), JudgePrompt.load(config.prompt), load_policy(policy)

    @scorer(name=NAME, aggregations=["mean", "min"])
    def reasoning_judge_scorer(inputs: Any, outputs: Any) -> Feedback:
        listing = inputs.get("listing", "") if isinstance(inputs, dict) else str(inputs)
        completion = outputs.get("completion", "") if isinstance(outputs, dict) else str(outputs)
        verdict = parse(completion, loaded.category_ids)
        messages = prompt.messages(
            loaded, listing, verdict_text(verdict.decision, verdict.categories), verdict.reasoning
        )
        judgement, _ = judge.rate(messages)
        if judgement.score is None:
            return Feedback(name=NAME, error=judgement.unscored_reason or "unscored")
        return Feedback(name=NAME, value=judgement.score, rationale=judgement.justification)

    return reasoning_judge_scorer
