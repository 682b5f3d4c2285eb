"""The reward interface, the name → reward registry and `build_rewards`, which turns recipe names into TRL rewards.

A reward is what TRL's `GRPOTrainer(reward_funcs=...)` calls: `reward(completions, **columns) -> list[float | None]`,
one value per completion, where `columns` are the dataset's columns as lists (`label`, `categories`, `text`, ...) plus
TRL's own keywords (`prompts`, `completion_ids`, `trainer_state`, ...), which rewards ignore. `None` means "not
applicable" (TRL turns it into NaN and leaves it out of the means).

Two forms can be registered:

- a plain function `def my_reward(completions, label, **_) -> list[float | None]`, optionally with keyword
  parameters (set from the recipe's params) and a `policy` parameter (bound to the run's policy);
- a `Reward` subclass, for built-ins that need the policy and validated parameters.

`build_rewards` returns picklable callables whose `__name__` is the registry name, so TRL logs `rewards/<name>/mean`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar

from moderation.errors import UserError
from moderation.policy import Policy
from moderation.verdict import Verdict, parse

RewardFn = Callable[..., list[float | None]]

# A dataset column: text the prompt already put at the start of the answer (fast-form GRPO rows end their prompt with
# the empty reasoning fast mode forces, so the model samples only the verdict). Rewards score start + completion, the
# whole answer, exactly as the evals parse it.
ANSWER_START = "answer_start"
REGISTRY: dict[str, type[Reward] | RewardFn] = {}


class Reward:
    """Base for rewards that need the policy or parameters. Subclasses set `name` and implement `score`.

    Parameters are keyword-only arguments of `__init__` (after `policy`); `build_rewards` checks recipe params against
    them, and `__init__` validates values by raising UserError.
    """

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]] = ()  # dataset columns `score` receives, in this order

    def __init__(self, policy: Policy) -> None:
        self.known_categories = frozenset(policy.category_ids)
        self.__name__ = self.name

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        texts = completion_texts(completions, columns.get(ANSWER_START))
        values = [require_column(self.name, columns, column, len(texts)) for column in self.columns]
        score = self.score
        return [score(*row) for row in zip(texts, *values, strict=True)]

    def score(self, text: Any, *row: Any) -> float | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k not in ("known_categories", "__name__"))
        return f"{type(self).__name__}({params})"


class BoundReward:
    """A registered function with its recipe params (and policy) bound, reading whole answers (ANSWER_START);
    picklable, unlike a closure or lambda."""

    def __init__(self, func: RewardFn, name: str, kwargs: dict[str, Any]) -> None:
        self.func, self.__name__, self.kwargs = func, name, kwargs

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]:
        return self.func(with_answer_start(completions, columns), **columns, **self.kwargs)

    def __repr__(self) -> str:
        return f"BoundReward({self.__name__}, {self.kwargs!r})"


def register(reward: Any) -> Any:
    """Register a reward function or `Reward` subclass under its name (`__name__` or `Reward.name`).

    Use as a decorator. Registering two rewards under one name is a programming error and raises ValueError.
    """
    name = reward.name if isinstance(reward, type) else reward.__name__
    if name in REGISTRY and REGISTRY[name] is not reward:
        raise ValueError(f"a reward named {name!r} is already registered ({REGISTRY[name]!r})")
    REGISTRY[name] = reward
    return reward


def build_rewards(
    names: Iterable[str], policy: Policy, params: Mapping[str, Mapping[str, Any]] | None = None
) -> list[RewardFn]:
    """Build the named rewards, in order, for `GRPOTrainer(reward_funcs=...)`.

    Args:
        names: registry names, e.g. ["format_partial", "verdict"].
        policy: the run's policy (category ids for the categories and format rewards).
        params: reward name → keyword arguments, e.g. {"verdict": {"missed_violation": -2.0}}.

    Raises:
        UserError: an unknown or repeated reward name, params for a reward not selected, an unknown param or a bad
            value; the message lists what is known.

    >>> from moderation.policy import load_policy
    >>> [r.__name__ for r in build_rewards(["verdict"], load_policy())]
    ['verdict']
    """
    names = list(names)
    params = dict(params or {})
    known = ", ".join(sorted(REGISTRY))
    for name in names:
        if name not in REGISTRY:
            raise UserError(f"unknown reward {name!r} (known rewards: {known})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"reward listed more than once: {', '.join(repeated)}")
    stray = sorted(set(params) - set(names))
    if stray:
        raise UserError(f"params given for rewards that are not selected: {', '.join(stray)} (selected: {names})")
    return [_build(name, policy, dict(params.get(name) or {})) for name in names]


def reward_params(name: str) -> dict[str, Any]:
    """The params a registered reward accepts, with their defaults (for help text and error messages)."""
    entry = REGISTRY[name]
    signature = inspect.signature(entry.__init__ if isinstance(entry, type) else entry)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.default is not inspect.Parameter.empty and p.name != "policy"
    }


def _build(name: str, policy: Policy, kwargs: dict[str, Any]) -> RewardFn:
    entry = REGISTRY[name]
    accepted = reward_params(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in accepted.items()) or "none"
        raise UserError(f"reward {name!r} has no param {', '.join(unknown)} (params: {listed})")
    if isinstance(entry, type):
        return entry(policy, **kwargs)
    if "policy" in inspect.signature(entry).parameters:
        kwargs["policy"] = policy
    return BoundReward(entry, name, kwargs)


def completion_text(completion: Any) -> Any:
    """The text of one completion: a string as is, or the last message's content of a conversational completion.

    Anything else is returned unchanged, and `parse` reads it as a parse failure (rewards never raise on it).
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
            return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        return content
    return completion


