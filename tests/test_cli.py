"""The one config/CLI loader: every spelling gives the same config, types come from the model, errors are one line."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from moderation.config import help_text, load_config, parse_command_line, pick_command, split_options
from moderation.errors import UserError

REPO = Path(__file__).resolve().parents[1]


class Lora(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="adapter rank, the nested field's own words")
    dropout: float = 0.0


class Demo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "run"
    steps: int = Field(10, ge=1, description="optimizer steps")
    resume: bool = False
    modes: list[Literal["reasoning", "fast"]] = ["reasoning"]
    data: list[str] = []
    policy: str | None = "marketplace"
    mode: Literal["reasoning", "fast"] = "reasoning"
    lora: Lora = Lora()
    params: dict = {}


class Positional(BaseModel):
    dirs: list[Path] = Field(min_length=1)
    out: Path


def load(*tokens: str) -> Demo:
    return load_config(Demo, None, list(tokens))


class TestSpellings:
    @pytest.mark.parametrize(
        "tokens",
        [
            ["--lora.r", "3"],
            ["--lora.r=3"],
            ["lora.r=3"],
            ["--lora.r", "3", "--lora.r", "3"],
            ["lora.r=4", "--lora.r=3"],
        ],
    )
    def test_nested_value_every_spelling(self, tokens):
        assert load(*tokens).lora.r == 3

    @pytest.mark.parametrize("tokens", [["--steps", "4"], ["--steps=4"], ["steps=4"], ["--STEPS".lower(), "4"]])
    def test_flat_value_every_spelling(self, tokens):
        assert load(*tokens) == Demo(steps=4)

    def test_dashes_and_underscores_name_the_same_field(self):
        class Wide(BaseModel):
            max_new_tokens: int = 1

        assert load_config(Wide, None, ["--max-new-tokens", "5"]) == load_config(Wide, None, ["max_new_tokens=5"])

    def test_yaml_then_command_line(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_text("steps: 5\nlora:\n  r: 4\n  dropout: 0.1\nname: from-file\n")
        config = load_config(Demo, path, ["--lora.r", "8", "name=cli"])
        assert (config.steps, config.lora.r, config.lora.dropout, config.name) == (5, 8, 0.1, "cli")

    def test_config_file_option(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_text("steps: 5\n")
        options, config = parse_command_line(Demo, ["--config", str(path), "--steps", "6"], prog="p", description="")
        assert options.config == path and config.steps == 6
        _, config = parse_command_line(Demo, [f"--config={path}"], prog="p", description="")
        assert config.steps == 5


class TestTypes:
    @pytest.mark.parametrize(
        ("tokens", "expected"),
        [
            (["--resume"], True),
            (["--resume", "--steps", "2"], True),
            (["--resume", "false"], False),
            (["--resume=false"], False),
            (["resume=false"], False),
            (["resume=true"], True),
            (["--no-resume"], False),
            (["--resume", "--no-resume"], False),
            ([], False),
        ],
    )
    def test_bool_flag(self, tokens, expected):
        assert load(*tokens).resume is expected

    @pytest.mark.parametrize(
        "tokens",
        [["--data", "dev", "test"], ["data=[dev, test]"], ["--data=[dev, test]"], ["--data", "dev", "test", "steps=3"]],
    )
    def test_list_field(self, tokens):
        assert load(*tokens).data == ["dev", "test"]

    def test_a_repeated_list_option_collects_every_value(self):
        assert load("--data", "a=x", "--steps", "2", "--data", "b=y").data == ["a=x", "b=y"]

    def test_one_list_value_and_empty_list(self):
        assert load("--data", "dev").data == ["dev"] and load("data=").data == [] and load("data=[]").data == []

    def test_literal_list_and_choice(self):
        config = load("--modes", "reasoning", "fast", "--mode", "fast")
        assert config.modes == ["reasoning", "fast"] and config.mode == "fast"

    def test_text_field_keeps_text_that_yaml_would_retype(self):
        config = load("name=2024", "--policy", "null")
        assert config.name == "2024" and config.policy is None

    def test_one_value_may_hold_an_equals_sign(self):
        assert load("--name", "a=b", "--steps", "2").name == "a=b"

    def test_mapping_field_takes_free_dotted_keys(self):
        assert load("params.verdict.bonus=0.5").params == {"verdict": {"bonus": 0.5}}

    def test_positional_values_fill_the_named_field(self):
        _, config = parse_command_line(
            Positional, ["a", "--out", "o", "b"], prog="p", description="", positional="dirs"
        )
        assert config.dirs == [Path("a"), Path("b")] and config.out == Path("o")
        assert "usage: p [options] DIRS ... [--field" in help_text(
            Positional, prog="p", description="", positional="dirs"
        )
        with pytest.raises(UserError, match="--out takes one value, got 2"):
            parse_command_line(Positional, ["o", "p"], prog="p", description="", positional="out")


class TestErrors:
    @pytest.mark.parametrize(
        ("tokens", "message"),
        [
            (["--steps", "x"], "steps: Input should be a valid integer"),
            (["steps=0"], "steps: Input should be greater than or equal to 1"),
            (["--lora.r=0"], "lora.r: Input should be greater than or equal to 1"),
            (["--mode", "slow"], "mode: Input should be 'reasoning' or 'fast'"),
            (["--modes", "fast", "slow"], "modes.1: Input should be 'reasoning' or 'fast'"),
            (["--nope", "1"], "unknown field 'nope'"),
            (["nope=1"], "unknown field 'nope'"),
            (["--lora.nope=1"], "unknown field 'lora.nope' in lora"),
            (["--steps"], "--steps needs a value"),
            (["--steps", "1", "2"], "unexpected argument '2'"),
            (["stray"], "unexpected argument 'stray'"),
            (["--name.x=1"], "name is not a nested config"),
            (["lora=5", "lora.r=8"], "lora was already set to a plain value"),
        ],
    )
    def test_one_user_error_line_naming_the_field(self, tokens, message):
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
            load(*tokens)
        assert "\n" not in str(error.value)

    def test_error_names_where_the_bad_value_came_from(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_text("steps: 0\nlora:\n  r: 2\n")
        with pytest.raises(UserError, match="^" + re.escape(f"{path}: steps: Input should be greater")):
            load_config(Demo, path, ["--lora.r", "3"])
        with pytest.raises(UserError, match=r"^command line: lora\.r: Input should be greater"):
            load_config(Demo, path, ["steps=1", "--lora.r", "0"])


class TestHelp:
    def test_help_lists_every_field_with_type_default_and_description(self):
        text = help_text(Demo, prog="p", description="what it does")
        assert "--lora.r INT = 16\n      adapter rank, the nested field's own words" in text
        assert "--steps INT = 10\n      optimizer steps" in text
        assert "--modes {reasoning,fast} ... = ['reasoning']" in text and "--resume = False" in text
        assert "--config PATH" in text and "what it does" in text

    def test_help_exits_zero(self, capsys):
        with pytest.raises(SystemExit) as exit_info:
            split_options(Demo, ["--steps", "2", "--help"], prog="p", description="d", config=Demo)
        assert exit_info.value.code == 0 and "--lora.dropout FLOAT = 0.0" in capsys.readouterr().out

    def test_options_are_taken_out_and_the_rest_left_as_typed(self):
        class Options(BaseModel):
            recipe: Path | None = None
            dry_run: bool = False

        options, rest = split_options(
            Options,
            ["--recipe", "r.yaml", "steps=3", "--dry-run", "--lora.r", "2"],
            prog="p",
            description="",
            config=Demo,
        )
        assert options == Options(recipe=Path("r.yaml"), dry_run=True) and rest == ["steps=3", "--lora.r", "2"]

    def test_subcommands(self, capsys):
        commands = {"run": "one", "suite": "many"}
        assert pick_command(["suite", "--x"], commands, prog="p", description="d") == ("suite", ["--x"])
        assert pick_command(["--x"], commands, prog="p", description="d", default="run") == ("run", ["--x"])
        with pytest.raises(UserError, match="unknown command 'nope': choose one of run, suite"):
            pick_command(["nope"], commands, prog="p", description="d")
        with pytest.raises(SystemExit) as exit_info:
            pick_command(["--help"], commands, prog="p", description="d")
        assert exit_info.value.code == 0 and "suite        many" in capsys.readouterr().out


# entry point: (command, a bad value, the start of its one-line error after "error: ")
ENTRY_POINTS = {
    "train_grpo": (["train_grpo.py"], ["num_generations=x"], "command line: num_generations: Input should be"),
    "data_gen build": (["-m", "data_gen", "build"], ["--seed", "x"], "command line: seed: Input should be"),
    "data_gen import": (["-m", "data_gen", "import"], ["x.csv", "--text-column"], "--text-column needs a value"),
    "data_gen scrape": (["-m", "data_gen", "scrape"], ["max_products=x"], "command line: max_products: Input"),
    "evals run": (
        ["-m", "evals", "run"],
        ["--model", "keyword", "--data", "dev", "--out", "o", "--limit=0"],
        "command line: limit: Input should be",
    ),
    "evals robustness": (["-m", "evals", "robustness"], ["--long-chars", "x"], "command line: long_chars: Input"),
    "evals suite": (
        ["-m", "evals", "suite"],
        ["--data", "dev", "--out", "o", "--modes", "slow"],
        "command line: modes.0: Input should be 'reasoning' or 'fast'",
    ),
    "evals judge": (
        ["-m", "evals", "judge"],
        ["--endpoint", "http://h/v1", "--model", "m", "--calibrate", "--no-cache", "--concurrency", "0"],
        "command line: concurrency: Input should be",
    ),
    "evals compare": (["-m", "evals", "compare"], ["--out", "o"], "command line: dirs: Field required"),
    "serve": (["-m", "serve"], ["--port", "x"], "command line: port: Input should be"),
    "serve predict": (["-m", "serve", "predict"], ["--max-batch-size", "0"], "command line: max_batch_size: Input"),
    "launch_modal": (["launch_modal.py"], ["--mode", "ftp"], "command line: mode: Input should be 'jupyter'"),
    "inference.demo": (["-m", "inference.demo"], ["--max-new-tokens", "0"], "command line: max_new_tokens: Input"),
    "rewards.audit": (["-m", "rewards.audit"], ["x.jsonl", "--json=maybe"], "command line: json: Input should be"),
    "inference.models": (["-m", "inference.models", "prepare"], ["--model", "gpt5"], "command line: model: Input"),
    "inference.export": (["-m", "inference.export", "ct2"], ["runs/x", "--quant", "int3"], "--quant int3: ct2 takes"),
    "data_gen.package_pages": (["-m", "data_gen.package_pages"], ["--oops", "1"], "unknown field 'oops'"),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=list(ENTRY_POINTS))
def test_entry_point_help_and_bad_value(entry):
    """`--help` exits 0 listing the fields; a bad value exits 2 with one line naming the field, no traceback."""
    command, bad, error = ENTRY_POINTS[entry]
    env = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin"}
    shown = subprocess.run([sys.executable, *command, "--help"], cwd=REPO, capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "usage:" in shown.stdout and " = " in shown.stdout, shown.stderr
    failed = subprocess.run([sys.executable, *command, *bad], cwd=REPO, capture_output=True, text=True, env=env)
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert failed.stderr.startswith(f"error: {error}")
