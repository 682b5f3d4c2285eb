"""Where the project keeps things: repo-relative config folders and the user cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
POLICIES = CONFIGS / "policies"


def cache_dir() -> Path:
    """The project's cache (converted models, fetched pages): $GRPO_MODERATION_CACHE or ~/.cache/grpo-moderation."""
    if override := os.environ.get("GRPO_MODERATION_CACHE"):
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grpo-moderation"
