"""CTranslate2 engine: convert a model folder once (cached beside it), then moderate and score with CT2 on CPU.

The converted model lives next to its source (`runs/<name>/merged` -> `runs/<name>/ct2-int8`, any other folder
`X` -> `X-ct2-int8`) with a `source.json` holding the SHA-256 of the source's safetensors files, so retraining into
the same run folder triggers a fresh conversion instead of serving stale weights.

Generation and scoring see exactly the token ids of the transformers path (`Moderator.prompt_ids`), so a listing's
text never becomes a control token here either, and completions go through the same parser.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from inference.compute_types import compute_type_problem
from inference.fast_answer import DISALLOW_WORD, Scores, answer_tokens, forced_answer_ids
from inference.generate import ANSWER_END, GenerationConfig, Moderator, end_of_turn_ids, refuse_compile
from inference.models import load_tokenizer
from moderation.errors import UserError
from moderation.policy import Policy
from moderation.prompt import PromptConfig

SOURCE = "source.json"


def weights_hash(folder: Path) -> str:
    """SHA-256 over the folder's safetensors files (names and bytes): what a cached conversion was made from."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder}: no *.safetensors weights to convert")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def cache_path(model_dir: Path, compute_type: str) -> Path:
    """Where the conversion of `model_dir` for `compute_type` is cached: beside the source folder."""
    name = f"ct2-{compute_type}" if model_dir.name == "merged" else f"{model_dir.name}-ct2-{compute_type}"
    return model_dir.parent / name


