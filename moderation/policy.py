"""A moderation policy: categories with what they disallow, what nearby content stays allowed, and examples.

Policies are YAML files (see configs/policies/). Everything downstream (prompts, synthetic data, rewards, metrics,
serving) reads the category ids from the policy, so a new policy needs no code change.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moderation.errors import UserError
from moderation.paths import POLICIES


class Category(BaseModel):
    """One policy category. Examples are ours, written to teach the boundary, not copied from any site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="snake_case id used in verdicts")
    title: str = Field(min_length=1)
    description: str = Field(min_length=10, description="what this category disallows")
    allowed_nearby: str = Field(min_length=10, description="nearby content that stays allowed")
    disallowed_examples: list[str] = Field(min_length=3)
    allowed_examples: list[str] = Field(min_length=2, description="near misses that must be allowed")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    categories: list[Category] = Field(min_length=1)

    @field_validator("categories")
    @classmethod
    def _unique_ids(cls, categories: list[Category]) -> list[Category]:
        ids = [c.id for c in categories]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate category ids: {', '.join(duplicates)}")
        return categories

    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.categories)

    def category(self, category_id: str) -> Category:
        for category in self.categories:
            if category.id == category_id:
                return category
        raise UserError(f"policy {self.name!r} has no category {category_id!r} (known: {', '.join(self.category_ids)})")


def resolve_policy_path(name_or_path: str | Path) -> Path:
    """A policy is named by path, or by bare name for files in configs/policies ("marketplace")."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return POLICIES / f"{name_or_path}.yaml"


def load_policy(name_or_path: str | Path = "marketplace") -> Policy:
    """Load and validate a policy. Any problem raises UserError naming the file and the field."""
    path = resolve_policy_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in POLICIES.glob("*.yaml")))
        raise UserError(f"policy file not found: {path} (built-in policies: {known})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read policy {path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} invalid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a policy must be a YAML mapping with name, description and categories")
    try:
        return Policy.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        field = _field_path(first["loc"], raw)
        more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise UserError(f"{path}: {field}: {first['msg']}{more}") from None


def _field_path(loc: tuple, raw: dict) -> str:
    """Render a pydantic error location, naming categories by id where possible: categories[gambling].title."""
    parts: list[str] = []
    node: object = raw
    for key in loc:
        if isinstance(key, int):
            label = key
            if isinstance(node, list) and key < len(node) and isinstance(node[key], dict) and "id" in node[key]:
                label = node[key]["id"]
            if parts:
                parts[-1] += f"[{label}]"
            else:
                parts.append(f"[{label}]")
            node = node[key] if isinstance(node, list) and key < len(node) else None
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"