def completion_texts(completions: Sequence[Any], answer_start: Sequence[str] | None = None) -> list[Any]:
    """The completions' texts, each after its row's `answer_start` when the dataset has one (see ANSWER_START)."""
    texts = [completion_text(c) for c in completions]
    if not answer_start:
        return texts
    return [start + text if isinstance(text, str) else text for start, text in zip(answer_start, texts, strict=True)]


def with_answer_start(completions: Sequence[Any], columns: Mapping[str, Any]) -> Sequence[Any]:
    """What a plain reward function sees: the completions as given, or texts that begin with their forced start."""
    starts = columns.get(ANSWER_START)
    return completion_texts(completions, starts) if starts and any(starts) else completions


def require_column(reward: str, columns: Mapping[str, Any], column: str, length: int) -> list[Any]:
    """A dataset column as TRL passes it (one value per completion); a missing or short one is a UserError."""
    if column not in columns:
        raise UserError(f"reward {reward!r} needs the dataset column {column!r} (got: {', '.join(sorted(columns))})")
    values = columns[column]
    if len(values) != length:
        raise UserError(f"reward {reward!r}: column {column!r} has {len(values)} values for {length} completions")
    return list(values)


@lru_cache(maxsize=8192)  # one generation batch of completions; a bigger batch still works, parsing more often
def _cached_parse(text: str, known: frozenset[str] | None) -> Verdict:
    return parse(text, known)


def parsed(text: Any, known: frozenset[str] | None) -> Verdict:
    """`moderation.verdict.parse`, memoised: TRL calls every reward on the same completions, so each is parsed once."""
    return _cached_parse(text, known) if isinstance(text, str) else parse(text, known)


def required_columns(name: str) -> tuple[str, ...]:
    """The dataset columns a registered reward reads: a function's parameters without defaults after completions,
    except `policy` (bound by `build_rewards`)."""
    entry = REGISTRY[name]
    if isinstance(entry, type):
        return entry.columns
    return tuple(
        p.name
        for p in list(inspect.signature(entry).parameters.values())[1:]
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name != "policy"
    )
