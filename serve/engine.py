"""The model side of serving: one `Engine.run(texts, mode)` call per batch, and the asyncio dynamic batcher.

Requests put their listings on a bounded queue; one worker takes the first item, keeps collecting for
`max_wait_ms` (or until `max_batch_size`), and runs the whole batch in one model call on a single model thread, so
throughput grows with concurrency while the event loop stays free. A full queue is refused at once (429) instead of
growing without bound; `max_batch_size=1` is one-request-at-a-time (the load test's baseline).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inference import ENGINES, load_moderator
from inference.compute_types import COMPUTE_TYPES, compute_type_problem
from inference.fast_answer import fast_verdict
from inference.generate import GenerationConfig, Moderator
from inference.reasoned import reasoned_verdict, score_reasoned
from serve.validation import serving_threshold

Mode = Literal["fast", "reasoning"]
# What an unparseable reasoning-mode answer becomes: flagged for review (the default: a broken answer must never read as
# "allowed"), allowed, or an error (HTTP 502 for its request; `predict` writes no row, so a rerun retries it).
ParseFailurePolicy = Literal["flag", "allow", "error"]


@dataclass(frozen=True)
class Result:
    """One listing's answer in the service's terms (the HTTP layer maps it to the OpenAI shape)."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    reasoning: str | None
    status: str  # "ok", or the verdict parser's status when a reasoning-mode completion is off-format
    parsed: bool = True  # False when no decision could be read (then `flagged` follows the parse-failure policy)


class Engine:
    """Runs batches in either mode.

    fast: one forward pass (`Moderator.fast_scorer`) read by inference.fast_answer.fast_verdict (the rule evals count):
    `flagged` when P(DISALLOW) >= flag_threshold; category_scores are P(DISALLOW) x the category's share; a flagged
    listing names its top category and any other whose share is at least category_threshold.
    reasoning: generates the full format, parses it with moderation.verdict.parse and reads the verdict at the same
    threshold after the model's own reasoning (inference.reasoned); a completion with no readable decision is flagged
    per `on_parse_failure` (default: flagged, no category) and says why in `status`.
    """

    def __init__(
        self,
        moderator: Moderator,
        flag_threshold: float = 0.5,
        category_threshold: float = 0.3,
        on_parse_failure: ParseFailurePolicy = "flag",
        compile: bool = False,
    ):
        self.moderator = moderator
        self.on_parse_failure = on_parse_failure
        self.category_ids = moderator.policy.category_ids
        self.flag_threshold = flag_threshold
        self.category_threshold = category_threshold
        self.scorer = moderator.fast_scorer(compile)

    def run(self, texts: Sequence[str], mode: Mode, thresholds: Sequence[float | None] | None = None) -> list[Result]:
        """One result per text; `thresholds` overrides flag_threshold per text where not None."""
        cuts = [self.flag_threshold if t is None else t for t in thresholds or [None] * len(texts)]
        return self._fast(texts, cuts) if mode == "fast" else self._reasoning(texts, cuts)

    def _fast(self, texts: Sequence[str], cuts: Sequence[float]) -> list[Result]:
        results = []
        for scores, cut in zip(self.scorer.score(texts), cuts, strict=True):
            verdict = fast_verdict(scores, cut, self.category_threshold)
            results.append(Result(verdict.flagged, verdict.categories, verdict.category_scores, None, "ok"))
        return results

    def _reasoning(self, texts: Sequence[str], cuts: Sequence[float]) -> list[Result]:
        moderations = self.moderator.moderate(list(texts))
        readings = score_reasoned(self.scorer, texts, moderations)
        results = []
        for moderation, scores, cut in zip(moderations, readings, cuts, strict=True):
            written = moderation.verdict
            status = str(written.status)
            if scores is None:
                unread = dict.fromkeys(self.category_ids, False)
                flagged = self.on_parse_failure == "flag"
                results.append(Result(flagged, unread, dict.fromkeys(unread, 0.0), written.reasoning, status, False))
                continue
            verdict = reasoned_verdict(written, scores, cut, self.category_threshold)
            results.append(
                Result(verdict.flagged, verdict.categories, verdict.category_scores, written.reasoning, status)
            )
        return results


