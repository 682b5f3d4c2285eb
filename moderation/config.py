"""The one config/CLI loader of every entry point: pydantic defaults < YAML file < command-line values.

YAML keys are the model's field names. On the command line every entry point takes the same syntax, in any mix:
`--field value`, `--field=value` or `field=value`; nested fields with dots (`--lora.r 8`, `lora.r=8`); dashes and
underscores alike (`--max-new-tokens`, `max_new_tokens=`). A bool field alone (`--resume`) is true;
`resume=false` or `--no-resume` turns it off. A list field takes several values (`--data dev test`), a YAML list
(`data=[dev, test]`), or repeats (`--map a=x --map b=y`).
Values are read as YAML scalars where the field's type accepts them (`max_steps=4`, `policy=null`) and as text where
it does not (`name=2024` for a text field). `--help` lists every field with its type, default and description, from
the model. Any problem is one UserError line naming the field.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from moderation.errors import UserError

C = TypeVar("C", bound=BaseModel)
O = TypeVar("O", bound=BaseModel)  # noqa: E741
KEY_VALUE = re.compile(r"([A-Za-z_][\w-]*(?:\.[\w-]+)*)=(.*)", re.DOTALL)
TRUTH = ("true", "false")


class ConfigFile(BaseModel):
    """The options every entry point takes besides its config's fields."""

    config: Path | None = Field(None, description="YAML file of config fields; command-line values override it")


def parse_command_line(
    cls: type[C],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    options: type[O] = ConfigFile,
    positional: str | None = None,
) -> tuple[O, C]:
    """(options, config) from argv: `--help` prints every field and exits 0; `options` must have a `config` field.
    Bare arguments (`compare DIR DIR`, `export ct2 MODEL`) fill the field named `positional`."""
    chosen, rest = split_options(options, argv, prog=prog, description=description, config=cls, positional=positional)
    return chosen, load_config(cls, chosen.config, rest, positional)


def pick_command(
    argv: Sequence[str], commands: Mapping[str, str], *, prog: str, description: str, default: str | None = None
) -> tuple[str, list[str]]:
    """(subcommand, its arguments): the first argument if it names one of `commands` (name -> one-line help), else
    `default`; without a default, `--help` or no command lists the commands."""
    argv = list(argv)
    if argv and argv[0] in commands:
        return argv[0], argv[1:]
    if default is not None:
        return default, argv
    listing = "\n".join(f"  {name:12s} {text}" for name, text in commands.items())
    usage = f"usage: {prog} {{{','.join(commands)}}} [--help] ...\n\n{description}\n\ncommands:\n{listing}"
    if argv[:1] in (["-h"], ["--help"]):
        _print_help(usage)
    given = f"unknown command {argv[0]!r}" if argv else "no command"
    raise UserError(f"{given}: choose one of {', '.join(commands)} (see {prog} --help)")


def split_options(
    options: type[O],
    argv: Sequence[str] | None,
    *,
    prog: str,
    description: str,
    config: type[BaseModel],
    positional: str | None = None,
) -> tuple[O, list[str]]:
    """Take the fields of `options` (the config file, switches such as --dry-run) out of argv; the rest is `config`
    values, still in command-line form (for a loader that validates more, such as training's load_recipe).
    `argv` None means the process's own arguments."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        _print_help(help_text(config, prog=prog, description=description, options=options, positional=positional))
    argv = [_negated(options, token) for token in argv]
    taken: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        name = _option_name(argv[i])
        if name is None or not _has_field(options, name):
            rest.append(argv[i])
            i += 1
            continue
        end = _value_end(options, argv, i)
        taken += argv[i:end]
        i = end
    return validate_config(options, parse_overrides(options, taken)), rest


def _print_help(text: str) -> None:
    """Print and exit 0, also when the reader stops early (`--help | head`)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
    raise SystemExit(0)


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (), positional: str | None = None
) -> C:
    """Build `cls` from an optional YAML file plus command-line values; any problem is one UserError line."""
    data = read_config_file(path) if path is not None else {}
    given = parse_overrides(cls, overrides, positional)

    def where(loc: tuple) -> str:  # the source of the failing value: the command line, else the file
        node = given
        for key in loc:
            if not isinstance(node, dict) or key not in node:
                return str(path) if path is not None and loc else "command line"
            node = node[key]
        return "command line"

    return validate_config(cls, _merge(data, given), where)


