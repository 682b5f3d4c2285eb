"""report.md and PNG plots for one evaluation, and `compare` to put several side by side.

Plots: binary confusion matrix (with a parse-failure column), per-category confusion matrices, per-category F1 bars
(one bar per model in `compare`), reliability of the verdict across listing lengths, and for runs with P(disallow)
(fast mode, tfidf) the reliability diagram the runner draws (evals.calibration).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np

from evals.calibration import FPR_BUDGETS, plot_roc
from evals.files import METRICS, PREDICTIONS, RELIABILITY, read_predictions, write_json, write_text
from evals.metrics import BINARY_LABELS, PARSE_FAILURE, paired_difference, predicted_label
from moderation.errors import UserError
from moderation.plotting import pyplot
from moderation.policy import Policy
from moderation.verdict import ALLOW

LENGTH_BINS = (0, 100, 200, 400, 800, 1600, 10**9)  # listing length in characters


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_binary_confusion(metrics: dict, path: Path) -> None:
    plt = pyplot()
    matrix = np.array(metrics["confusion"]["matrix"])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="black")
    ax.set_xticks(range(len(BINARY_LABELS)), [f"pred {c}" for c in BINARY_LABELS])
    ax.set_yticks(range(2), [f"gold {c}" for c in metrics["confusion"]["rows"]])
    ax.set_title(f"{metrics.get('label', '')}: verdicts (n={metrics['n']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_category_confusions(metrics: dict, path: Path) -> None:
    plt = pyplot()
    categories = list(metrics["per_category"])
    columns = min(3, len(categories))
    rows = -(-len(categories) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.flat[len(categories) :]:
        ax.axis("off")
    for ax, category in zip(axes.flat, categories, strict=False):
        matrix = np.array(metrics["per_category"][category]["confusion"])
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, str(value), ha="center", va="center")
        ax.set_xticks([0, 1], ["pred no", "pred yes"])
        ax.set_yticks([0, 1], ["gold no", "gold yes"])
        ax.set_title(category, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_category_f1(runs: Sequence[dict], path: Path) -> None:
    """Grouped bars: per-category F1, one bar per run."""
    plt = pyplot()
    categories = list(dict.fromkeys(c for m in runs for c in m["per_category"]))
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(categories) * max(1, len(runs) / 2)), 3.8))
    for i, metrics in enumerate(runs):
        values = [metrics["per_category"].get(c, {}).get("f1", 0.0) for c in categories]
        ax.bar(np.arange(len(categories)) + i * width, values, width, label=metrics.get("label", f"run {i + 1}"))
    ax.set_xticks(np.arange(len(categories)) + width * (len(runs) - 1) / 2, categories, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title("per-category F1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def length_reliability(records: Sequence[dict]) -> list[dict]:
    """Accuracy and parse-failure rate per listing-length bin (characters)."""
    rows = []
    for low, high in pairwise(LENGTH_BINS):
        group = [r for r in records if low <= len(r.get("text", "")) < high]
        if group:
            rows.append(
                {
                    "bin": f"{low}-{high if high < 10**9 else '∞'}",
                    "n": len(group),
                    "accuracy": float(np.mean([predicted_label(r) == r["label"] for r in group])),
                    "parse_failure_rate": float(np.mean([predicted_label(r) == PARSE_FAILURE for r in group])),
                }
            )
    return rows


def plot_length_reliability(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    x = np.arange(len(rows))
    ax.plot(x, [r["accuracy"] for r in rows], marker="o", label="accuracy")
    ax.plot(x, [r["parse_failure_rate"] for r in rows], marker="s", label="parse-failure rate")
    ax.set_xticks(x, [f"{r['bin']}\n(n={r['n']})" for r in rows], fontsize=8)
    ax.set_xlabel("listing length (characters)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("reliability across listing lengths")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, metrics: dict, records: Sequence[dict], policy: Policy) -> Path:
    """Write report.md and its PNGs into `out`; return the report's path."""
    lengths = length_reliability(records)
    plot_binary_confusion(metrics, out / "confusion_binary.png")
    plot_category_confusions(metrics, out / "confusion_categories.png")
    plot_category_f1([metrics], out / "per_category_f1.png")
    plot_length_reliability(lengths, out / "reliability_by_length.png")
    audit = audit_section(records, policy)
    cfg = metrics["config"]
    exact = metrics["exact_category_match"]
    outside = metrics["out_of_policy"]
    sources = [[s, v["n"], v["accuracy"]] for s, v in metrics["by_source"].items()]
    lines = [
        f"# Evaluation: {metrics['label']} on {Path(cfg['data']).name}",
        "",
        f"Model `{cfg['model']}`, policy `{policy.name}`, data `{cfg['data']}`: n={metrics['n']} "
        f"({metrics['n_disallowed']} disallowed, {metrics['n_allowed']} allowed); skipped rows: "
        f"{_counts(metrics['skipped_rows'])}; rows outside the policy, left out of every metric: "
        f"{metrics['out_of_policy']['n']}.",
        "",
        "Disallow is the positive class. A parse failure is never correct: a miss on a disallowed item, a false alarm"
        " on an allowed one. `fpr` = allowed items answered DISALLOW *or unparseable* / allowed items (what serving"
        " flags: it sends an unparseable answer to review by default); `fpr_parsed` = allowed items answered DISALLOW"
        " / allowed items with a readable answer (the model's own rate when it answers). Intervals are 95% bootstrap"
        " intervals (items resampled).",
        "",
        headline_table([metrics]),
        "",
        f"Parse failures on allowed items: {metrics['allowed_parse_failures']}, on disallowed items: "
        f"{metrics['disallowed_parse_failures']}. Exact category-set match: {_fmt(exact['all'])} "
        f"(disallowed items: {_fmt(exact['disallowed'])}).",
        "",
        "![binary confusion](confusion_binary.png)",
        "",
        *_scores_section(metrics),
        "## Per category (multi-label)",
        "",
        markdown_table(
            ["category", "precision", "recall", "F1", "support", "predicted"],
            [[c, v["precision"], v["recall"], v["f1"], v["support"], v["predicted"]] for c, v in _per_cat(metrics)],
        ),
        "",
        "![per-category F1](per_category_f1.png) ![per-category confusion](confusion_categories.png)",
        "",
        "## Output format",
        "",
        markdown_table(["status", "count"], list(metrics["status_counts"].items())),
        "",
        f"Mean reasoning length: {_fmt(metrics['mean_reasoning_words'], 1)} words. Latency p50 "
        f"{_fmt(metrics['latency_p50_s'])} s, p95 {_fmt(metrics['latency_p95_s'])} s per item, "
        f"{_fmt(metrics['items_per_s'], 2)} items/s.",
        "",
        "## Reliability across listing lengths",
        "",
        markdown_table(["length", "n", "accuracy", "parse-failure rate"], [list(r.values()) for r in lengths]),
        "",
        "![reliability](reliability_by_length.png)",
        "",
        "## By source",
        "",
        markdown_table(["source", "n", "accuracy"], sources),
        "",
        "## Outside the policy",
        "",
        f"{outside['n']} disallowed rows have only categories outside the policy "
        f"({', '.join(f'{n} × {c}' for c, n in outside['categories'].items()) or 'none'}). They are no violation of"
        f" this policy, so they are left out of every metric above; the model flagged {outside['flagged']} of them"
        f" ({outside['parse_failures']} unparseable).",
        "",
        "## Reward-hacking audit",
        "",
        audit,
        "",
    ]
    path = out / "report.md"
    write_text(path, "\n".join(lines))
    return path