def convert(model_dir: str | Path, compute_type: str = "int8", output: Path | None = None) -> Path:
    """The CT2 conversion of an HF model folder, reused while its weights are unchanged, redone (atomically) after."""
    import ctranslate2

    if problem := compute_type_problem("ct2", compute_type):
        raise UserError(problem)
    source = Path(model_dir)
    if not (source / "config.json").is_file():
        raise UserError(f"{source}: not a local HF model folder (no config.json); CT2 converts local folders only")
    target = output or cache_path(source, compute_type)
    stamp = {"source": str(source.resolve()), "sha256": weights_hash(source), "quantization": compute_type}
    if (target / SOURCE).is_file() and json.loads((target / SOURCE).read_text(encoding="utf-8")) == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        converter = ctranslate2.converters.TransformersConverter(str(source), load_as_float16=False)
        converter.convert(str(staging), quantization=compute_type, force=True)
        (staging / SOURCE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class CT2Moderator(Moderator):
    """`Moderator` with generation by `ctranslate2.Generator.generate_batch`: greedy (or sampled), batched, and
    stopped per listing as soon as its completion contains `</answer>` (or at end of turn)."""

    def __init__(
        self,
        generator,
        tokenizer,
        policy: Policy,
        prompt_config: PromptConfig | None = None,
        generation: GenerationConfig | None = None,
    ):
        super().__init__(generator, tokenizer, policy, prompt_config, generation)
        self.end_tokens = sorted({tokenizer.eos_token, *(tokenizer.convert_ids_to_tokens(end_of_turn_ids(tokenizer)))})

    def complete(self, prompts: list[list[int]]) -> list[str]:
        tails: list[list[str]] = [[] for _ in prompts]
        to_text = self.tokenizer.convert_tokens_to_string  # never `self` in the callback: see below

        def answered(step) -> bool:
            """Stop this listing once `</answer>` is written (only the last tokens are decoded). Runs on CT2's worker
            thread, so it holds no `self`: a Generator freed from its own worker thread aborts the process."""
            tails[step.batch_id] = [*tails[step.batch_id][-7:], step.token]
            return ANSWER_END in to_text(tails[step.batch_id])

        sampling = self.generation.temperature > 0
        results = self.model.generate_batch(
            [self.tokenizer.convert_ids_to_tokens(ids) for ids in prompts],
            max_batch_size=self.generation.batch_size,
            max_length=self.generation.max_new_tokens,
            include_prompt_in_result=False,
            end_token=self.end_tokens,
            sampling_topk=0 if sampling else 1,
            sampling_temperature=self.generation.temperature if sampling else 1.0,
            callback=answered,
        )
        return self.tokenizer.batch_decode([result.sequences_ids[0] for result in results], skip_special_tokens=True)

    def chat_turn(self, prompt: list[int], max_tokens: int, temperature: float) -> tuple[list[int], bool]:
        """`Moderator.chat_turn` on CT2, stopping at the same end-of-turn tokens as moderation."""
        sampling = temperature > 0
        (result,) = self.model.generate_batch(
            [self.tokenizer.convert_ids_to_tokens(prompt)],
            max_length=max_tokens,
            include_prompt_in_result=False,
            end_token=self.end_tokens,
            return_end_token=True,
            sampling_topk=0 if sampling else 1,
            sampling_temperature=temperature if sampling else 1.0,
        )
        new = result.sequences_ids[0]
        return new, bool(new) and self.tokenizer.convert_ids_to_tokens(new[-1]) in self.end_tokens

    def fast_scorer(self, compile: bool = False) -> CT2FastScorer:
        refuse_compile(compile)
        return CT2FastScorer(self)


def load_ct2_moderator(
    model_dir: str | Path,
    policy: Policy,
    prompt_config: PromptConfig | None,
    generation: GenerationConfig | None,
    compute_type: str = "int8",
    device: str = "cpu",
    threads: int = 0,
) -> CT2Moderator:
    """Convert (or reuse the cached conversion of) `model_dir` and wrap it in a CT2Moderator (`threads`: CT2's
    intra-op threads, 0 for its default; 1 can win on a busy machine, as its OpenMP threads spin while waiting)."""
    import ctranslate2

    converted = convert(model_dir, compute_type)
    generator = ctranslate2.Generator(str(converted), device=device, compute_type=compute_type, intra_threads=threads)
    return CT2Moderator(generator, load_tokenizer(model_dir), policy, prompt_config, generation)


class CT2FastScorer:
    """serve's fast mode on CTranslate2: next-token logits after `<answer>\\n` (decision) and after `DISALLOW:`
    (categories), with the shared system-prompt prefix as CT2's cached static prompt, so a listing costs only its own
    tokens. CT2 forwards a batch's prompts at once only up to the shortest one, so rows are batched by equal length."""

    def __init__(self, moderator: CT2Moderator):
        self.moderator = moderator
        tokenizer = moderator.tokenizer
        first, second = (moderator.prompt_ids(text) for text in ("x", "A completely different listing, 12 words."))
        common = next((i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), len(first))
        self.prefix = first[: max(common - 1, 0)]  # one token of margin: the last shared token could merge
        self.disallow = self._encode(DISALLOW_WORD)
        self.decision_tokens, self.category_tokens = answer_tokens(self._encode, moderator.policy.category_ids)
        self.static_prompt = tokenizer.convert_ids_to_tokens(self.prefix)

    def _encode(self, text: str) -> list[int]:
        return self.moderator.tokenizer(text, add_special_tokens=False)["input_ids"]

    def score(self, listings: Sequence[str], reasonings: Sequence[str] | None = None) -> list[Scores]:
        """Score listings, each after its reasoning when given (else fast mode's empty one)."""
        import numpy as np

        started = time.perf_counter()
        rows = []
        for text, answer in zip(listings, forced_answer_ids(listings, reasonings, self._encode), strict=True):
            ids = self.moderator.prompt_ids(text)
            if ids[: len(self.prefix)] != self.prefix:
                raise UserError("fast mode: a prompt does not start with the shared prefix; use mode=reasoning")
            rows.append(ids[len(self.prefix) :] + answer)
        decision = self._next_logits(rows, self.decision_tokens)
        category = self._next_logits([row + self.disallow for row in rows], self.category_tokens)
        p_disallow = _softmax(decision)[:, 1]
        shares = _softmax(category)
        latency = (time.perf_counter() - started) / max(len(listings), 1)
        ids = self.moderator.policy.category_ids
        return [
            Scores(float(p), dict(zip(ids, map(float, share), strict=True)), latency)
            for p, share in zip(p_disallow, np.atleast_2d(shares), strict=True)
        ]

    def _next_logits(self, rows: list[list[int]], candidates: list[int]):
        """Logits of `candidates` as the next token after each row (prefix + row), in the rows' order."""
        import numpy as np

        out = np.zeros((len(rows), len(candidates)), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for index, row in enumerate(rows):
            by_length.setdefault(len(row), []).append(index)
        tokenizer = self.moderator.tokenizer
        for indices in by_length.values():
            results = self.moderator.model.generate_batch(
                [tokenizer.convert_ids_to_tokens(rows[i]) for i in indices],
                max_batch_size=self.moderator.generation.batch_size,
                static_prompt=self.static_prompt,
                max_length=1,
                include_prompt_in_result=False,
                return_logits_vocab=True,
            )
            for index, result in zip(indices, results, strict=True):
                out[index] = np.asarray(result.logits[0][0]).reshape(-1)[candidates]
        return out


def _softmax(logits):
    import numpy as np

    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