def parse_overrides(cls: type[BaseModel], tokens: Sequence[str], positional: str | None = None) -> dict:
    """Command-line values as the nested dict the model validates: ['--a.b', '3', 'c=x'] -> {'a': {'b': 3}, 'c': 'x'}.
    Bare values go to the field named `positional`, if any."""
    tokens = [_negated(cls, token) for token in tokens]
    result: dict = {}
    bare: list[str] = []
    lists: dict[tuple[str, ...], list] = {}
    i = 0
    while i < len(tokens):
        name = _option_name(tokens[i])
        if name is None and positional is not None:
            bare.append(tokens[i])
            i += 1
            continue
        if name is None:
            raise UserError(f"unexpected argument {tokens[i]!r}: give values as --field VALUE or field=VALUE")
        end = _value_end(cls, tokens, i)
        keys, annotation = _resolve(cls, name)
        value = _value(annotation, _raw_values(tokens[i:end]), name)
        if _is_list(annotation):  # a list option given twice collects both (`--map a=x --map b=y`)
            lists[keys] = value = [*lists.get(keys, []), *value]
        _set(result, keys, value)
        i = end
    if bare:
        keys, annotation = _resolve(cls, positional)
        _set(result, keys, _value(annotation, bare, positional))
    return result


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


def validate_config(cls: type[C], data: dict, where: str | Callable[[tuple], str] = "command line") -> C:
    """`cls` from plain values; the first problem becomes one UserError line naming where it came from (`where`, or
    `where(field location)`) and the field."""
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        source = where(first["loc"]) if callable(where) else where
        raise UserError(f"{source}: {field + ': ' if field else ''}{message}") from None


def help_text(
    cls: type[BaseModel],
    *,
    prog: str,
    description: str,
    options: type[BaseModel] = ConfigFile,
    positional: str | None = None,
) -> str:
    """`--help`: usage, description, then every option and config field (type, default, description)."""
    bare = ""
    if positional is not None:
        bare = f" {positional.upper()}" + (" ..." if _is_list(cls.model_fields[positional].annotation) else "")
    return "\n".join(
        [
            f"usage: {prog} [options]{bare} [--field VALUE | field=VALUE ...]",
            "",
            description,
            "",
            "options:",
            "  -h, --help\n      show this help and exit",
            *describe_fields(options),
            "",
            f"{cls.__name__} fields (YAML keys), set as --field VALUE, --field=VALUE or field=VALUE;",
            "nested with dots (--a.b VALUE); dashes for underscores work too (--max-new-tokens); a bool field alone",
            "(--flag) is true, --no-flag or flag=false turns it off:",
            *describe_fields(cls),
        ]
    )


