"""Data adapters: our splits, outside JSONL/CSV, label maps, bad input (one line, or skipped and counted)."""

import json

import pandas as pd
import pytest

from evals.data import LabelMap, load_dataset, load_label_map, resolve_data
from moderation.errors import UserError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_parquet_split_format(tmp_path):
    path = tmp_path / "dev.parquet"
    pd.DataFrame(
        {
            "id": ["a", "b"],
            "text": ["IPTV 18k channels", "Watercolor brushes"],
            "label": ["disallow", "allow"],
            "categories": [["iptv"], []],
            "source": ["synthetic", "scraped"],
            "generator": ["template", "scrape"],
            "split": ["dev", "dev"],
        }
    ).to_parquet(path)
    dataset = load_dataset(path)
    assert [(i.id, i.label, i.categories) for i in dataset.items] == [("a", "disallow", ("iptv",)), ("b", "allow", ())]
    assert dataset.items[0].meta["source"] == "synthetic"
    assert dataset.n_skipped == 0


def test_outside_jsonl_with_bool_and_word_labels(tmp_path):
    path = write_jsonl(
        tmp_path / "x.jsonl",
        [
            {"text": "a", "label": True, "categories": "spam, Weapon components"},
            {"text": "b", "label": "SAFE"},
            {"text": "c", "label": 0},
            {"text": "d", "label": "unsafe", "categories": ["Gambling"]},
        ],
    )
    items = load_dataset(path).items
    assert [i.label for i in items] == ["disallow", "allow", "allow", "disallow"]
    assert items[0].categories == ("spam", "weapon_components")
    assert items[3].categories == ("gambling",)
    assert len({i.id for i in items}) == 4 and all(i.id.startswith("t") for i in items)  # text hashes


def test_csv(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("text,label,categories\nhello,allow,\nbuy btc,disallow,non_fiat_currency\n", encoding="utf-8")
    assert [i.categories for i in load_dataset(path).items] == [(), ("non_fiat_currency",)]


def test_openai_moderation_sample_format_through_a_label_map(tmp_path):
    path = tmp_path / "samples.jsonl"
    write_jsonl(
        path,
        [
            {"prompt": "nice poem", "S": 0, "H": 0, "V": 0},
            {"prompt": "explicit", "S": 1, "H": 0, "V": 0},
            {"prompt": "threat", "S": 0, "H": 1, "V": 1},
            {"prompt": "gore", "V": 1.0},
        ],
    )
    mapping = tmp_path / "map.yaml"
    mapping.write_text("text_column: prompt\ncategory_columns: {S: adult, H: harassment, V: other}\n")
    items = load_dataset(path, load_label_map(mapping)).items
    assert [(i.label, i.categories) for i in items] == [
        ("allow", ()),
        ("disallow", ("adult",)),
        ("disallow", ("harassment", "other")),
        ("disallow", ("other",)),
    ]


def test_label_and_category_renaming(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "a", "label": "blocked", "categories": ["porn"]}])
    label_map = LabelMap(labels={"blocked": "disallow"}, categories={"porn": "adult"})
    assert load_dataset(path, label_map).items[0].categories == ("adult",)


def test_label_map_keys_match_case_insensitively(tmp_path):
    path = write_jsonl(
        tmp_path / "x.jsonl",
        [{"text": "a", "label": "blocked", "categories": ["porn"]}, {"text": "b", "label": "BLOCKED"}],
    )
    label_map = LabelMap(labels={"Blocked": "disallow"}, categories={"PORN": "adult"})
    assert [(i.label, i.categories) for i in load_dataset(path, label_map).items] == [
        ("disallow", ("adult",)),
        ("disallow", ()),
    ]
    columns = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "explicit", "s": 1}])
    by_column = LabelMap(text_column="prompt", category_columns={"S": "adult"})
    assert load_dataset(columns, by_column).items[0].categories == ("adult",)


class TestBadInput:
    def test_bad_rows_are_skipped_and_counted(self, tmp_path):
        path = tmp_path / "x.jsonl"
        good = json.dumps({"text": "fine", "label": "allow"}).encode()
        lines = [good, b'{"label": "allow"}', b'{"text": "x", "label": "maybe"}', b"\xff\xfe not utf8", b"{oops", good]
        path.write_bytes(b"\n".join(lines) + b"\n")
        dataset = load_dataset(path)
        assert [i.text for i in dataset.items] == ["fine"]
        assert dataset.skipped == {
            "no text": 1,
            "label outside the mapping": 1,
            "not UTF-8": 1,
            "not a JSON line": 1,
            "duplicate text": 1,
        }

    def test_duplicate_ids_are_bad_rows(self, tmp_path):
        path = write_jsonl(tmp_path / "x.jsonl", [{"id": 7, "text": "a", "label": "allow"}] * 2)
        assert load_dataset(path).skipped == {"duplicate id '7'": 1}

    def test_strict_makes_a_bad_row_an_error(self, tmp_path):
        path = write_jsonl(tmp_path / "x.jsonl", [{"text": "ok", "label": "allow"}, {"text": "x", "label": "maybe"}])
        with pytest.raises(UserError, match=r"row 2: label outside the mapping"):
            load_dataset(path, strict=True)

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"", "is empty"),
            (b'{"label": "allow"}\n', "no usable rows"),
            (b"\xff\xfe\n", "no usable rows .*not UTF-8"),
        ],
    )
    def test_one_line_errors(self, tmp_path, content, message):
        path = tmp_path / "x.jsonl"
        path.write_bytes(content)
        with pytest.raises(UserError, match=message):
            load_dataset(path)

    def test_non_utf8_csv(self, tmp_path):
        path = tmp_path / "x.csv"
        path.write_bytes(b"text,label\ncaf\xe9,allow\n")
        with pytest.raises(UserError, match="not UTF-8"):
            load_dataset(path)

    def test_missing_file_and_missing_split(self, tmp_path):
        with pytest.raises(UserError, match="not found"):
            load_dataset(tmp_path / "nope.jsonl")
        with pytest.raises(UserError, match="split 'nosuchdata/dev' not found"):
            resolve_data("nosuchdata/dev")

    def test_bad_label_map(self, tmp_path):
        mapping = tmp_path / "map.yaml"
        mapping.write_text("labels: {x: maybe}\n")
        with pytest.raises(UserError, match=r"labels\.x"):
            load_label_map(mapping)


def test_ids_without_an_id_column_survive_reordering(tmp_path):
    rows = [{"text": "a", "label": "allow"}, {"text": "b", "label": "disallow", "categories": ["spam"]}]
    first = {i.text: i.id for i in load_dataset(write_jsonl(tmp_path / "1.jsonl", rows)).items}
    second = {i.text: i.id for i in load_dataset(write_jsonl(tmp_path / "2.jsonl", rows[::-1])).items}
    assert first == second
