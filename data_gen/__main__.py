"""CLI: `python -m data_gen [build] [--config FILE] [key=value ...]`, `... import FILE ...`, `... scrape ...`."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from moderation.config import describe_fields, load_config
from moderation.errors import cli_main

COMMANDS = ("build", "import", "scrape")


def _build(argv: list[str]) -> None:
    from data_gen.build import BuildConfig, build

    parser = argparse.ArgumentParser(
        prog="python -m data_gen build",
        description="Build data/<name>/{train,dev,test}.parquet, manifest.json and DATA_CARD.md.",
        epilog="\n".join(["config fields (YAML keys or key=value; nested with dots):", *describe_fields(BuildConfig)]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file whose keys are config field names")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a config field")
    args = parser.parse_args(argv)
    config = load_config(BuildConfig, args.config, args.overrides)
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
    print(f"  cross-split near-duplicates: {manifest['dedup']['cross_split_near_duplicates']}")


@cli_main
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "build"
    if command == "build":
        _build(argv)
    elif command == "import":
        from data_gen.importer import main as import_main

        import_main(argv)
    else:
        from data_gen.scrape import main as scrape_main

        scrape_main(argv)


if __name__ == "__main__":
    main()