HEADLINE = ("accuracy", "precision", "recall", "f1", "fpr", "fpr_parsed", "macro_f1", "parse_failure_rate")
WITH_CI = ("accuracy", "f1", "fpr", "macro_f1")  # shown as `value (low–high)`


def headline_table(runs: Sequence[dict]) -> str:
    """One row per run; accuracy, F1, FPR and macro-F1 with their 95% bootstrap intervals."""
    rows = []
    for m in runs:
        cells = [_with_ci(m.get(k), m.get(f"{k}_ci95")) if k in WITH_CI else m.get(k) for k in HEADLINE]
        rows.append([m.get("label", "?"), m["n"], *cells])
    return markdown_table(["model", "n", *HEADLINE], rows)


def _with_ci(value, ci) -> str:
    return f"{_fmt(value)} ({_ci(ci)})" if ci else _fmt(value)


def score_lines(metrics: dict) -> list[str]:
    """The `scores` block in words (empty for runs without P(disallow)): printed after an eval and in report.md."""
    scores = metrics.get("scores")
    if not scores:
        return []
    at = scores["at_target_fpr"]
    threshold = scores["threshold_at_fpr"][f"{at['target_fpr']:g}"]
    cut = "none (even the top score breaks it)" if threshold is None else _fmt(threshold, 4)
    return [
        f"P(disallow): ROC-AUC {_fmt(scores['roc_auc'])}, PR-AUC {_fmt(scores['pr_auc'])}, "
        f"ECE {_fmt(scores['ece'])} (10 bins), Brier {_fmt(scores['brier'])}, accuracy at 0.5 "
        f"{_fmt(scores['accuracy_at_0.5'])}",
        f"threshold for FPR <= {at['target_fpr']:g}: {cut} -> FPR {_fmt(at['fpr'])}, TPR {_fmt(at['tpr'])}",
    ]


