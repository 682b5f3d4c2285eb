"""One config object per entry point: pydantic defaults < YAML file < CLI `key=value` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from moderation.errors import UserError

M = TypeVar("M", bound=BaseModel)


def parse_overrides(items: list[str]) -> dict[str, object]:
    """`["size=100", "categories=[spam, adult]"]` -> {"size": 100, "categories": ["spam", "adult"]} (YAML values)."""
    overrides: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expected key=value, got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            overrides[key.strip()] = value
    return overrides


def load_config(model: type[M], path: str | Path | None, overrides: list[str] | None = None) -> M:
    """Build `model` from an optional YAML file plus overrides; any problem is one UserError line."""
    raw: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise UserError(f"cannot read config {path}: {str(error).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"{path}: a config must be a YAML mapping of field: value")
        raw = dict(loaded or {})
    raw.update(parse_overrides(overrides or []))
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        source = f"{path}: " if path else ""
        raise UserError(f"{source}{where}: {first['msg']}") from None


def describe_fields(model: type[BaseModel]) -> str:
    """Help text listing every config field with its default and description."""
    lines = ["config fields (YAML keys, or key=value on the command line):"]
    for name, info in model.model_fields.items():
        default = info.default_factory() if info.default_factory else info.default
        lines.append(f"  {name} (default: {default!r}): {info.description or ''}")
    return "\n".join(lines)
