import pytest
from pydantic import BaseModel, Field

from moderation.config import describe_fields, load_config, parse_overrides
from moderation.errors import UserError


class Inner(BaseModel):
    r: int = 16


class Demo(BaseModel):
    steps: int = Field(10, ge=1, description="how many steps")
    names: list[str] = ["a"]
    flag: bool = False
    inner: Inner = Inner()
    label: str = ""


def test_overrides_get_yaml_types_and_nest():
    assert parse_overrides(Demo, ["steps=4", "flag=true", "names=[x, y]", "inner.r=8", "label="]) == {
        "steps": 4,
        "flag": True,
        "names": ["x", "y"],
        "inner": {"r": 8},
        "label": "",
    }


def test_precedence_defaults_yaml_cli(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\ninner:\n  r: 4\n")
    config = load_config(Demo, path, ["steps=7"])
    assert (config.steps, config.inner.r, config.flag) == (7, 4, False)


@pytest.mark.parametrize(
    ("yaml_text", "overrides", "message"),
    [
        ("steps: 0\n", [], "steps: Input should be greater than or equal to 1"),
        ("- a list\n", [], "must be a YAML mapping"),
        ("steps: [\n", [], "cannot read config"),
        ("", ["nokey"], "unexpected argument 'nokey'"),
        ("", ["inner=5", "inner.r=8"], "inner was already set to a plain value"),
    ],
)
def test_errors_are_one_line(tmp_path, yaml_text, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(UserError, match=message.replace("[", r"\[")) as error:
        load_config(Demo, path, overrides)
    assert "\n" not in str(error.value)


def test_missing_file():
    with pytest.raises(UserError, match="config file not found"):
        load_config(Demo, "nope.yaml")


def test_describe_fields_flattens_nested():
    text = "\n".join(describe_fields(Demo))
    assert "--steps INT = 10" in text and "how many steps" in text and "--inner.r INT = 16" in text


def test_evals_config_file_holding_a_list_is_one_line(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    out = subprocess.run(
        [sys.executable, "-m", "evals", "run", "--config", str(path), "--model", "keyword", "--data", "x"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr and "must be a YAML mapping" in out.stderr


@pytest.mark.parametrize("command", ["run", "suite", "robustness", "judge", "compare"])
def test_evals_help_prints_every_option(command, capsys):
    from evals.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "--help" in capsys.readouterr().out
