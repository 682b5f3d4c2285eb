"""More rows in a dataset's held-out wording: a larger set than dev and test to confirm a result on, never trained on.

Which phrases are held out for dev and test is chosen by the build seed (data_gen.templates.pick), so a build with
another seed is mostly the first one's train wording: seed 7's dev and test rows sit nearer the default train split
(median nearest-row word-3-gram Jaccard 0.12) than the default dev and test do (0.03), and measure how a model handles
new combinations of phrases it trained on, as the held-back slice does. Rebuilding with the same seed and larger counts
keeps the phrase split and draws more rows; its dev and test rows that the dataset does not already hold are new rows
in the held-out wording. The command prints their nearness to train beside dev and test's, so the claim is checked
every time, not assumed. `exclude` names earlier sets whose rows are not drawn again: a set that has informed a choice
is no longer a fresh test of it, and a larger rebuild gives a second one that shares no row with the first.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from moderation.errors import UserError
from moderation.paths import PlainName
from moderation.splits import SPLITS

SCALED = ("seed_listings", "disallowed_per_category", "multi_label", "hard_negatives_per_category")
EVAL_FILE = "more_eval.parquet"


class MoreEvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: Path = Field(Path("data/default"), description="a dataset written by `data_gen build` (its manifest.json)")
    scale: int = Field(3, ge=2, le=20, description="the rebuild's row counts are the dataset's times this")
    per_label: int | None = Field(500, ge=1, description="rows sampled per label (none: every new held-out row)")
    name: PlainName | None = Field(None, description="the rebuild's folder beside the dataset (default <dataset>-more)")
    seed: int = Field(0, description="seed of the per-label sample")
    exclude: list[Path] = Field(
        default_factory=list, description="earlier more-eval sets (parquet) whose rows are not drawn again"
    )


def more_eval(config: MoreEvalConfig, console=None) -> dict:
    """Rebuild the dataset at `scale` times its counts into <parent>/<name>/, keep the rebuild's dev and test rows
    not already in the dataset (nor in an `exclude` set), sample `per_label` of each label, write
    <parent>/<name>/more_eval.parquet; return a summary."""
    import pandas as pd

    from data_gen.build import BuildConfig, build
    from data_gen.dedup import nearest_similarity

    manifest_path = config.dataset / "manifest.json"
    try:
        built = json.loads(manifest_path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{manifest_path}: not a dataset written by `python -m data_gen build`") from None
    excluded = set().union(*map(_texts, config.exclude))  # read first: a bad path fails before the rebuild
    name = config.name or f"{config.dataset.name}-more"
    if name == config.dataset.name:
        raise UserError(f"name={name}: the rebuild would overwrite the dataset it extends; choose another name")
    scaled = {field: built[field] * config.scale for field in SCALED}
    rebuild = BuildConfig(**{**built, **scaled, "name": name, "out_dir": str(config.dataset.parent)})
    build(rebuild, console)

    base = {split: pd.read_parquet(config.dataset / f"{split}.parquet") for split in SPLITS}
    known = set().union(*(set(frame.text) for frame in base.values()), excluded)
    folder = config.dataset.parent / name
    held_out = pd.concat([pd.read_parquet(folder / f"{split}.parquet") for split in ("dev", "test")], ignore_index=True)
    new = held_out[~held_out.text.isin(known)].drop_duplicates("text")
    train = base["train"].text.tolist()
    near = pd.Series(nearest_similarity(new.text.tolist(), train), index=new.index)
    leaking = near >= built["leakage_threshold"]  # as close to a train row as build lets no dev/test row be
    new = new[~leaking]
    if config.per_label is not None:
        short = {label: n for label, n in new.label.value_counts().items() if n < config.per_label}
        if short or new.label.nunique() < 2:
            raise UserError(f"too few new held-out rows for per_label={config.per_label} ({short}): raise scale")
        new = pd.concat(group.sample(config.per_label, random_state=config.seed) for _, group in new.groupby("label"))
    if new.empty:
        raise UserError(f"the rebuild at scale {config.scale} added no held-out rows: raise scale")
    out = folder / EVAL_FILE
    new.to_parquet(out, index=False)

    dev_test = pd.concat([base["dev"], base["test"]]).text.tolist()
    return {
        "path": out,
        "rows": len(new),
        "labels": new.label.value_counts().to_dict(),
        "dropped_near_train": int(leaking.sum()),
        "nearest_train_median": statistics.median(near[new.index]),
        "dev_test_nearest_train_median": statistics.median(nearest_similarity(dev_test, train)),
    }


def _texts(path: Path) -> set[str]:
    """The listing texts of an earlier set, refused in one line when it is not a readable table with a text column."""
    import pandas as pd

    try:
        return set(pd.read_parquet(path, columns=["text"]).text)
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"exclude: {path} is not a more-eval set with a text column ({type(error).__name__})") from None
