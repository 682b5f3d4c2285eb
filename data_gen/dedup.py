"""Near-duplicate detection: MinHash signatures over word 3-gram shingles, LSH banding, exact Jaccard to confirm.

Deterministic (fixed hash seeds, sorted outputs) and fast enough for tens of thousands of short listings on 2 cores.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

import numpy as np

_PRIME = np.uint64((1 << 61) - 1)
_WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, n: int = 3) -> frozenset[str]:
    """Lower-cased word n-grams (the whole text for texts shorter than n words)."""
    words = _WORD.findall(text.lower())
    if len(words) <= n:
        return frozenset([" ".join(words)])
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _hashes(items: frozenset[str]) -> np.ndarray:
    return np.array(
        [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little") for s in sorted(items)],
        dtype=np.uint64,
    )


def signatures(sets: list[frozenset[str]], num_perm: int = 64, seed: int = 1) -> np.ndarray:
    """MinHash signature matrix (len(sets) × num_perm) with universal hashes (a·x + b) mod (2^61 − 1), x < 2^32."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 29, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 29, size=num_perm, dtype=np.uint64)
    lengths = [len(items) for items in sets]
    flat = np.concatenate([_hashes(items) for items in sets])
    values = (flat[:, None] * a + b) % _PRIME
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.minimum.reduceat(values, starts, axis=0)


def candidate_pairs(sig: np.ndarray, bands: int = 16) -> set[tuple[int, int]]:
    """Index pairs that share at least one LSH band (rows per band = num_perm / bands)."""
    rows = sig.shape[1] // bands
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        chunk = sig[:, band * rows : (band + 1) * rows]
        for i in range(sig.shape[0]):
            buckets[chunk[i].tobytes()].append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs


def near_duplicate_pairs(texts: list[str], threshold: float) -> list[tuple[int, int, float]]:
    """All pairs (i < j) with word-3-gram Jaccard ≥ threshold, found via LSH, sorted."""
    sets = [shingles(t) for t in texts]
    if len(sets) < 2:
        return []
    sig = signatures(sets)
    found = []
    for i, j in sorted(candidate_pairs(sig)):
        score = jaccard(sets[i], sets[j])
        if score >= threshold:
            found.append((i, j, score))
    return found


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
