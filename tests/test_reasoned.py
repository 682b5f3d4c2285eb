"""Reasoning mode's verdict at a threshold (inference.reasoned): read after the model's own reasoning, cut like fast
mode, the written names kept, an unreadable answer never allowed."""

import pytest

from inference import load_moderator
from inference.fast_answer import Scores
from inference.generate import Moderator
from inference.reasoned import reasoned_verdict
from moderation.verdict import ALLOW, DISALLOW, Verdict
from serve.engine import Engine

SHARES = {"iptv": 0.6, "gambling": 0.3, "spam": 0.1}


@pytest.mark.parametrize(
    ("written", "p_disallow", "flagged", "named"),
    [
        (Verdict(DISALLOW, ("gambling",)), 0.9, True, {"gambling"}),  # flagged: the names the answer wrote
        (Verdict(ALLOW), 0.9, True, {"iptv", "gambling"}),  # the answer said ALLOW: names read after DISALLOW:
        (Verdict(DISALLOW, ("iptv",)), 0.4, False, set()),  # under the cut: allowed, whatever was written
        (Verdict(ALLOW), 0.4, False, set()),
    ],
)
def test_the_threshold_decides_and_the_written_names_stay(written, p_disallow, flagged, named):
    verdict = reasoned_verdict(written, Scores(p_disallow, SHARES, 0.0), flag_threshold=0.5, category_threshold=0.3)
    assert verdict.flagged is flagged
    assert {c for c, hit in verdict.categories.items() if hit} == named
    assert verdict.category_scores == pytest.approx({c: p_disallow * s for c, s in SHARES.items()})


class WrittenModerator(Moderator):
    """The tiny model, its completions fixed by the test; the verdict reading after them is the model's own."""

    def __init__(self, model_dir, completions: list[str]):
        base = load_moderator(model_dir)
        super().__init__(base.model, base.tokenizer, base.policy, base.prompt_config, base.generation)
        self.completions = completions

    def complete(self, prompts):
        return self.completions[: len(prompts)]


def test_serve_reads_reasoning_mode_at_each_requests_threshold(tiny_model_dir):
    completions = [
        "<reasoning>\nSells IPTV access.\n</reasoning>\n<answer>\nDISALLOW: iptv\n</answer>",
        "<reasoning>\nSells IPTV access.\n</reasoning>\n<answer>\nDISALLOW: iptv\n</answer>",
        "<reasoning>\nA brush pack.\n</reasoning>\n<answer>\nALLOW\n</answer>",
        "no answer at all",
    ]
    engine = Engine(WrittenModerator(tiny_model_dir, completions))
    texts = ["Premium IPTV", "Premium IPTV", "Watercolor brush pack", "x"]
    results = engine.run(texts, "reasoning", thresholds=[0.0, 1.0, 0.0, 1.0])
    assert [r.flagged for r in results] == [True, False, True, True]
    assert {c for c, hit in results[0].categories.items() if hit} == {"iptv"}
    assert not any(results[1].categories.values()) and any(results[2].categories.values())
    assert results[3].parsed is False and not any(results[3].category_scores.values())  # unreadable: flagged, unscored
    reading = engine.scorer.score(texts[:1], ["Sells IPTV access."])[0]
    assert sum(results[0].category_scores.values()) == pytest.approx(reading.p_disallow, abs=1e-4)
    assert results[0].reasoning == "Sells IPTV access." and results[2].status == "ok"


def test_evals_read_reasoning_mode_by_the_same_rule(tiny_model_dir):
    """What `evals run --mode reasoning` saves: the written completion and reasoning, serve's verdict and its score."""
    from evals.reasoned import ReasonedModerator

    completions = [
        "<reasoning>\nSells IPTV access.\n</reasoning>\n<answer>\nALLOW\n</answer>",
        "no answer at all",
    ]
    texts = ["Premium IPTV", "x"]
    saved = ReasonedModerator(WrittenModerator(tiny_model_dir, completions), threshold=0.0).moderate(texts)
    served = Engine(WrittenModerator(tiny_model_dir, completions)).run(texts, "reasoning", thresholds=[0.0, 0.0])
    assert saved[0].verdict.decision == DISALLOW and served[0].flagged  # the cut, not the written ALLOW, decides
    assert saved[0].completion == completions[0] and saved[0].verdict.reasoning == "Sells IPTV access."
    assert saved[0].score == pytest.approx(sum(served[0].category_scores.values()), abs=1e-4)
    assert saved[1].verdict.decision is None and saved[1].score is None  # unreadable: counted as flagged, unscored
