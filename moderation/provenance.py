"""Provenance for manifests: the git commit the code ran from and the versions of the packages that shaped a result."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from importlib import metadata

from moderation.paths import REPO_ROOT


def git_commit() -> str | None:
    """HEAD of the project checkout, or None outside a git checkout (an installed wheel, no git binary)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution, None for one that is not installed."""
    found: dict[str, str | None] = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found
