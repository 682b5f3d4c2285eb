"""GRPO on the prompts that teach: keep the train prompts where the start model's group disagrees.

GRPO's advantage is a reward minus its group's mean, so a group whose completions all score the same gives no
gradient. After SFT most groups agree (all right or all wrong the same way) and most of a GRPO step is spent on them.
Before GRPO we sample the start model's group on a pool of train prompts, score it with the recipe's rewards and keep
the prompts whose answers differ: `pool_rewards` (verdict and categories by default) spread within the group, some
completions right and some wrong. The kept fraction is printed, saved and returned; TRL then logs
`frac_reward_zero_std` per step as the model moves.

Sampling a group costs ~64 decoding steps per completion, and after SFT most groups agree, so most of that is spent
learning that a prompt teaches nothing. With `prompt_screen` the start model first reads more prompts in fast mode
(one forward pass each, ~0.1 s) and only those whose group it expects to disagree are sampled: fast mode's P(DISALLOW)
and category shares, tempered like the rollouts, give the chance that a group does not all answer alike.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

from inference.fast_answer import CATEGORY_START, Scores
from moderation.policy import Policy
from moderation.verdict import ALLOW
from rewards.registry import ANSWER_START
from training.recipe import Recipe

KEPT = "grpo_prompts.json"
COLUMNS = ("label", "categories", "text", ANSWER_START)
SPREAD = 1e-6  # a group whose summed rewards spread less than this agreed
POOL_ROWS = 32  # completions per sampling call: 1.31x faster than 16 on 2 cores; 64 adds 0.6 GB for 2% more


def group_rewards(recipe: Recipe, policy: Policy, rows: list[dict], completions: list[str]) -> list[float]:
    """Summed `pool_rewards` of each completion (rows repeated `num_generations` times, as TRL scores them)."""
    import rewards

    funcs = rewards.build_rewards(recipe.pool_rewards, policy, recipe.reward_params)
    columns = {name: [row[name] for row in rows] for name in COLUMNS if name in rows[0]}
    totals = [0.0] * len(completions)
    for func in funcs:
        for i, value in enumerate(func(completions, **columns)):
            totals[i] += value or 0.0
    return totals


def rollout_config(recipe: Recipe, tokenizer):
    """The GenerationConfig GRPO samples its groups with: the recipe's temperature and completion budget."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True,
        temperature=recipe.temperature,
        max_new_tokens=recipe.max_completion_length,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def disagreeing_prompts(recipe: Recipe, model_path: Path | str, rows: list[dict], tokenizer, policy: Policy):
    """(rows to run GRPO on, kept fraction). Saved in runs/<name>/grpo_prompts.json so a resumed run reuses it."""
    saved = recipe.run_dir / KEPT
    if recipe.prompt_pool == 0:
        return rows, 1.0
    if saved.exists():
        record = json.loads(saved.read_text(encoding="utf-8"))
        kept = set(record["kept"])
        return [row for i, row in enumerate(rows) if i in kept], record["kept_fraction"]

    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    from moderation.files import atomic_write_text
    from training.models import device_kwargs
    from training.rollout import sample_completions

    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = device_kwargs(recipe)["bf16"]
    if recipe.prompt_screen:
        pool, expected = screened_pool(recipe, model_path, rows, device, bf16)
    else:
        pool, expected = list(range(min(recipe.prompt_pool, len(rows)))), None
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype="float32").to(device)
    config = rollout_config(recipe, tokenizer)

    def autocast():
        return torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)

    group = recipe.num_generations
    per_call, per_step = max(1, POOL_ROWS // group), max(1, recipe.per_device_train_batch_size // group)
    spreads: list[float] = []
    for start in tqdm(range(0, len(pool), per_call), desc="GRPO prompt pool", unit="batch"):
        batch = [rows[i] for i in pool[start : start + per_call]]
        repeated = [row for row in batch for _ in range(group)]
        sampled = sample_completions(model, tokenizer, [row["prompt"] for row in repeated], config, autocast)
        texts = tokenizer.batch_decode(sampled["completion_ids"], skip_special_tokens=True)
        totals = group_rewards(recipe, policy, repeated, texts)
        spreads += [statistics.pstdev(totals[i : i + group]) for i in range(0, len(totals), group)]
    kept = [pool[i] for i in teaching_prompts(spreads, per_step)]
    if recipe.prompt_pool_even_verdicts:
        kept = even_verdicts(kept, rows, per_step)
    disagreeing = sum(spread > SPREAD for spread in spreads)
    fraction = disagreeing / max(len(spreads), 1)
    record = {"pool": len(spreads), "kept": kept, "kept_fraction": fraction, "spreads": spreads}
    if expected is not None:
        record |= {"rows": pool, "expected_disagreement": expected}
    atomic_write_text(saved, json.dumps(record))
    named = Counter(category for i in kept for category in rows[i]["categories"])
    allowed = sum(rows[i]["label"] == ALLOW for i in kept)
    names = sum(names_form(rows[i]) for i in kept)
    print(
        f"GRPO prompt pool: {disagreeing} of {len(spreads)} prompts disagree within their group "
        f"({fraction:.0%}); GRPO trains on {len(kept)} ({allowed} allowed and {len(kept) - allowed - names} "
        f"disallowed in verdict form, {names} in names form; "
        f"gold categories: {', '.join(f'{name} {count}' for name, count in sorted(named.items()))})"
    )
    return [rows[i] for i in kept], fraction


def even_verdicts(kept: list[int], rows: list[dict], per_step: int) -> list[int]:
    """`kept` with its disallowed verdict-form prompts cut, in order, to as many as its allowed ones (never below one
    step's prompts), so that the verdict reward pushes P(DISALLOW) down as often as up; measured on one Gemma model it
    moved it down instead (rule Z, docs/experiments.md). Names-form prompts (started after `DISALLOW:`) stay."""
    allowed = sum(rows[i]["label"] == ALLOW for i in kept)
    verdicts = [i for i in kept if rows[i]["label"] != ALLOW and not names_form(rows[i])]
    cut = min(len(verdicts) - allowed, len(kept) - per_step)
    if cut <= 0:
        return kept
    dropped = set(verdicts[-cut:])
    return [i for i in kept if i not in dropped]


def names_form(row: dict) -> bool:
    """Whether the row's answer starts after `DISALLOW:`, so its group samples only the category names."""
    return row.get(ANSWER_START) == CATEGORY_START


SCREEN_BATCH = 64  # listings per fast-mode call: a progress tick every few seconds


def screened_pool(recipe: Recipe, model_path: Path | str, rows: list[dict], device: str, bf16: bool):
    """(row indices of the `prompt_pool` prompts, among the first `prompt_screen`, whose group fast mode expects to
    disagree most, in row order; their expected disagreement)."""
    from tqdm.auto import tqdm

    from inference.runs import load_moderator

    started = time.perf_counter()
    dtype = "bfloat16" if bf16 else "float32"
    scorer = load_moderator(model_path, recipe.policy, recipe.prompt, device=device, dtype=dtype).fast_scorer()
    screened = rows[: recipe.prompt_screen]
    odds: list[float] = []
    for start in tqdm(range(0, len(screened), SCREEN_BATCH), desc="GRPO prompt screen (fast mode)", unit="batch"):
        batch = screened[start : start + SCREEN_BATCH]
        for row, scores in zip(batch, scorer.score([row["text"] for row in batch]), strict=True):
            odds.append(expected_disagreement(scores, recipe.num_generations, recipe.temperature, names_form(row)))
    strata = [ALLOW if row["label"] == ALLOW else row["categories"][0] for row in screened]
    chosen = likeliest_to_disagree(odds, strata, recipe)
    print(  # rows and prompt_pool are never empty here: the pipeline stops on no rows, prompt_pool 0 never screens
        f"GRPO prompt screen: {len(odds)} prompts read in fast mode in {time.perf_counter() - started:.0f}s; the "
        f"{len(chosen)} most likely to disagree ({sum(strata[i] == ALLOW for i in chosen)} of them "
        f"allowed; expected {statistics.fmean(odds[i] for i in chosen):.0%}, all {statistics.fmean(odds):.0%}) "
        "are sampled"
    )
    return chosen, [odds[i] for i in chosen]


def likeliest_to_disagree(odds: list[float], strata: list[str], recipe: Recipe) -> list[int]:
    """Indices (in row order) of the prompt_pool prompts with the highest expected disagreement. `strata` holds each
    row's `allow`, or its first gold category. With `prompt_pool_allowed`, that share of the pool is filled from
    allowed rows and the rest from disallowed ones (a label short of rows leaves its places to the other); with
    `prompt_pool_balance`, the places the ranking gives each label are dealt out stratum by stratum in turn."""
    ranked = sorted(range(len(odds)), key=lambda i: -odds[i])
    if recipe.prompt_pool_balance:
        ranked = dealt_in_turn(ranked, strata)
    if recipe.prompt_pool_allowed is None:
        return sorted(ranked[: recipe.prompt_pool])
    wanted = round(recipe.prompt_pool * recipe.prompt_pool_allowed)
    allow = [i for i in ranked if strata[i] == ALLOW]
    disallow = [i for i in ranked if strata[i] != ALLOW]
    take_allowed = min(len(allow), max(wanted, recipe.prompt_pool - len(disallow)))
    return sorted(allow[:take_allowed] + disallow[: recipe.prompt_pool - take_allowed])


def dealt_in_turn(ranked: list[int], strata: list[str]) -> list[int]:
    """`ranked` reordered so that each stratum's first comes before any stratum's second, and so on (ties by rank):
    any prefix holds the strata as evenly as their rows allow, each one's best first."""
    dealt: Counter[str] = Counter()
    turn = {}
    for i in ranked:
        turn[i] = dealt[strata[i]]
        dealt[strata[i]] += 1
    return sorted(ranked, key=turn.__getitem__)


def expected_disagreement(scores: Scores, group: int, temperature: float, verdict_given: bool = False) -> float:
    """The chance that `group` answers sampled at `temperature` are not all the same, as fast mode reads the prompt:
    all ALLOW, or all DISALLOW naming the same top category. Close for fast form (it samples that answer directly), a
    ranking proxy for the reasoning form, whose group disagrees more often than this says. `verdict_given`: the answer
    starts after `DISALLOW:` (grpo_task=categories), so only the names can differ."""
    p_disallow = 1.0 if verdict_given else scores.p_disallow
    p_allow, p_disallow = tempered([1 - p_disallow, p_disallow], temperature)
    shares = tempered(list(scores.category_share.values()), temperature)
    return 1 - p_allow**group - p_disallow**group * sum(share**group for share in shares)


def tempered(probabilities: list[float], temperature: float) -> list[float]:
    """Probabilities as sampling at `temperature` sees them: p^(1/T), renormalized."""
    powered = [p ** (1 / temperature) for p in probabilities]
    total = sum(powered)
    return [p / total for p in powered] if total else probabilities


def teaching_prompts(spreads: list[float], per_step: int) -> list[int]:
    """Pool indices whose group disagreed. When fewer than one step's prompts disagree, the pool's first others fill
    that step (TRL drops a partial batch: one kept prompt would mean no GRPO step at all); when none did, all of them
    (expect frac_reward_zero_std ~1)."""
    kept = [index for index, spread in enumerate(spreads) if spread > SPREAD]
    if not kept:
        return list(range(len(spreads)))
    others = [index for index in range(len(spreads)) if index not in kept]
    return sorted(kept + others[: max(0, per_step - len(kept))])