def scores_table(runs: Sequence[dict]) -> list[str]:
    """The runs that carry P(disallow) (fast mode, tfidf): ranking, calibration and the target-FPR operating point."""
    scored = [m for m in runs if m.get("scores")]
    if not scored:
        return []
    budgets = [f"{b:g}" for b in FPR_BUDGETS]
    header = ["model", "ROC-AUC", "PR-AUC", "ECE", "Brier", "acc@0.5", "target FPR", "threshold", "FPR", "TPR",
              *(f"TPR@{float(b):.0%}" for b in budgets)]  # fmt: skip
    rows = [
        [m["label"], *(m["scores"][k] for k in ("roc_auc", "pr_auc", "ece", "brier", "accuracy_at_0.5")),
         m["scores"]["at_target_fpr"]["target_fpr"], *(_fmt(t, 4) for t in m["scores"]["threshold_at_fpr"].values()),
         *(m["scores"]["at_target_fpr"][k] for k in ("fpr", "tpr")),
         *(m["scores"].get("tpr_at_fpr", {}).get(b) for b in budgets)]
        for m in scored
    ]  # fmt: skip
    return [
        "P(disallow) scores (runs that have them). `TPR@x%`: the recall each model reaches when its threshold is set so"
        " that at most x% of allowed items are flagged (equal false alarms; `roc.png` draws the whole curve):",
        "",
        markdown_table(header, rows),
        "",
    ]


def _scores_section(metrics: dict) -> list[str]:
    lines = score_lines(metrics)
    if not lines:
        return []
    mode = metrics.get("config", {}).get("mode", "reasoning")
    verdict = f"The verdicts above flag at P >= {metrics['config']['threshold']:g}. " if mode == "fast" else ""
    return [
        "## Scores (P(disallow))",
        "",
        f"{verdict}{lines[0]}. The {lines[1]}.",
        "",
        f"![reliability diagram]({RELIABILITY})",
        "",
    ]


PAIRED = {"accuracy": "accuracy", "f1": "F1", "fpr": "FPR", "macro_f1": "macro-F1"}  # paired_difference's deltas


def paired_section(dirs: Sequence[Path], runs: Sequence[dict]) -> list[str]:
    """Each run minus the one before it on the items both scored (paired bootstrap), when predictions are there.

    Listed in pipeline order (base, SFT, SFT+GRPO), each row is what one stage added.
    """
    if len(dirs) < 2 or not all((d / PREDICTIONS).is_file() for d in dirs):
        return []
    predictions = [evaluated_records(d, m) for d, m in zip(dirs, runs, strict=True)]
    categories = list(runs[0]["per_category"])
    rows = []
    for (before, after), (old, new) in zip(pairwise(predictions), pairwise(runs), strict=True):
        shared = [i for i in before if i in after]
        if not shared:
            continue
        d = paired_difference([before[i] for i in shared], [after[i] for i in shared], categories)
        deltas = [cell for name in PAIRED for cell in (d[name]["delta"], _ci(d[name]["ci95"]))]
        rows.append([f"{new['label']} − {old['label']}", d["n"], *deltas, d["fixed"], d["broken"]])
    if not rows:
        return []
    header = ["change", "n paired", *(cell for name in PAIRED.values() for cell in (f"Δ {name}", "95% CI"))]
    header += ["fixed", "broken"]
    return [
        "## Paired differences, each model vs the one before it",
        "",
        "Same items for both models, resampled together (1000 bootstrap draws): an interval that excludes 0 is a real"
        " difference on this data. `fixed`/`broken`: items only the later model gets right/wrong.",
        "",
        markdown_table(header, rows),
        "",
    ]


def source_section(runs: Sequence[dict]) -> list[str]:
    """The share of each source's rows every model flags: on an all-allowed source (ordinary pages, look-alikes that
    name a category's topic) each flag is a false alarm, so one overall FPR cannot hide which kind of page pays."""
    sources = list(dict.fromkeys(s for m in runs for s in m.get("by_source", {})))
    if not sources:
        return []
    rows = []
    for source in sources:
        counted = [m["by_source"][source] for m in runs if source in m.get("by_source", {})]
        first = next((c for c in counted if "n_allowed" in c), counted[0])  # older metrics lack n_allowed
        allowed = first.get("n_allowed")
        label = "allow" if allowed == first["n"] else "disallow" if allowed == 0 else "–"
        rows.append([source, first["n"], label, *(m.get("by_source", {}).get(source, {}).get("flagged") for m in runs)])
    return [
        "## Flagged by source",
        "",
        "Share of each source's rows flagged (unparseable counts as flagged). On a source whose rows are all allowed"
        " every flag is a false alarm; on an all-disallowed one the share is recall.",
        "",
        markdown_table(["source", "n", "label", *(m["label"] for m in runs)], rows),
        "",
    ]


