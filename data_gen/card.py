"""DATA_CARD.md for a built dataset: counts, length percentiles and language mix per label, dedup/leakage numbers and
the shortcut checks.

The shortcut checks answer "can a classifier tell allowed from disallowed without reading the content?". They see only
form: style features (length, lines, capitals, digits, punctuation, emoji, bullets, prices, hashtags; a variant adds
English function words), the page layout with the content masked, or the page language. Each is trained on train and
scored on test. Close to the majority-class rate means form does not leak the label; the content baseline (TF-IDF
words) beside them shows how much the content itself carries.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import numpy as np

from moderation.files import atomic_write_bytes
from moderation.plotting import pyplot
from moderation.splits import SPLITS

CATEGORY_HEADER = ["category", *(f"disallowed {s}" for s in SPLITS), *(f"hard neg. {s}" for s in SPLITS)]
_EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF\u2B50]")
_PRICE = re.compile(r"[$€£]\s?\d|\d\s?(?:\$|EUR|USD)|\bUSD\b")
# Closed-class English words (articles, pronouns, prepositions, auxiliaries, conjunctions): style, not topic.
FUNCTION_WORDS = tuple(
    sorted(
        """
    a an the and or but nor so yet if then than of to in on at by for with from into onto about as is are was
    were be been being am it its this that these those i me my mine you your yours we us our ours they them
    their he him his she her hers not no do does did can could will would shall should may might must just
    very too also there here what which who whom whose when where why how
        """.split()  # noqa: SIM905
    )
)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+\.)\s", re.MULTILINE)


_UPPER = re.compile(r"[A-ZÀ-ÖØ-ÞА-ЯЁ]")
_DIGIT = re.compile(r"\d")
_NOT_LETTER = re.compile(r"[\W\d_]+")
_LETTERS = re.compile(r"[^\W\d_]+")
_MASKED_RUN = re.compile(r"w(?:[ \t]+w)*")
_NUMBER = re.compile(r"\d[\d,.:/%-]*")


def style_features(texts: list[str]) -> np.ndarray:
    """Form-only features of each text (no content words); regex counts, so long pages stay fast."""
    rows = []
    for t in texts:
        words = t.split()
        letters = max(1, len(_NOT_LETTER.sub("", t)))
        rows.append(
            [
                np.log1p(len(t)),
                np.log1p(len(words)),
                t.count("\n"),
                len(_UPPER.findall(t)) / letters,
                len(_DIGIT.findall(t)) / max(1, len(t)),
                t.count("!"),
                t.count("?"),
                t.count(","),
                t.count(":"),
                t.count("#"),
                t.count("*"),
                t.count("|"),
                len(_EMOJI.findall(t)),
                len(_BULLET.findall(t)),
                1.0 if _PRICE.search(t) else 0.0,
                sum(map(len, words)) / max(1, len(words)),
                1.0 if t[:1].islower() else 0.0,
            ]
        )
    return np.asarray(rows, dtype=float)


def masked(text: str) -> str:
    """The text with every run of words replaced by `w` and every number by `0`; punctuation, markup, emoji stay."""
    return _MASKED_RUN.sub("w", _LETTERS.sub("w", _NUMBER.sub("0", text)))


def page_shape(masked_text: str) -> str:
    """The page's layout from its `masked` text: per line, the markup before the first word (heading marks, bullets,
    emoji, numbers, prices) and the line's last character, lines joined by a break token."""
    lines = []
    for line in masked_text.split("\n"):
        first = line.find("w")
        if first < 0:
            lines.append(line.strip() or "_")
            continue
        last = line.rstrip()[-1:]
        lines.append(f"{line[:first].strip() or '_'}w{'' if last == 'w' else last}")
    return " ⏎ ".join(lines)


