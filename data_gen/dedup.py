"""Near-duplicate detection: exact word-3-gram Jaccard over all pairs, computed as chunked sparse matrix products.

Exact, not MinHash: at this scale (thousands to ~100k short listings) the sparse product is faster than MinHash + LSH
in Python, and it misses nothing, which the cross-split leakage check needs (measured on the default build: LSH with
16×4 bands found 50 of the 107 pairs at Jaccard ≥ 0.5). Deterministic: outputs are sorted.
"""

from __future__ import annotations

import re

import numpy as np
from scipy.sparse import csr_matrix

_WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, n: int = 3) -> frozenset[str]:
    """Lower-cased word n-grams (the whole text for texts shorter than n words)."""
    words = _WORD.findall(text.lower())
    if len(words) <= n:
        return frozenset([" ".join(words)])
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def near_duplicate_pairs(texts: list[str], threshold: float, chunk: int = 1000) -> list[tuple[int, int, float]]:
    """All pairs (i < j) whose word-3-gram Jaccard is ≥ threshold, with the score, sorted."""
    if len(texts) < 2:
        return []
    matrix, sizes = _shingle_matrix([shingles(t) for t in texts], {})
    found: list[tuple[int, int, float]] = []
    for start in range(0, len(texts), chunk):
        shared = (matrix[start : start + chunk] @ matrix.T).tocoo()
        i, j, inter = shared.row + start, shared.col, shared.data
        upper = i < j
        i, j, inter = i[upper], j[upper], inter[upper]
        score = inter / (sizes[i] + sizes[j] - inter)
        keep = score >= threshold
        found += [(int(a), int(b), round(float(s), 6)) for a, b, s in zip(i[keep], j[keep], score[keep], strict=True)]
    return sorted(found)


def nearest_similarity(queries: list[str], references: list[str]) -> np.ndarray:
    """Each query's word-3-gram Jaccard with its most similar reference: how close a set of rows is to train."""
    vocabulary: dict[str, int] = {}
    refs, ref_sizes = _shingle_matrix([shingles(t) for t in references], vocabulary)
    asked, sizes = _shingle_matrix([shingles(t) for t in queries], vocabulary, grow=False)
    shared = (asked @ refs.T).toarray()
    return (shared / (sizes[:, None] + ref_sizes[None, :] - shared)).max(axis=1, initial=0.0)


def _shingle_matrix(sets: list[frozenset[str]], vocabulary: dict[str, int], grow: bool = True):
    """(sets as a 0/1 sparse matrix over `vocabulary`'s columns, each set's size). With grow=False, n-grams the
    vocabulary lacks are left out of the matrix but counted in the sizes (they can match nothing)."""
    rows, cols = [], []
    for i, items in enumerate(sets):
        for gram in sorted(items):
            if grow or gram in vocabulary:
                rows.append(i)
                cols.append(vocabulary.setdefault(gram, len(vocabulary)))
    shape = (len(sets), len(vocabulary))
    matrix = csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=shape)
    return matrix, np.array([len(items) for items in sets], dtype=np.float64)


def clusters(n: int, pairs: list[tuple[int, int, float]]) -> list[int]:
    """Union-find: a cluster id (its smallest member) per index."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [root(i) for i in range(n)]