def evaluated_records(folder: Path, metrics: dict) -> dict[str, dict]:
    """The run's own records: the ids its metrics were computed on (predictions.jsonl may hold more, e.g. from an
    earlier run of the same folder with a larger --limit)."""
    saved = read_predictions(folder / PREDICTIONS)
    ids = metrics.get("ids")
    if ids is None:
        raise UserError(f"{folder}/{METRICS} lists no evaluated ids (made by an older version): re-run the evaluation")
    return {i: saved[i] for i in ids if i in saved}


def _f1_if_present(metrics: dict, category: str) -> float | None:
    """F1 of a category the run's data holds; None (shown as –) where it has no gold example."""
    scores = metrics["per_category"].get(category, {})
    return scores["f1"] if scores.get("support") else None


def _counts(counts: dict[str, int]) -> str:
    """`3 (2 × no text, 1 × not UTF-8)`, or `0`."""
    total = sum(counts.values())
    return f"{total} ({', '.join(f'{n} × {name}' for name, n in counts.items())})" if total else "0"


def _ci(ci) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "–"


def _per_cat(metrics: dict):
    return [(c, v) for c, v in metrics["per_category"].items() if v["support"] or v["predicted"]]


def audit_section(records: Sequence[dict], policy: Policy) -> str:
    """`rewards.audit` over the saved completions (rewards' statistics and suspected hacks), when rewards is there."""
    try:
        from rewards.audit import audit
    except ImportError:
        return "`rewards.audit` is not available in this checkout; no audit was run."
    # The rewards need gold categories from the policy: rows labelled outside it are left out of the audit.
    known = set(policy.category_ids)
    rows = [
        {key: r[key] for key in ("completion", "label", "categories", "text")}
        for r in records
        if set(r["categories"]) <= known and (r["label"] == ALLOW or r["categories"])
    ]
    if not rows:
        return "No row has gold categories from the policy; no audit was run."
    left_out = f"\n{len(records) - len(rows)} rows labelled outside the policy were left out." * (
        len(rows) < len(records)
    )
    return "```\n" + audit(rows, policy).render() + "\n```" + left_out


def compare(dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Put several evaluation folders side by side: compare.md, compare.json and per_category_f1.png in `out`."""
    runs = []
    for folder in map(Path, dirs):
        path = folder / METRICS
        if not path.is_file():
            raise UserError(f"{folder} has no {METRICS}: run `python -m evals run ... --out {folder}` first")
        metrics = json.loads(path.read_text(encoding="utf-8"))
        metrics.setdefault("label", folder.name)
        if sum(m.get("label") == metrics["label"] for m in runs):
            metrics["label"] = f"{metrics['label']} ({folder.name})"
        runs.append(metrics)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_category_f1(runs, out / "per_category_f1.png")
    roc = ["![ROC curves, low-FPR region](roc.png)", ""] if plot_roc(runs, out / "roc.png") else []
    categories = list(dict.fromkeys(c for m in runs for c in m["per_category"]))
    category_rows = [[c, *(_f1_if_present(m, c) for m in runs)] for c in categories]
    category_rows = [row for row in category_rows if any(v is not None for v in row[1:])]
    data_sets = sorted({Path(m["config"]["data"]).name for m in runs if "config" in m})
    lines = [
        "# Comparison",
        "",
        f"Data: {', '.join(data_sets)}. Rows are comparable only when n and data match.",
        "",
        headline_table(runs),
        "",
        *scores_table(runs),
        *roc,
        *paired_section([Path(d) for d in dirs], runs),
        *source_section(runs),
        "## Per-category F1",
        "",
        "Categories with gold examples in at least one run; – where a run's data has none.",
        "",
        markdown_table(
            ["category", *(m["label"] for m in runs)],
            category_rows,
        ),
        "",
        "![per-category F1](per_category_f1.png)",
        "",
        "Folders: " + ", ".join(f"`{d}`" for d in dirs),
        "",
    ]
    path = out / "compare.md"
    write_text(path, "\n".join(lines))
    keys = ("label", "n", *HEADLINE, *(f"{k}_ci95" for k in WITH_CI))
    write_json(out / "compare.json", {"runs": [{k: m.get(k) for k in keys} for m in runs]})
    return path
