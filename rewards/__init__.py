"""GRPO rewards for the moderation format, registered by name.

    >>> import rewards
    >>> from moderation.policy import load_policy
    >>> funcs = rewards.build_rewards(["format_partial", "verdict"], load_policy(), {"verdict": {"false_alarm": -0.2}})
    >>> funcs[1](["<reasoning>Sells bets.</reasoning><answer>DISALLOW: gambling</answer>"], label=["disallow"])
    [1.0]

Modules: `registry` (interface, REGISTRY, build_rewards), `formatting` (format_strict, format_soft, format_partial),
`answer` (verdict, categories), `reasoning` (reasoning_length), `grounding` (reasoning_grounded), `audit` (run every
reward over logged completions).
"""

from rewards import answer, formatting, grounding, reasoning  # noqa: F401  (importing registers the built-ins)
from rewards.registry import REGISTRY, BoundReward, Reward, build_rewards, completion_text, register, reward_params

DEFAULT_REWARDS: tuple[str, ...] = (
    "format_strict",
    "format_soft",
    "format_partial",
    "verdict",
    "categories",
    "reasoning_length",
)

__all__ = [
    "DEFAULT_REWARDS",
    "REGISTRY",
    "BoundReward",
    "Reward",
    "build_rewards",
    "completion_text",
    "register",
    "reward_params",
]
