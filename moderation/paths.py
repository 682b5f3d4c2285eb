"""Where the project keeps things (config folders, the user cache), and which names and folders it may touch."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from moderation.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
POLICIES = CONFIGS / "policies"


def cache_dir() -> Path:
    """The project's cache (converted models, fetched pages): $GRPO_MODERATION_CACHE or ~/.cache/grpo-moderation."""
    if override := os.environ.get("GRPO_MODERATION_CACHE"):
        return Path(override)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grpo-moderation"


def plain_name(name: str) -> str:
    """A name that can only ever be one folder: no separators, no `.`/`..`, no leading dot or dash, no NUL.

    Run and dataset names become `<root>/<name>`, and a run folder may be deleted on `overwrite=true`, so a name like
    `..` would point that at the checkout.
    """
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", name) or set(name) <= {"."}:
        raise ValueError(
            f"{name!r} is not a plain name: use letters, digits, '_', '-' and '.', starting with a letter, digit or '_'"
        )
    return name


PlainName = Annotated[str, AfterValidator(plain_name)]


def inside(root: str | Path, path: str | Path) -> Path:
    """`path` resolved, after checking it lies strictly inside `root` (symlinks resolved): where we may delete."""
    resolved_root, resolved = Path(root).resolve(), Path(path).resolve()
    if resolved == resolved_root or resolved_root not in resolved.parents:
        raise UserError(f"refusing to touch {path}: it resolves to {resolved}, outside {resolved_root}")
    return resolved