def style_baseline(train: list[dict], test: list[dict]) -> dict:
    """Shortcut checks: accuracy of predicting the label from form only (style, page shape, language), next to the
    majority class and the content baseline. Trained on train, scored on test; form near the majority rate means
    it does not give the label away."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    y_train = [r["label"] for r in train]
    y_test = [r["label"] for r in test]
    if len(set(y_train)) < 2 or not test:
        return {"note": "needs both labels in train and a non-empty test split"}
    train_text, test_text = [r["text"] for r in train], [r["text"] for r in test]
    form_train, form_test = style_features(train_text), style_features(test_text)
    # one tokenisation serves the content baseline and the function-word counts
    words = CountVectorizer(ngram_range=(1, 2), min_df=2, dtype=np.float32)
    words_train, words_test = words.fit_transform(train_text), words.transform(test_text)
    function = [words.vocabulary_[w] for w in FUNCTION_WORDS if w in words.vocabulary_]

    masked_train, masked_test = [masked(t) for t in train_text], [masked(t) for t in test_text]

    def tokens(train_view: list[str], test_view: list[str]):
        vectorizer = CountVectorizer(token_pattern=r"\S+", ngram_range=(1, 3), min_df=2, lowercase=False)
        return vectorizer.fit_transform(train_view), vectorizer.transform(test_view)

    languages = OneHotEncoder(handle_unknown="ignore")
    language_train = languages.fit_transform([[r.get("language", "")] for r in train])
    language_test = languages.transform([[r.get("language", "")] for r in test])

    def fit_predict(x_train, x_test):
        scaler = StandardScaler(with_mean=False)
        model = LogisticRegression(solver="liblinear").fit(scaler.fit_transform(x_train), y_train)
        return model.predict(scaler.transform(x_test))

    def tfidf_predict(x_train, x_test):
        tfidf = TfidfTransformer(sublinear_tf=True)
        model = LogisticRegression(solver="liblinear").fit(tfidf.fit_transform(x_train), y_train)
        return model.predict(tfidf.transform(x_test))

    predictions = {
        "length_only": fit_predict(form_train[:, :3], form_test[:, :3]),
        "style_only": fit_predict(form_train, form_test),
        "style_and_function_words": fit_predict(
            hstack([csr_matrix(form_train), words_train[:, function]]).tocsr(),
            hstack([csr_matrix(form_test), words_test[:, function]]).tocsr(),
        ),
        "page_shape_only": tfidf_predict(
            *tokens([page_shape(t) for t in masked_train], [page_shape(t) for t in masked_test])
        ),
        "masked_words": tfidf_predict(*tokens(masked_train, masked_test)),
        "language_only": LogisticRegression(solver="liblinear").fit(language_train, y_train).predict(language_test),
        "content_tfidf": tfidf_predict(words_train, words_test),
    }
    majority = Counter(y_train).most_common(1)[0][0]

    def score(pred) -> dict:
        return {
            "accuracy": round(float(accuracy_score(y_test, pred)), 4),
            "balanced_accuracy": round(float(balanced_accuracy_score(y_test, pred)), 4),
        }

    return {"test_rows": len(test), "majority_class": score([majority] * len(y_test))} | {
        name: score(pred) for name, pred in predictions.items()
    }


def length_percentiles(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Characters per listing at p10/p50/p90/max, per label: the two must look alike."""
    out = {}
    for label in ("allow", "disallow"):
        lengths = [len(r["text"]) for r in rows if r["label"] == label]
        if lengths:
            p10, p50, p90 = np.percentile(lengths, [10, 50, 90])
            out[label] = {"p10": int(p10), "p50": int(p50), "p90": int(p90), "max": max(lengths)}
    return out


