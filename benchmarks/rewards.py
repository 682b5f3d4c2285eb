"""Reward throughput: completions/s for the full default reward set, as TRL calls it (one call per reward per batch).

    python benchmarks/rewards.py [--n 10000] [--batch 64]

`ours` is the registry's rewards as built for training, where the rewards of one batch share one memoised
`moderation.verdict.parse` per completion. `baseline` is the same rewards with that memo emptied before every reward
call, so every reward parses every completion itself. `parse only` is one plain `parse` per completion: the ceiling
the parser sets. Every timing starts with all memos empty. Pinned to one CPU core; target ≥ 20,000 completions/s.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # this script is called rewards.py: `import rewards` must find the package, not this file

import moderation.verdict
import rewards
import rewards.reasoning
import rewards.registry
from moderation.policy import load_policy
from moderation.verdict import parse, render


def make_rows(n: int, policy, group: int, seed: int = 0) -> list[dict]:
    """A mix of what a policy emits during GRPO: exact answers, stray text, spam, copies, unparseable, rambling.

    Each listing is shared by `group` consecutive completions, as in a GRPO group.
    """
    rng = random.Random(seed)
    ids = policy.category_ids
    vocabulary = " ".join(c.description + " " + " ".join(c.disallowed_examples) for c in policy.categories).split()
    rows = []
    for i in range(n):
        if i % group == 0:
            listing = " ".join(rng.choices(vocabulary, k=rng.randint(30, 150)))
            label = rng.choice(["allow", "disallow"])
            gold = rng.sample(ids, rng.randint(1, 2)) if label == "disallow" else []
        reasoning = f"Row {i}: " + " ".join(rng.choices(vocabulary, k=rng.randint(0, 70)))
        kind = rng.random()
        if kind < 0.5:
            predicted = rng.sample(ids, rng.randint(1, 3))
            text = render("disallow", predicted, reasoning) if rng.random() < 0.5 else render("allow", (), reasoning)
        elif kind < 0.6:
            text = render("disallow", ids, reasoning) + " Hope this helps! " * rng.randint(0, 5)
        elif kind < 0.7:
            text = f"<reasoning>{listing}</reasoning><answer>DISALLOW: {', '.join(gold or ['made_up'])}</answer>"
        elif kind < 0.8:
            text = f"<reasoning>{reasoning}</reasoning>\n<answer>\nmaybe {i}"
        else:
            text = f"{reasoning} so I would say ALLOW " * rng.randint(1, 4)
        rows.append({"completion": text, "label": label, "categories": gold, "text": listing})
    return rows


def score_all(funcs, rows: list[dict], batch: int, share_parse: bool) -> None:
    """Score every row with every reward, one call per reward per batch, from cold memo caches.

    Without `share_parse` the parse memo is emptied before every reward call, so each reward parses for itself.
    """
    clear_memos()
    parse_memo = rewards.registry._cached_parse
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        columns = {key: [r[key] for r in chunk] for key in ("label", "categories", "text")}
        completions = [r["completion"] for r in chunk]
        for func in funcs:
            if not share_parse:
                parse_memo.cache_clear()
            func(completions, **columns)


def clear_memos() -> None:
    """Empty the memos of the rewards and the parser (parses, listing n-grams, answer tails): start each timing cold."""
    rewards.registry._cached_parse.cache_clear()
    rewards.reasoning.listing_ngrams.cache_clear()
    moderation.verdict._split_categories.cache_clear()


def parse_all(texts: list[str], known: frozenset[str]) -> None:
    """One plain `parse` per completion, from cold memos, with the category set the rewards pass."""
    clear_memos()
    for text in texts:
        parse(text, known)


def timed(work, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of `repeats` runs. On a shared machine the CPU time is what one
    uncontended core would take; the wall time includes waiting for the core."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="completions (default 10000)")
    parser.add_argument("--batch", type=int, default=64, help="completions per reward call, as in one GRPO step")
    parser.add_argument("--group", type=int, default=8, help="completions per listing (TRL's num_generations)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    policy = load_policy("marketplace")
    rows = make_rows(args.n, policy, args.group)
    funcs = rewards.build_rewards(list(rewards.DEFAULT_REWARDS), policy)
    texts = [r["completion"] for r in rows]
    results = {
        "baseline (each reward parses)": timed(lambda: score_all(funcs, rows, args.batch, False), args.repeats),
        "ours (one shared parse)": timed(lambda: score_all(funcs, rows, args.batch, True), args.repeats),
        "parse only (1 per row)": timed(lambda: parse_all(texts, frozenset(policy.category_ids)), args.repeats),
    }
    n = args.n
    print(f"{', '.join(rewards.DEFAULT_REWARDS)}")
    print(f"{n} completions, batches of {args.batch}, groups of {args.group}, pinned to 1 core, best of {args.repeats}")
    print(f"{'':<32} {'completions/s (wall)':>21} {'completions/s (CPU)':>20}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<32} {n / wall:>21,.0f} {n / cpu:>20,.0f}")
    (base_wall, base_cpu), (ours_wall, ours_cpu) = (
        results["baseline (each reward parses)"],
        results["ours (one shared parse)"],
    )
    print(f"{'ratio (ours / baseline)':<32} {base_wall / ours_wall:>20.2f}x {base_cpu / ours_cpu:>19.2f}x")
    parse_cpu = results["parse only (1 per row)"][1]
    print(f"the parser takes {parse_cpu / ours_cpu:.0%} of ours (CPU); target >= 20,000 completions/s")
    reference = timed(lambda: sum(range(10**7)), args.repeats)[1]
    print(f"core speed reference: sum(range(10**7)) takes {reference:.3f} s CPU here (compare machines with it)")


if __name__ == "__main__":
    main()
