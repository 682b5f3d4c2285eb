"""TRL configs from what the recipe sets plus its `trl:` passthrough, checked when the recipe loads.

The recipe names only the settings it chooses (training/recipe.py says why each differs from TRL's default); any other
GRPOConfig / SFTConfig option goes under `trl:` and reaches TRL unchanged:

    trl:
      grpo: {epsilon_high: 0.28, top_p: 0.95}   # GRPOConfig field names
      sft: {weight_decay: 0.01}                 # SFTConfig field names
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PydanticSchemaGenerationError, TypeAdapter, ValidationError

from moderation.errors import UserError


class TrlOptions(BaseModel):
    """GRPOConfig / SFTConfig options the recipe does not set itself, passed through as they are."""

    model_config = ConfigDict(extra="forbid")

    grpo: dict[str, Any] = Field(
        default_factory=dict, description="more GRPOConfig options by field name, e.g. {epsilon_high: 0.28}"
    )
    sft: dict[str, Any] = Field(
        default_factory=dict, description="more SFTConfig options by field name, e.g. {weight_decay: 0.01}"
    )


def build_config(config_class: type, section: str, ours: dict[str, Any], passthrough: dict[str, Any]):
    """`config_class(**ours, **passthrough)`, or one UserError line naming the option TRL would not take: unknown to
    this TRL, already set by the recipe, of the wrong type (typed from the config's annotations), or refused by the
    config's own checks."""
    import trl

    names = {field.name for field in dataclasses.fields(config_class) if field.init}
    hints = typing.get_type_hints(config_class)
    checked = {}
    for key, value in passthrough.items():
        where = f"trl.{section}.{key}"
        if key not in names:
            raise UserError(f"{where}: not a {config_class.__name__} option in TRL {trl.__version__}")
        if key in ours:
            raise UserError(f"{where}: the recipe sets {key} itself (training/recipe.py); change it there")
        checked[key] = _typed(where, hints[key], value)
    try:
        with warnings.catch_warnings():  # TRL's own field default trips transformers 5's rename notice; no one can act
            warnings.filterwarnings("ignore", "`gradient_checkpointing` is deprecated", FutureWarning)
            return config_class(**ours, **checked)
    except (TypeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"trl.{section}: {config_class.__name__} refused the options: {first}") from None


def _typed(where: str, hint, value):
    try:
        adapter = TypeAdapter(hint)
    except PydanticSchemaGenerationError:  # a type pydantic cannot describe: TRL's own checks still run
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        raise UserError(f"{where}: {error.errors()[0]['msg']} (got {value!r})") from None