def describe_fields(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """One help entry per field (nested models flattened with dots): flag, type, default, description."""
    lines = []
    for name, field in cls.model_fields.items():
        key = field.alias or name
        nested = _model_of(field.annotation)
        if nested is not None and field.default is not None:
            lines += describe_fields(nested, f"{prefix}{key}.")
            continue
        flag = "--" + prefix + key
        kind = "" if _is_bool(field.annotation) else " " + _type_name(field.annotation)
        if field.is_required():
            default = " (required)"
        else:
            value = field.default if field.default_factory is None else field.default_factory()
            default = f" = {_shown(value)}"
        lines.append(f"  {flag}{kind}{default}\n      {field.description or ''}".rstrip())
    return lines


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        return repr(value.model_dump())
    return str(value) if isinstance(value, Path) else repr(value)


def _option_name(token: str) -> str | None:
    """The field name a token sets (`--a.b`, `--a.b=3`, `a.b=3`), or None for a bare value."""
    if token.startswith("--") and len(token) > 2:
        return token[2:].partition("=")[0]
    match = KEY_VALUE.fullmatch(token)
    return match.group(1) if match else None


def _negated(cls: type[BaseModel], token: str) -> str:
    """`--no-cache` -> `--cache=false` when `cache` is a bool field of `cls`; any other token unchanged."""
    if not token.startswith("--no-") or "=" in token:
        return token
    try:
        _, annotation = _resolve(cls, token[5:])
    except UserError:
        return token
    return f"--{token[5:]}=false" if _is_bool(annotation) else token


def _value_end(cls: type[BaseModel], tokens: Sequence[str], i: int) -> int:
    """Index after the values of the option at `tokens[i]`: `--flag` takes none (or true/false), `--list` several."""
    token = tokens[i]
    if not token.startswith("--") or "=" in token:
        return i + 1
    _, annotation = _resolve(cls, token[2:])
    end = i + 1
    if _is_bool(annotation):
        return end + (end < len(tokens) and tokens[end].lower() in TRUTH)
    while end < len(tokens) and (
        (end == i + 1 and not tokens[end].startswith("--"))  # one value may hold "=" (`--model a=b`)
        or (end > i + 1 and _is_list(annotation) and _option_name(tokens[end]) is None)
    ):
        end += 1
    if end == i + 1:
        raise UserError(f"{token} needs a value")
    return end


def _raw_values(tokens: Sequence[str]) -> list[str]:
    """The text values an option's tokens give: `--x a b` -> ['a', 'b'], `--flag` -> ['true'], `x=a` -> ['a']."""
    first = tokens[0]
    if first.startswith("--"):
        _, sep, raw = first[2:].partition("=")
        return [raw] if sep else list(tokens[1:]) or ["true"]
    return [first.partition("=")[2]]


def _value(annotation: Any, raws: list[str], name: str) -> Any:
    """The typed value of text values for a field of type `annotation`."""
    if _is_list(annotation):
        if raws == [""]:
            return []
        if len(raws) == 1 and isinstance(whole := _typed(annotation, raws[0]), list):
            return whole
        item = next(iter(get_args(_without_none(annotation))), Any)
        return [_typed(item, raw) for raw in raws]
    if len(raws) > 1:
        raise UserError(f"--{name} takes one value, got {len(raws)}: {' '.join(raws)}")
    return _typed(annotation, raws[0])


def _typed(annotation: Any, raw: str) -> Any:
    """`raw` read as YAML when the field's type accepts that value, else as text (`2024` for a str field)."""
    try:
        loaded = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw
    if annotation is Any or loaded == raw or _accepts(annotation, loaded) or not _accepts(annotation, raw):
        return loaded
    return raw


def _accepts(annotation: Any, value: Any) -> bool:
    try:
        _adapter(annotation).validate_python(value)
    except (ValidationError, TypeError):
        return False
    return True


@lru_cache(maxsize=256)
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


def _resolve(cls: type[BaseModel], name: str) -> tuple[tuple[str, ...], Any]:
    """(validation keys, annotation) of a dotted field name; below a mapping field, keys are free and untyped."""
    parts = name.split(".")
    keys: list[str] = []
    annotation: Any = cls
    for depth, part in enumerate(parts):
        model = _model_of(annotation)
        if model is None:
            if _is_mapping(annotation):
                return (*keys, *parts[depth:]), Any
            raise UserError(f"{'.'.join(parts[:depth])} is not a nested config: cannot set {name}")
        field = _field(model, part)
        if field is None:
            where = f" in {'.'.join(parts[:depth])}" if depth else ""
            raise UserError(f"unknown field {name!r}{where} (see --help)")
        keys.append(field[0])
        annotation = field[1]
    return tuple(keys), annotation


def _has_field(cls: type[BaseModel], name: str) -> bool:
    return "." not in name and _field(cls, name) is not None


def _field(model: type[BaseModel], name: str) -> tuple[str, Any] | None:
    """(validation key, annotation) of the field spelled `name` (dashes or underscores, name or alias)."""
    wanted = name.replace("-", "_")
    for field_name, info in model.model_fields.items():
        if wanted in (field_name, (info.alias or "").replace("-", "_")):
            return info.alias or field_name, info.annotation
    return None


def _set(result: dict, keys: tuple[str, ...], value: Any) -> None:
    node = result
    for depth, key in enumerate(keys[:-1], start=1):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UserError(f"{'.'.join(keys)}: {'.'.join(keys[:depth])} was already set to a plain value")
    node[keys[-1]] = value


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_dicts else value
    return merged


def _without_none(annotation: Any) -> Any:
    """`X | None` and `Annotated[X, ...]` -> X (the type a command-line value is read as); anything else unchanged."""
    if get_origin(annotation) is Annotated:
        return _without_none(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        arms = [arm for arm in get_args(annotation) if arm is not type(None)]
        if len(arms) == 1:
            return _without_none(arms[0])
    return annotation


def _model_of(annotation: Any) -> type[BaseModel] | None:
    inner = _without_none(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _is_bool(annotation: Any) -> bool:
    return _without_none(annotation) is bool


def _is_list(annotation: Any) -> bool:
    inner = _without_none(annotation)
    return inner in (list, tuple, set) or get_origin(inner) in (list, tuple, set, frozenset, Sequence)


def _is_mapping(annotation: Any) -> bool:
    inner = _without_none(annotation)
    return inner in (dict, Any) or get_origin(inner) in (dict, Mapping)


def _type_name(annotation: Any) -> str:
    """A short type for help: INT, PATH, {a,b}, TEXT ..., from the annotation (never from its string form)."""
    inner = _without_none(annotation)
    origin = get_origin(inner)
    if origin is Literal:
        return "{" + ",".join(str(choice) for choice in get_args(inner)) + "}"
    if _is_list(inner):
        return f"{_type_name(next(iter(get_args(inner)), str))} ..."
    if _is_mapping(inner):
        return "MAPPING"
    if origin in (Union, types.UnionType):
        return "|".join(_type_name(arm) for arm in get_args(inner))
    names = {int: "INT", float: "FLOAT", str: "TEXT", Path: "PATH", bool: "BOOL"}
    return names.get(inner, getattr(inner, "__name__", str(inner)).upper())
