"""Dataset rows → conversational prompts (and SFT targets) built from the policy at train time."""

from __future__ import annotations

import random
from pathlib import Path

from inference.fast_answer import ANSWER_PREFIX, CATEGORY_START
from moderation.errors import UserError
from moderation.policy import Policy
from moderation.prompt import build_messages, prompt_length
from moderation.splits import VALIDATION
from moderation.verdict import DISALLOW, render
from rewards.registry import ANSWER_START
from training.recipe import Recipe


def load_rows(dataset: Path, split: str = "train") -> list[dict]:
    import pandas as pd

    path = dataset / f"{split}.parquet"
    frame = pd.read_parquet(path)
    missing = {"text", "label", "categories"} - set(frame.columns)
    if missing:
        raise UserError(f"{path} lacks columns: {', '.join(sorted(missing))}")
    frame["categories"] = frame["categories"].map(list)
    return frame.to_dict("records")


HOLDOUT = "holdout.parquet"


def hold_back(rows: list[dict], recipe: Recipe) -> list[dict]:
    """Shuffle the rows (seeded) and set `recipe.holdout` of them aside in runs/<name>/holdout.parquet: the slice
    thresholds and step counts are chosen on, so dev and test stay untouched. Returns the rows to train on.

    When the dataset has a validation slice (written in phrases neither train nor dev/test use), that slice is the
    holdout instead and every train row is trained on: choices made on train's own wording did not carry over to
    dev/test's unseen wording (README, "GRPO in fast mode's form")."""
    import io

    import pandas as pd

    from moderation.files import atomic_write_bytes

    rows = list(rows)
    random.Random(recipe.seed).shuffle(rows)
    if (recipe.dataset / f"{VALIDATION}.parquet").exists():
        held, what = load_rows(recipe.dataset, VALIDATION), "validation rows (own wording) as the holdout"
    else:
        held, rows = rows[: recipe.holdout], rows[recipe.holdout :]
        what = "train rows held back"
    if held:
        buffer = io.BytesIO()
        pd.DataFrame(held).to_parquet(buffer, index=False)
        atomic_write_bytes(recipe.run_dir / HOLDOUT, buffer.getvalue())
        print(f"holdout: {len(held)} {what} in {recipe.run_dir / HOLDOUT}")
    return rows


def gold_reasoning(row: dict, policy: Policy) -> str:
    """The SFT reasoning target: the row's own rationale when the data has one, else one built from the policy."""
    if isinstance(row.get("rationale"), str) and row["rationale"].strip():
        return row["rationale"].strip()
    if row["label"] == DISALLOW:
        titles = " and ".join(policy.category(c).title.lower() for c in row["categories"])
        return f"The listing offers {titles}, which the policy disallows."
    return "The listing offers an ordinary digital product that no policy category covers."


def to_prompt_rows(rows: list[dict], policy: Policy, tokenizer, recipe: Recipe) -> tuple[list[dict], int]:
    """Rows with a conversational `prompt` (and SFT `completion`); prompts over the budget are dropped and counted."""
    kept, dropped = [], 0
    for row in rows:
        messages = build_messages(policy, row["text"], tokenizer, recipe.prompt)
        if prompt_length(messages, tokenizer) > recipe.max_prompt_tokens:
            dropped += 1
            continue
        answer = render(row["label"], row["categories"], gold_reasoning(row, policy))
        kept.append(
            {
                "prompt": messages,
                "completion": [{"role": "assistant", "content": answer}],
                "text": row["text"],
                "label": row["label"],
                "categories": row["categories"],
                "source": row.get("source"),
            }
        )
    return kept, dropped


def start_answers(rows: list[dict], tokenizer, fast_share: float, seed: int, task: str = "verdict") -> list[dict]:
    """GRPO rows with an `answer_start` column: for a seeded `fast_share` of them, the prompt (rendered to text, with
    the generation prompt) ends in fast mode's empty reasoning, so the group samples only the verdict and rewards
    score start + completion. With no fast share the rows keep their conversational prompts. The `categories` task
    keeps the disallowed rows only, each started after `DISALLOW:`, so the group samples only the category names.
    The `mixed` task adds every row in fast form, shuffled in among them: its groups sample the verdict, which holds
    P(DISALLOW) on allowed listings where naming alone, through the shared LoRA, lets it drift."""
    names = [started(row, tokenizer, CATEGORY_START) for row in rows if row["label"] == DISALLOW]
    if task == "categories":
        return names
    if task == "mixed":
        mixed = names + [started(row, tokenizer, ANSWER_PREFIX) for row in rows]
        random.Random(seed).shuffle(mixed)
        return mixed
    if not fast_share:
        return [{**row, ANSWER_START: ""} for row in rows]
    fast = set(random.Random(seed).sample(range(len(rows)), round(fast_share * len(rows))))
    return [started(row, tokenizer, ANSWER_PREFIX if index in fast else "") for index, row in enumerate(rows)]


def started(row: dict, tokenizer, start: str) -> dict:
    """The row with its prompt rendered to text (with the generation prompt) and `start` appended."""
    text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    return {**row, "prompt": text + start, ANSWER_START: start}
