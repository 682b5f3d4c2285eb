"""Real product pages written elsewhere, with no network: the project descriptions of the installed Python packages.

Each installed distribution carries the page its authors wrote for PyPI (a summary and a long description: features,
install steps, badges, licences, links). None of them sells anything the marketplace policy forbids, so every row is
`allow`: a false-positive check on human-written pages whose shapes and wording our generator never produced. A
moderator that flags many of them has learned our allowed pages' look rather than the policy. The set depends on
the installed packages: each row's `generator` names the package and its version.

    python -m data_gen.package_pages --out data/external/package_pages.parquet
"""

from __future__ import annotations

import io
from importlib import metadata
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from data_gen.io import ensure_writable_dir
from moderation.config import parse_command_line
from moderation.errors import cli_main
from moderation.files import atomic_write_bytes
from moderation.ids import text_id
from moderation.verdict import ALLOW

MIN_CHARS = 300  # shorter descriptions are a one-line summary, not a page
MAX_CHARS = 2500  # about our listings' median length; the rest of a README is API reference, not a product page
OWN_DISTRIBUTION = "grpo-moderation"  # our README describes the policy's categories: not an ordinary page


def page_text(dist: metadata.Distribution) -> str | None:
    """The page a buyer would see, name and summary first, cut at MAX_CHARS; None when there is no real description."""
    meta = dist.metadata
    body = (meta.get_payload() or "").strip() if not meta.is_multipart() else ""
    body = body or (meta.get("Description") or "").strip()
    if len(body) < MIN_CHARS:
        return None
    return f"{meta['Name']} — {meta.get('Summary') or ''}\n\n{body}"[:MAX_CHARS]


def package_pages() -> pd.DataFrame:
    """One allowed row per installed distribution with a description, in name order, deduplicated by name."""
    rows, seen = [], set()
    for dist in sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if not name or name in seen or name == OWN_DISTRIBUTION:
            continue
        seen.add(name)
        text = page_text(dist)
        if text is not None:
            rows.append(
                {
                    "id": text_id(text),
                    "text": text,
                    "label": ALLOW,
                    "categories": [],
                    "source": "package_page",
                    "generator": f"{name}=={dist.version}",
                    "language": "en",
                }
            )
    return pd.DataFrame(rows)


class PackagePagesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("data/external/package_pages.parquet"), description="parquet file to write")


@cli_main
def main(argv: list[str] | None = None) -> None:
    prog, description = "python -m data_gen.package_pages", __doc__.split("\n\n")[0]
    _, args = parse_command_line(PackagePagesConfig, argv, prog=prog, description=description)
    frame = package_pages()
    ensure_writable_dir(args.out.parent)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"{len(frame)} package pages (all allowed) -> {args.out}")


if __name__ == "__main__":
    main()
