"""One config object per entry point: pydantic defaults < YAML file < `key=value` CLI overrides.

YAML keys are the model's field names; nested fields are overridden with dots (`lora.r=8`). Values are read as YAML
scalars, so `max_steps=4`, `resume=true` and `reward_funcs=[verdict,format_soft]` get their natural types.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from moderation.errors import UserError

C = TypeVar("C", bound=BaseModel)


def parse_overrides(pairs: list[str]) -> dict:
    """['a=1', 'lora.r=8'] -> {'a': 1, 'lora': {'r': 8}}."""
    result: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override {pair!r} is not key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = result
        *parents, leaf = key.strip().split(".")
        for depth, parent in enumerate(parents, start=1):
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise UserError(f"override {pair!r}: {'.'.join(parents[:depth])} was already set to a plain value")
        node[leaf] = value
    return result


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_dicts else value
    return merged


def read_config_file(path: str | Path) -> dict:
    """The YAML mapping in `path` ({} for an empty file); a missing, unreadable or non-mapping file is one UserError."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"cannot read config {path}: {str(error).splitlines()[0]}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise UserError(f"{path}: a config must be a YAML mapping of field names to values")
    return loaded or {}


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Build `cls` from an optional YAML file plus overrides; any problem is one UserError line naming the field."""
    data = read_config_file(path) if path is not None else {}
    where = str(path) if path is not None else "command line"
    return validate_config(cls, _merge(data, parse_overrides(overrides or [])), where)


def validate_config(cls: type[C], data: dict, where: str = "command line") -> C:
    """`cls` from plain values; the first problem becomes one UserError line naming `where` and the field."""
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{where}: {field + ': ' if field else ''}{message}") from None


def describe_fields(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """One help line per field (nested models flattened with dots), for `--help`."""
    lines = []
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines += describe_fields(annotation, f"{prefix}{name}.")
            continue
        default = field.default if field.default_factory is None else field.default_factory()
        lines.append(f"  {prefix}{name} = {default!r}\n      {field.description or ''}")
    return lines
