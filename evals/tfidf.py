"""The TF-IDF baseline: the first thing a new user would try, so every table shows what it scores.

Features: word 1-2-grams and character 3-5-grams (TF-IDF, sublinear tf), fitted on the `train` split only. Heads:
logistic regression for allow/disallow, and one-vs-rest logistic regression for the categories, trained on the
disallowed train rows. The vectorizers see all of train (no labels); each head's C is chosen by 3-fold
cross-validation on train (GridSearchCV: binary F1 for the decision, macro F1 for the categories).

The fitted model is cached next to the split as `.baselines/tfidf-<key>.joblib`, where the key hashes train's bytes
and the fitting settings, so re-evaluation (another split, a resumed run) never refits.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evals.baselines import ScoredModeration
from evals.data import Item
from inference.generate import GenerationConfig, Moderator
from moderation.errors import UserError
from moderation.files import atomic_path, file_sha256
from moderation.policy import Policy
from moderation.verdict import ALLOW, DISALLOW, parse, render

TFIDF = "tfidf"
CACHE_FOLDER = ".baselines"
# Everything that changes the fitted model besides train itself; part of the cache key.
SETTINGS = {
    "word_ngrams": (1, 2),
    "char_ngrams": (3, 5),
    "min_df": 2,
    "C_grid": (0.3, 3.0, 30.0),
    "cv_folds": 3,
    "seed": 0,
    "version": 1,
}


@dataclass
class TfidfModel:
    """The fitted pieces and what was chosen (saved as one joblib file)."""

    features: object  # sklearn FeatureUnion
    decision: object  # LogisticRegression
    categories: object  # OneVsRestClassifier
    category_ids: list[str]
    chosen: dict


def cache_key(train_path: Path) -> str:
    settings = json.dumps(SETTINGS, sort_keys=True).encode()
    return hashlib.sha256(file_sha256(train_path).encode() + settings).hexdigest()[:16]


def load_or_fit(train_path: Path, train_items: Sequence[Item], policy: Policy) -> tuple[TfidfModel, dict]:
    """The cached model for this train file and settings, fitted and saved first if there is none.

    Returns the model and a record for metrics.json: cache key and path, whether it came from the cache, what CV chose.
    """
    import joblib

    key = cache_key(train_path)
    path = train_path.parent / CACHE_FOLDER / f"{TFIDF}-{key}.joblib"
    began = time.perf_counter()
    cached = path.is_file()
    if cached:
        model = joblib.load(path)
    else:
        model = fit(train_items, policy)
        with atomic_path(path) as temporary:
            joblib.dump(model, temporary)
    info = {
        "train": str(train_path),
        "train_sha256": file_sha256(train_path),
        "cache_key": key,
        "cache_path": str(path),
        "from_cache": cached,
        "seconds": round(time.perf_counter() - began, 2),
        "settings": SETTINGS,
        **model.chosen,
    }
    return model, info


def fit(items: Sequence[Item], policy: Policy) -> TfidfModel:
    """Fit features and both heads on `items` (the train split), choosing C by cross-validation."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import FeatureUnion
    from sklearn.preprocessing import MultiLabelBinarizer

    known = set(policy.category_ids)
    y = np.array([item.label == DISALLOW for item in items])
    category_sets = [[c for c in item.categories if c in known] for item in items]
    with_categories = np.array([bool(y[i]) and bool(category_sets[i]) for i in range(len(items))])
    folds = SETTINGS["cv_folds"]
    if min(y.sum(), (~y).sum()) < folds:
        raise UserError(f"tfidf: train needs at least {folds} allowed and {folds} disallowed rows")
    binarizer = MultiLabelBinarizer(classes=sorted({c for s in category_sets for c in s}))
    labels = binarizer.fit_transform([s for s, keep in zip(category_sets, with_categories, strict=True) if keep])
    if labels.shape[1] < 2 or with_categories.sum() < folds:
        raise UserError("tfidf: train needs disallowed rows from at least 2 policy categories")

    features = FeatureUnion(
        [
            ("word", _vectorizer(TfidfVectorizer, analyzer="word", ngram_range=SETTINGS["word_ngrams"])),
            ("char", _vectorizer(TfidfVectorizer, analyzer="char_wb", ngram_range=SETTINGS["char_ngrams"])),
        ]
    )
    x = features.fit_transform([item.text for item in items])
    grid = list(SETTINGS["C_grid"])
    seed = SETTINGS["seed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined F1 in a fold without a category's positives; sklearn deprecations
        decision = GridSearchCV(
            _logistic(),
            {"C": grid},
            scoring="f1",
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            n_jobs=-1,  # liblinear is single-threaded: one fit per core, same result
        ).fit(x, y)
        categories = GridSearchCV(
            OneVsRestClassifier(_logistic()),
            {"estimator__C": grid},
            scoring="f1_macro",
            cv=KFold(folds, shuffle=True, random_state=seed),
            n_jobs=-1,
        ).fit(x[with_categories], labels)
    chosen = {
        "decision_C": decision.best_params_["C"],
        "decision_cv_f1": round(float(decision.best_score_), 4),
        "categories_C": categories.best_params_["estimator__C"],
        "categories_cv_macro_f1": round(float(categories.best_score_), 4),
        "n_train": len(items),
        "n_features": int(x.shape[1]),
    }
    return TfidfModel(features, decision.best_estimator_, categories.best_estimator_, list(binarizer.classes_), chosen)


def _vectorizer(cls, **settings):
    return cls(sublinear_tf=True, min_df=SETTINGS["min_df"], dtype=np.float32, **settings)


def _logistic():
    from sklearn.linear_model import LogisticRegression

    # The dual liblinear solver is ~10x faster than the primal ones here (far more features than rows).
    return LogisticRegression(solver="liblinear", dual=True, max_iter=2000)


class TfidfModerator(Moderator):
    """Moderates with a fitted `TfidfModel`; its verdicts are rendered in the output format and parsed like a
    model's, and each carries P(disallow) as a score for ROC and calibration."""

    def __init__(self, model: TfidfModel, policy: Policy, batch_size: int = 256):
        self.model = model
        self.policy = policy
        self.generation = GenerationConfig(batch_size=batch_size)

    def _moderate_batch(self, listings: Sequence[str]) -> list[ScoredModeration]:
        began = time.perf_counter()
        x = self.model.features.transform(listings)
        p_disallow = self.model.decision.predict_proba(x)[:, 1]
        p_categories = self.model.categories.predict_proba(x)
        completions = [self._render(p, row) for p, row in zip(p_disallow, p_categories, strict=True)]
        latency = (time.perf_counter() - began) / max(1, len(listings))
        known = self.policy.category_ids
        return [
            ScoredModeration(c, parse(c, known), latency, float(p))
            for c, p in zip(completions, p_disallow, strict=True)
        ]

    def _render(self, p_disallow: float, p_categories: np.ndarray) -> str:
        if p_disallow < 0.5:
            return render(ALLOW, (), f"P(disallow) = {p_disallow:.3f} < 0.5.")
        ids = self.model.category_ids
        # At least one category: the most likely one when none reaches 0.5 on its own.
        chosen = [ids[i] for i in np.flatnonzero(p_categories >= 0.5)] or [ids[int(np.argmax(p_categories))]]
        cited = ", ".join(f"{ids[i]} {p_categories[i]:.2f}" for i in np.argsort(-p_categories)[:3])
        return render(DISALLOW, chosen, f"P(disallow) = {p_disallow:.3f}; category probabilities: {cited}.")
