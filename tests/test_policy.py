import subprocess
import sys

import pytest
import yaml

from moderation.errors import UserError
from moderation.policy import load_policy

DEFAULT_IDS = (
    "harassment", "adult", "spam", "non_fiat_currency", "weapon_components",
    "government_services", "gambling", "iptv", "phishing",
)  # fmt: skip


def test_default_policy_has_the_nine_categories(policy):
    assert policy.category_ids == DEFAULT_IDS
    for category in policy.categories:
        assert len(category.disallowed_examples) >= 3
        assert len(category.allowed_examples) >= 2


def test_second_policy_loads_with_its_own_categories():
    assert load_policy("kids-crafts").category_ids == ("violence", "data_collection", "scam")


def _write(tmp_path, data) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def _valid(policy) -> dict:
    return policy.model_dump()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["categories"][6].update(disallowed_examples=["one"]), "categories[gambling].disallowed_examples"),
        (lambda d: d["categories"][0].update(id="Bad Id"), "categories[Bad Id].id"),
        (lambda d: d["categories"].append(dict(d["categories"][0])), "duplicate category ids: harassment"),
        (lambda d: d.pop("name"), "name: Field required"),
        (lambda d: d["categories"][1].update(colour="red"), "categories[adult].colour"),
        (lambda d: d.update(categories=[]), "categories"),
    ],
)
def test_bad_policy_names_file_and_field(tmp_path, policy, mutate, expected):
    data = _valid(policy)
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(UserError) as error:
        load_policy(path)
    message = str(error.value)
    assert message.startswith(path) and expected in message and "\n" not in message


@pytest.mark.parametrize("text", ["name: [unclosed", "- just\n- a list\n", ""])
def test_malformed_yaml_is_one_line(tmp_path, text):
    with pytest.raises(UserError, match=r"bad\.yaml"):
        load_policy(_write(tmp_path, text))


def test_missing_policy_lists_builtins():
    with pytest.raises(UserError, match="built-in policies: kids-crafts, marketplace"):
        load_policy("nope")


def test_cli_reports_bad_policy_in_one_line_and_exits_nonzero(tmp_path):
    path = _write(tmp_path, "name: x\ndescription: y\ncategories: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "inference.demo", "--policy", path], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(f"error: {path}: categories")
    assert "Traceback" not in result.stderr
