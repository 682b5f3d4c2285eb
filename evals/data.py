"""Evaluation data: our parquet splits, and any JSONL/CSV/parquet with a text, a label and optional categories.

A file from outside the project evaluates with no code change. Its rows need `text` and `label` (allow/disallow,
safe/unsafe, or a bool/0/1 where true means disallowed) and may carry `categories` (a list or a comma-separated
string). Other taxonomies come in through a label map (YAML or JSON; keys are `LabelMap` fields), e.g. the OpenAI
moderation samples (a `prompt` column and per-code 0/1 columns):

    text_column: prompt
    category_columns: {S: adult, S3: adult, H: harassment, H2: harassment, HR: harassment, V: other, V2: other,
                       SH: other}

Label-map keys (label values, category names, 0/1 column names) match case-insensitively. A row flagged only under
"other" (or any names outside the policy) is no violation of the policy being evaluated: the metrics leave it out and
report it apart. A bad row (no text, unknown label, undecodable bytes) is skipped and counted, unless
`strict`, where it is an error; a file with no usable row is always an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moderation.errors import UserError
from moderation.ids import text_id
from moderation.paths import REPO_ROOT
from moderation.splits import SPLITS
from moderation.verdict import ALLOW, DISALLOW, Decision, normalize_category

DATA_ROOT = REPO_ROOT / "data"
SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")

_LABELS: dict[str, Decision] = {
    "allow": ALLOW,
    "allowed": ALLOW,
    "safe": ALLOW,
    "ok": ALLOW,
    "false": ALLOW,
    "0": ALLOW,
    "disallow": DISALLOW,
    "disallowed": DISALLOW,
    "unsafe": DISALLOW,
    "flagged": DISALLOW,
    "true": DISALLOW,
    "1": DISALLOW,
}


class LabelMap(BaseModel):
    """How a foreign file's columns and values map onto ours."""

    model_config = ConfigDict(extra="forbid")

    text_column: str = Field("text", description="column holding the listing text")
    label_column: str = Field("label", description="column holding allow/disallow (ignored with category_columns)")
    id_column: str = Field("id", description="column holding a stable id; the row number when absent")
    labels: dict[str, Decision] = Field(default_factory=dict, description="extra label values, e.g. {spam: disallow}")
    categories: dict[str, str] = Field(default_factory=dict, description="their category name -> our id or 'other'")
    category_columns: dict[str, str] = Field(
        default_factory=dict, description="0/1 column -> our category id or 'other'; any 1 makes the row disallowed"
    )

    @field_validator("labels", "categories", "category_columns")
    @classmethod
    def _fold_case(cls, mapping: dict) -> dict:
        """Keys match case-insensitively: `Spam`, `spam` and `SPAM` are one key."""
        return {str(key).strip().lower(): value for key, value in mapping.items()}


@dataclass(frozen=True)
class Item:
    """One labelled listing. `categories` may hold names outside the policy (see `Dataset.out_of_policy`)."""

    id: str
    text: str
    label: Decision
    categories: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Dataset:
    path: Path
    items: list[Item]
    skipped: dict[str, int]  # reason -> count

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


def resolve_data(name_or_path: str | Path) -> Path:
    """A path, or a split name: `dev` -> data/default/dev.parquet, `mydata/test` -> data/mydata/test.parquet."""
    path = Path(name_or_path)
    if path.exists():
        return path
    text = str(name_or_path)
    if path.suffix == "" and path.name in SPLITS:
        dataset = path.parent.name if str(path.parent) not in ("", ".") else "default"
        candidate = DATA_ROOT / dataset / f"{path.name}.parquet"
        if candidate.exists():
            return candidate
        raise UserError(f"split {text!r} not found at {candidate} (run `make generate_data` first, or pass a file)")
    raise UserError(f"data file not found: {text}")


def train_split_for(data: Path, train: str | Path | None = None) -> Path:
    """The train split a baseline fits on: `train` when given, else train.parquet next to the evaluated file."""
    path = Path(train) if train else data.parent / "train.parquet"
    if not path.is_file():
        hint = "" if train else " (pass --train FILE for data from elsewhere)"
        raise UserError(f"baselines fit on a train split: {path} not found{hint}")
    return path