def language_mix(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Share of each language per label (language must not give the label away)."""
    out = {}
    for label in ("allow", "disallow"):
        part = Counter(r.get("language", "") for r in rows if r["label"] == label)
        total = sum(part.values())
        if total:
            out[label] = {lang: round(n / total, 4) for lang, n in sorted(part.items())}
    return out


def counts(rows: list[dict]) -> dict:
    """Nested counts for the manifest: split → label → n, split → category → n, split → source → n."""
    out: dict = {}
    for split in [*SPLITS, *sorted({r["split"] for r in rows} - set(SPLITS))]:  # a validation slice when built
        part = [r for r in rows if r["split"] == split]
        out[split] = {
            "rows": len(part),
            "label": dict(sorted(Counter(r["label"] for r in part).items())),
            "category": dict(sorted(Counter(c for r in part for c in r["categories"]).items())),
            "source": dict(sorted(Counter(r["source"] for r in part).items())),
            "hard_negative_near": dict(sorted(Counter(r["near_category"] for r in part if r["near_category"]).items())),
            "multi_label": sum(1 for r in part if len(r["categories"]) > 1),
        }
    return out


def _png(fig) -> bytes:
    plt = pyplot()

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def write_plots(out: Path, rows: list[dict]) -> list[str]:
    """Word-count histograms by label and by source (the two should overlap: length must not give the label away)."""
    plt = pyplot()

    words = np.array([len(r["text"].split()) for r in rows])
    bins = np.linspace(0, max(10, int(np.percentile(words, 99))) + 1, 40)
    names = []
    for field, name in (("label", "length_by_label.png"), ("source", "length_by_source.png")):
        fig, ax = plt.subplots(figsize=(7, 4))
        for value in sorted({r[field] for r in rows}):
            mask = np.array([r[field] == value for r in rows])
            ax.hist(words[mask], bins=bins, alpha=0.5, density=True, label=f"{value} (n={mask.sum()})")
        ax.set_xlabel("words per listing")
        ax.set_ylabel("density")
        ax.set_title(f"Listing length by {field}")
        ax.legend()
        fig.tight_layout()
        atomic_write_bytes(out / name, _png(fig))
        names.append(name)
    return names


def _table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in body]
    return "\n".join(lines)


def render_card(manifest: dict, rows: list[dict], plots: list[str], config) -> str:
    c = manifest["counts"]
    cats = manifest["categories"]
    d = manifest["dedup"]
    s = manifest["style_baseline"]
    split_rows = [
        [
            split,
            c[split]["rows"],
            c[split]["label"].get("allow", 0),
            c[split]["label"].get("disallow", 0),
            c[split]["multi_label"],
        ]
        for split in SPLITS
    ]
    cat_rows = [
        [
            cat,
            *(c[split]["category"].get(cat, 0) for split in SPLITS),
            *(c[split]["hard_negative_near"].get(cat, 0) for split in SPLITS),
        ]
        for cat in cats
    ]
    sources = sorted({r["source"] for r in rows})
    source_rows = []
    for source in sources:
        for label in ("allow", "disallow"):
            n = [
                sum(1 for r in rows if r["split"] == sp and r["source"] == source and r["label"] == label)
                for sp in SPLITS
            ]
            if any(n):
                source_rows.append([source, label, *n])
    pair_counts = Counter("+".join(r["categories"]) for r in rows if len(r["categories"]) > 1)
    if "style_only" in s:
        baseline = _table(
            ["classifier (train → test)", "accuracy", "balanced accuracy"],
            [
                [k, s[k]["accuracy"], s[k]["balanced_accuracy"]]
                for k in (
                    "majority_class",
                    "length_only",
                    "style_only",
                    "style_and_function_words",
                    "page_shape_only",
                    "masked_words",
                    "language_only",
                    "content_tfidf",
                )
            ],
        )
    else:
        baseline = s.get("note", "")
    backend = manifest["backend"]
    lengths, mix = manifest["length_chars"], manifest["language_mix"]
    reuse = d["held_out_rows_reusing_train_template"]
    length_rows = [[label, *v.values()] for label, v in lengths.items()]
    languages = sorted({lang for v in mix.values() for lang in v})
    language_rows = [[label, *(f"{v.get(lang, 0):.1%}" for lang in languages)] for label, v in mix.items()]
    return f"""# Data card: `{manifest["name"]}`

Policy `{manifest["policy"]}`, seed {manifest["seed"]}, backend `{backend["backend"]}`,
git `{manifest["git_commit"][:12]}`.
Rows: `id, text, label, categories, source, generator, split, rationale, near_category`.
`rationale` is one sentence citing the listing's own cue (usable as an SFT reasoning target);
`near_category` names the category a hard negative sits next to.

## Splits

{_table(["split", "rows", "allow", "disallow", "multi-label"], split_rows)}

## Categories

Disallowed rows per category (multi-label rows count once per category) and hard negatives next to each category.

{_table(CATEGORY_HEADER, cat_rows)}

Multi-label rows: {sum(pair_counts.values())} over {len(pair_counts)} category pairs.

## Sources

{_table(["source", "label", *SPLITS], source_rows)}

- `seed`: ordinary listings from our offline grammar (configs/data/lexicon/seed.yaml), written by us.
- `hard_negative`: allowed listings next to a category (configs/data/lexicon/<policy>.yaml, the policy's examples).
- `synthetic`: disallowed listings from the `{backend["backend"]}` backend, rendered in the same styles as allowed ones.
- `scraped` / `imported`: real listings from `python -m data_gen scrape` / `import`, when configured.

## Held-out phrasings

Dev and test measure generalisation to unseen wording: {config.dev_fraction + config.test_fraction:.0%} of the requests
of each kind are held out, and those draw their titles, pitches, details, slot values (the violation cues: coins,
platforms, parts, documents...) and tags only from held-out pools, {config.held_out_phrases:.0%} of every list of the
lexicons, chosen by a hash of the phrase; train rows never use them. A title or pitch shared by several kinds stays on
the train side; a kind whose side cannot show what its rationale cites, or that has a single title or pitch (such as
one built from a policy's own example), serves one side only. Held-out rows also get held-out page shapes: title and
heading styles, bullets, separators and the page wording of every language come from held-out pools too. The shared
style material inside a description is used by both sides. `content_tfidf` below is therefore a train →
unseen-wording number.

## Dedup and leakage

Near-duplicates are judged on what a listing sells (its content without the page around it): pages share their
sections by design.

- Generated: {d["generated"]}; dropped empty: {d["dropped_empty"]}.
- Near-duplicates dropped (word-3-gram Jaccard ≥ {config.dedup_threshold}): {d["dropped_near_duplicates"]}
  {d["dropped_near_duplicates_by_source"]}; held-out rows dropped as similar (≥ {config.leakage_threshold}) to a train
  row: {d["dropped_held_out_similar_to_train"]}.
- Similar pairs (Jaccard ≥ {config.leakage_threshold}) kept in the same split: {d["similar_pairs_kept_together"]}.
- **Cross-split near-duplicates: {d["cross_split_near_duplicates"]}** at Jaccard ≥ {config.leakage_threshold}
  ({d["cross_split_near_duplicates_at_dedup_threshold"]} at ≥ {config.dedup_threshold}).
- **Dev/test rows filled from a title or pitch template a train row also uses: {reuse["dev"]} dev, {reuse["test"]}
  test** (goal 0; atomic kinds such as those built from a policy's single example serve one side only).

## Shortcut checks

Can form alone predict the label? Logistic regression, trained on train, scored on test. `length_only`: characters,
words, lines. `style_only`: plus capitals, digits, punctuation, emoji, bullets, price, hashtags, word length.
`style_and_function_words`: plus counts of closed-class words (articles, pronouns, prepositions), which partly carry
voice and target ("her", "you"). `page_shape_only`: TF-IDF over the page layout with the content masked (per line:
heading marks, bullets, emoji, numbers and prices before the first word, and the line's last character).
`masked_words`: TF-IDF over the whole text with every word masked and every number `0` (in-sentence punctuation of
the content stays, so this one still sees a little content). `language_only`: the page language alone.
`content_tfidf`: word uni/bigrams, for contrast. Goal: everything but content at most 0.60, near the majority rate.

{baseline}

## Length and language

Every listing is content × page: the page (title heading, prices, ratings, calls to action, sections, long tails) and
its language are drawn independently of the label (configs/data/lexicon/pages.yaml), so neither may give it away.

{_table(["label", "p10 chars", "median", "p90", "max"], length_rows)}

{_table(["label", *languages], language_rows)}

{chr(10).join(f"![{p}]({p})" for p in plots)}

## Limits

The offline synthetic rows come from a grammar: varied, but a finite set of phrasings. Held-out pools make dev/test
wording unseen in train, but the sentence frames around the slots, the shared style material and the kinds of offer
are still ours: a score here is an upper bound on what to expect from listings written by other people, so evaluate on
real listings (`scraped`, `imported`) and listings written elsewhere. In pages of other languages the page wording
(headings, prices, calls to action, sections) is in that language, and every non-English page opens with a line on
what is sold in that language (two lines per category and side), but the product description itself (title, pitch,
details) is still English: the lexicons of what listings sell are English.
"""
