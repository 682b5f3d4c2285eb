"""SFT batches of similar lengths: every row once, less padding than random batches, shuffled, reproducible."""

import random
from itertools import pairwise

from training.length_buckets import LengthBucketSampler, length_bucketed_order


def padded(order: list[int], lengths: list[int], batch_size: int) -> int:
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


_DRAW = random.Random(0)
LENGTHS = [_DRAW.randint(20, 200) for _ in range(1003)]


def test_every_row_once_and_a_short_batch_last():
    order = length_bucketed_order(LENGTHS, 8, seed=1, bucket_batches=4)
    assert sorted(order) == list(range(len(LENGTHS)))
    head = order[: len(order) - len(order) % 8]
    assert len(set(head)) == len(head) == 1000  # the 3 rows left over form the last batch


def test_far_less_padding_than_random_batches():
    shuffled = list(range(len(LENGTHS)))
    random.Random(1).shuffle(shuffled)
    bucketed = length_bucketed_order(LENGTHS, 8, seed=1)
    assert padded(bucketed, LENGTHS, 8) < 0.9 * padded(shuffled, LENGTHS, 8)
    assert padded(bucketed, LENGTHS, 8) < 1.02 * sum(LENGTHS)


def test_batches_are_shuffled_not_sorted_longest_first():
    order = length_bucketed_order(LENGTHS, 8, seed=1, bucket_batches=64)
    tops = [max(LENGTHS[i] for i in order[start : start + 8]) for start in range(0, 1000, 8)]
    rises = sum(later > earlier for earlier, later in pairwise(tops))
    assert 0.3 < rises / (len(tops) - 1) < 0.7  # a random order rises about half the time, a sorted one never


def test_seeded_per_epoch():
    sampler = LengthBucketSampler(LENGTHS, 8, seed=3)
    first = list(sampler)
    assert list(sampler) == first == length_bucketed_order(LENGTHS, 8, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == sorted(first)
    assert len(sampler) == len(LENGTHS)
