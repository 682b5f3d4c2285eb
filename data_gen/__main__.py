"""CLI: `python -m data_gen [build] [--config FILE] [key=value | --key value ...]`, `... import FILE ...`,
`... scrape ...`, `... more-eval [dataset=data/default] ...`."""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import BaseModel
from rich.console import Console

from moderation.config import parse_command_line
from moderation.errors import cli_main

COMMANDS = ("build", "import", "scrape", "more-eval")
M = TypeVar("M", bound=BaseModel)


def _config(model: type[M], command: str, description: str, argv: list[str]) -> M:
    """`[--config FILE] [key=value ...]` → one validated config object; --help lists every field."""
    return parse_command_line(model, argv, prog=f"python -m data_gen {command}", description=description)[1]


def _build(argv: list[str]) -> None:
    from data_gen.build import BuildConfig, build

    description = "Build data/<name>/{train,dev,test}.parquet, manifest.json and DATA_CARD.md."
    config = _config(BuildConfig, "build", description, argv)
    console = Console(stderr=True)
    manifest = build(config, console)
    print(f"wrote {config.out_dir}/{config.name}/ in {manifest['timings_s']['total']:.1f}s")
    for split, c in manifest["counts"].items():
        labels = c["label"]
        print(f"  {split:5s} {c['rows']:5d} rows  allow={labels.get('allow', 0)} disallow={labels.get('disallow', 0)}")
    s = manifest["style_baseline"]
    if "style_only" in s:
        print(
            f"  style-only baseline accuracy {s['style_only']['accuracy']:.3f} "
            f"(+function words {s['style_and_function_words']['accuracy']:.3f}, majority "
            f"{s['majority_class']['accuracy']:.3f}, content tf-idf {s['content_tfidf']['accuracy']:.3f})"
        )
        print(
            f"  page-shape-only {s['page_shape_only']['accuracy']:.3f}, "
            f"masked words {s['masked_words']['accuracy']:.3f}, "
            f"language-only {s['language_only']['accuracy']:.3f} (test accuracy; goal ≤ 0.60)"
        )
    for label, p in manifest["length_chars"].items():
        mix = manifest["language_mix"][label]
        print(
            f"  {label:8s} chars p10={p['p10']} median={p['p50']} p90={p['p90']} max={p['max']}; "
            f"not English {1 - mix.get('en', 0):.1%}"
        )
    print(f"  cross-split near-duplicates: {manifest['dedup']['cross_split_near_duplicates']}")
    reuse = manifest["dedup"]["held_out_rows_reusing_train_template"]
    print(f"  dev/test rows reusing a train title/pitch template: dev={reuse['dev']} test={reuse['test']}")


def _more_eval(argv: list[str]) -> None:
    from data_gen.more_eval import MoreEvalConfig, more_eval

    description = (
        "More rows in a dataset's held-out wording, to confirm a result on more than dev and test: the dataset rebuilt "
        "with its seed at `scale` times its counts; the rebuild's dev/test rows not already in it, sampled per label."
    )
    config = _config(MoreEvalConfig, "more-eval", description, argv)
    summary = more_eval(config, Console(stderr=True))
    print(
        f"wrote {summary['path']}: {summary['rows']} held-out rows {summary['labels']} not in {config.dataset}"
        f"{' nor in ' + ', '.join(map(str, config.exclude)) if config.exclude else ''} "
        f"({summary['dropped_near_train']} dropped as near-duplicates of a train row)"
    )
    print(
        f"  nearest {config.dataset}/train row, word-3-gram Jaccard: median {summary['nearest_train_median']:.3f} "
        f"(its dev+test: {summary['dev_test_nearest_train_median']:.3f})"
    )


def _scrape(argv: list[str]) -> None:
    from data_gen.scrape import Crawler, ScrapeConfig

    description = "Scrape allowed listings (robots.txt, rate limit, retries, cache, resumable) into JSONL."
    config = _config(ScrapeConfig, "scrape", description, argv)
    stats = Crawler(config).crawl()
    print(
        f"wrote {stats.written} new listings to {config.out} ({stats.already_done} URLs already there); "
        f"fetched {stats.fetched}, cached {stats.from_cache}, robots-disallowed {stats.robots_disallowed}, "
        f"failed {stats.failed}, missing fields {stats.missing_fields}"
    )
    for error in stats.errors[:10]:
        print(f"  {error}")


@cli_main
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "build"
    if command == "build":
        _build(argv)
    elif command == "import":
        from data_gen.importer import main as import_main

        import_main(argv)
    elif command == "more-eval":
        _more_eval(argv)
    else:
        _scrape(argv)


if __name__ == "__main__":
    main()
