"""SFT batches of rows with similar lengths, in random batch order: less padding, the same rows each epoch.

A batch is padded to its longest row, and every padded position is computed (attention masks do not skip work on
CPU). On the CPU recipe's train split, 12% of the positions after the shared system turn in random batches of 8 are
padding, <1% when rows are sorted by length within buckets of 64 batches; with the recipe's padding to a multiple of
32 that is 10% fewer positions (benchmarks/sft_step.py: 7% of all of them, 1.10x per step). transformers'
`group_by_length` sorts the same way but then feeds each bucket longest-first, a saw-tooth of lengths that here is
also a saw-tooth of kinds (the empty-reasoning targets are the shortest); the batches here are shuffled across the
whole epoch instead.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

BUCKET_BATCHES = 64  # batches sorted together: large enough to pad little, small enough to keep rows mixed


def length_bucketed_order(
    lengths: Sequence[int], batch_size: int, seed: int, bucket_batches: int = BUCKET_BATCHES
) -> list[int]:
    """Every index once, so that each run of `batch_size` consecutive indices is a batch of similar lengths.

    The rows are shuffled, cut into buckets of `bucket_batches` batches, sorted by length inside each bucket and cut
    into batches; the full batches are then shuffled, and a short last batch (when the rows do not divide evenly)
    stays last so that every batch before it keeps its rows together.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        ranked = sorted(order[start : start + bucket], key=lengths.__getitem__)
        batches += [ranked[i : i + batch_size] for i in range(0, len(ranked), batch_size)]
    short = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    rng.shuffle(batches)
    return [index for batch in batches + short for index in batch]


class LengthBucketSampler(Sampler[int]):
    """`length_bucketed_order` as a sampler: seeded per epoch (the Trainer calls `set_epoch`), so a resumed run skips
    exactly the batches it had already trained on."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(length_bucketed_order(self.lengths, self.batch_size, self.seed + self.epoch))