class EngineConfig(BaseModel):
    """The model settings shared by the server and the predict CLI (each adds its own fields)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field("smollm2-135m", description="HF id, local folder, embedded name or trained run folder")
    policy: str | None = Field(None, description="policy name or YAML path (default: the run's, else marketplace)")
    mode: Mode = Field(
        "reasoning", description="reasoning (generate and parse; the mode evals measure) or fast (one forward pass)"
    )
    on_parse_failure: ParseFailurePolicy = Field(
        "flag", description="reasoning mode, answer with no readable verdict: flag (for review), allow, or error"
    )
    max_batch_size: int = Field(16, ge=1, description="listings per model call; 1 disables dynamic batching")
    max_new_tokens: int = Field(128, ge=1, description="reasoning mode: generation budget")
    engine: Literal[ENGINES] = Field(
        "transformers",
        description="transformers (the fp32 reference), ct2 (CTranslate2 on CPU, converted once) or vllm (CUDA)",
    )
    compute_type: Literal[COMPUTE_TYPES] = Field(
        "float32",
        description="ct2: int8, int8_float32 or float32 (float32 kept every verdict of the trained run; int8 faster); "
        "transformers: bfloat16 (what `make eval` measures: ~2.8x fp32 where the CPU has bf16 kernels) or float32; "
        "vllm: bfloat16, float16 or float32",
    )
    threads: int = Field(
        0, ge=0, description="CPU threads for torch and ct2 (0: their defaults; 1 can win on a busy machine)"
    )
    compile: bool = Field(
        False,
        description="fast mode, transformers engine: torch.compile the one-pass scorer at startup (1-2 min on 2 "
        "cores, once; about 1.4x the listings/s after, benchmarks/eval_throughput.py --compile)",
    )
    threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="both modes: flag when P(DISALLOW) is at least this (default: the threshold at 5% FPR of this "
        "model's fast-mode eval on its held-back train slice, else on dev, never below 0.5; else 0.5)",
    )
    eval_dir: str | None = Field(None, description="where the model's evals are (default: <run>/eval)")
    category_threshold: float = Field(0.3, ge=0, le=1, description="name other categories above this share")

    @model_validator(mode="after")
    def _fits_the_engine(self) -> EngineConfig:
        """Refuse before the model loads (or converts) rather than after."""
        if problem := compute_type_problem(self.engine, self.compute_type):
            raise ValueError(problem)
        if self.compile and self.engine != "transformers":
            raise ValueError("compile needs the transformers engine: CTranslate2 and vLLM run their own kernels")
        return self


def load_engine(config: EngineConfig) -> Engine:
    """Load the model once (a bad model or policy ends here with one line) and build the engine."""
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    generation = GenerationConfig(max_new_tokens=config.max_new_tokens, batch_size=config.max_batch_size)
    moderator = load_moderator(
        config.model, config.engine, config.compute_type, config.policy, generation=generation, threads=config.threads
    )
    threshold = serving_threshold(config.model, config.threshold, config.eval_dir).value
    return Engine(moderator, threshold, config.category_threshold, config.on_parse_failure, config.compile)


class Overloaded(Exception):
    """The queue cannot take these listings now (HTTP 429)."""


class Closing(Exception):
    """The server is shutting down and takes no new work (HTTP 503)."""


@dataclass
class _Item:
    text: str
    mode: Mode
    threshold: float | None  # fast mode: this request's flag threshold (None: the server's)
    future: asyncio.Future


@dataclass
class BatchStats:
    submitted: int = 0
    batches: int = 0
    items: int = 0
    busy_s: float = 0.0
    sizes: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class Batcher:
    """Dynamic batching over a bounded asyncio queue; one model call at a time on a dedicated thread."""

    def __init__(self, engine: Engine, max_batch_size: int = 16, max_wait_ms: float = 5.0, max_queue: int = 256):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.stats = BatchStats()
        self.closing = False
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._busy = False
        self._calls = 0  # `call`s queued or running on the model thread

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._task = asyncio.create_task(self._loop())

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._queue else 0

    @property
    def idle(self) -> bool:
        """Nothing waiting, no batch running, no call on the model thread."""
        return not (self.queued or self._busy or self._calls)

    def submit(self, texts: Sequence[str], mode: Mode, threshold: float | None = None) -> list[asyncio.Future]:
        """Enqueue all of `texts` or none of them (listings with different thresholds still share a model call)."""
        if self.closing or self._queue is None:
            raise Closing("the server is shutting down")
        if self.max_queue - self._queue.qsize() < len(texts):
            raise Overloaded(f"queue full ({self._queue.qsize()}/{self.max_queue} listings waiting)")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in texts]
        for text, future in zip(texts, futures, strict=True):
            self._queue.put_nowait(_Item(text, mode, threshold, future))
        self.stats.submitted += len(texts)
        return futures

    async def call(self, function, *args):
        """Run `function(*args)` on the model thread, between batches (the model is never used by two threads)."""
        if self.closing or self._executor is None:
            raise Closing("the server is shutting down")
        self._calls += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            self._calls -= 1

    async def _collect(self) -> list[_Item]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [item for item in batch if not item.future.done()]  # timed-out requests cancel their futures

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self._busy = True
            by_mode: dict[Mode, list[_Item]] = defaultdict(list)
            for item in batch:
                by_mode[item.mode].append(item)
            for mode, items in by_mode.items():
                started = time.perf_counter()
                try:
                    texts, thresholds = [i.text for i in items], [i.threshold for i in items]
                    results = await loop.run_in_executor(self._executor, self.engine.run, texts, mode, thresholds)
                except Exception as error:  # handed to each waiting request, which answers 500 without details
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(error)
                else:
                    for item, result in zip(items, results, strict=True):
                        if not item.future.done():
                            item.future.set_result(result)
                self.stats.batches += 1
                self.stats.items += len(items)
                self.stats.sizes[len(items)] += 1
                self.stats.busy_s += time.perf_counter() - started
            self._busy = False

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new work, let queued and running batches finish (bounded), then stop the worker."""
        self.closing = True
        deadline = time.monotonic() + drain_timeout_s
        while not self.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
