"""Command-line flags from a pydantic config: one `--flag` per field, shared by `serve` and `serve predict`."""

from __future__ import annotations

import argparse
from typing import get_args


def config_parser(prog: str, model: type, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one `--flag` per field of a pydantic config, help text and defaults from the model.

    A `%` in a description is escaped (argparse reads `%` in help as a format directive)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for name, info in model.model_fields.items():
        flag = "--" + (info.alias or name).replace("_", "-")
        help_text = (info.description or "").replace("%", "%%")
        if info.annotation is bool:
            parser.add_argument(flag, dest=name, action="store_true", help=help_text)
            continue
        choices = _literal_choices(info.annotation)
        kind = next((t for t in (info.annotation, *get_args(info.annotation)) if t in (int, float)), str)
        many = "+" if str(info.annotation).startswith("list[") else None
        parser.add_argument(
            flag, dest=name, type=kind, choices=choices, nargs=many, default=info.default, help=help_text
        )
    return parser


def _literal_choices(annotation) -> tuple | None:
    """The values of a Literal field, also inside `list[...]` or `... | None`."""
    for part in (annotation, *get_args(annotation)):
        for inner in (part, *get_args(part)):
            if "Literal" in str(inner) and get_args(inner) and all(isinstance(a, str) for a in get_args(inner)):
                return get_args(inner)
    return None