def load_label_map(path: str | Path | None) -> LabelMap:
    if path is None:
        return LabelMap()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))  # JSON is YAML
        return LabelMap.model_validate(raw or {})
    except FileNotFoundError:
        raise UserError(f"label map not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UserError(f"cannot read label map {path}: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]
        raise UserError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def load_dataset(
    name_or_path: str | Path, label_map: LabelMap | None = None, strict: bool = False, limit: int | None = None
) -> Dataset:
    """Read a split or file into `Item`s; bad rows are skipped and counted (or raise under `strict`)."""
    path = resolve_data(name_or_path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass a .parquet, .jsonl or .csv file or a split name")
    if path.suffix.lower() not in SUFFIXES:
        raise UserError(f"{path}: unsupported file type {path.suffix!r} (use {', '.join(SUFFIXES)})")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty")
    label_map = label_map or LabelMap()
    items: list[Item] = []
    skipped: dict[str, int] = {}
    seen: set[str] = set()
    for number, row in enumerate(_read_rows(path), start=1):
        try:
            item = _to_item(row, label_map)
            if item.id in seen:
                raise _BadRow(f"duplicate id {item.id!r}" if label_map.id_column in row else "duplicate text")
        except _BadRow as bad:
            if strict:
                raise UserError(f"{path}: row {number}: {bad} (drop --strict to skip bad rows)") from None
            reason = str(bad).split(" (")[0]
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        seen.add(item.id)
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        why = "; ".join(f"{n} × {reason}" for reason, n in skipped.items()) or "no rows"
        raise UserError(f"{path}: no usable rows ({why})")
    return Dataset(path, items, skipped)


class _BadRow(Exception):
    pass


def _read_rows(path: Path):
    """Yield raw rows as dicts; JSONL lines that are not UTF-8 or not JSON objects come out as _BadRow markers."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as error:
            raise UserError(f"{path}: not a readable parquet file ({error})") from None
        yield from table.to_pylist()
    elif suffix in (".jsonl", ".json"):
        with path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line.decode("utf-8"))
                except UnicodeDecodeError:
                    row = _BadRow("not UTF-8")
                except json.JSONDecodeError:
                    row = _BadRow("not a JSON line")
                yield row if isinstance(row, dict | _BadRow) else _BadRow("not a JSON object")
    else:
        import csv
        import io

        try:
            content = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise UserError(f"{path}: not UTF-8 (byte {error.start}); re-save it as UTF-8") from None
        yield from csv.DictReader(io.StringIO(content))


def _to_item(row: dict | _BadRow, label_map: LabelMap) -> Item:
    if isinstance(row, _BadRow):
        raise row
    text = row.get(label_map.text_column)
    if not isinstance(text, str) or not text.strip():
        raise _BadRow(f"no text (column {label_map.text_column!r})")
    if label_map.category_columns:
        columns = {str(name).strip().lower(): value for name, value in row.items()}
        categories = tuple(
            dict.fromkeys(ours for column, ours in label_map.category_columns.items() if _truthy(columns.get(column)))
        )
        label: Decision = DISALLOW if categories else ALLOW
    else:
        label = _label(row.get(label_map.label_column), label_map)
        categories = tuple(dict.fromkeys(_map_category(c, label_map) for c in _category_list(row.get("categories"))))
    if label == ALLOW and categories:
        raise _BadRow("allowed row with categories")
    raw_id = row.get(label_map.id_column)
    # Without an id column the text's hash is the id: stable when rows are added or reordered, so resuming never
    # pairs a saved completion with another listing.
    item_id = str(raw_id) if raw_id not in (None, "") else text_id(text)
    meta = {key: row[key] for key in ("source", "generator", "split") if isinstance(row.get(key), str)}
    return Item(item_id, text, label, categories, meta)


def _label(value: object, label_map: LabelMap) -> Decision:
    if isinstance(value, bool):
        return DISALLOW if value else ALLOW
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)) and value in (0, 1):
        return DISALLOW if value else ALLOW
    key = str(value).strip().lower() if value is not None else ""
    if key in label_map.labels:
        return label_map.labels[key]
    if key in _LABELS:
        return _LABELS[key]
    raise _BadRow(f"label outside the mapping ({str(value)[:40]!r})")


def _category_list(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise _BadRow("unreadable categories") from None
        else:
            return [part for part in value.replace(";", ",").split(",") if part.strip()]
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not all(isinstance(c, str) for c in value):
        raise _BadRow("unreadable categories")
    return list(value)


def _map_category(raw: str, label_map: LabelMap) -> str:
    ours = normalize_category(raw)
    return label_map.categories.get(raw.strip().lower(), label_map.categories.get(ours, ours))


def _truthy(value: object) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("1", "1.0", "true", "yes")
    return bool(value)
