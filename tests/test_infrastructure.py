"""The shared infrastructure every layer uses: atomic writes, JSONL reading beside a writer, provenance, plotting."""

import hashlib
import re

import pytest

from moderation.errors import UserError
from moderation.files import atomic_path, atomic_write_text, file_sha256
from moderation.jsonl import read_complete_lines
from moderation.plotting import pyplot
from moderation.provenance import git_commit, versions


class TestAtomicWrite:
    def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(self, tmp_path):
        path = tmp_path / "out.json"
        path.write_text("old")
        with pytest.raises(RuntimeError), atomic_path(path) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed mid-write")
        assert path.read_text() == "old"
        assert [p.name for p in tmp_path.iterdir()] == ["out.json"]

    def test_writes_create_parents_and_replace_whole(self, tmp_path):
        path = tmp_path / "a" / "b.txt"
        atomic_write_text(path, "first")
        atomic_write_text(path, "second ✓")
        assert path.read_text(encoding="utf-8") == "second ✓"
        assert [p.name for p in path.parent.iterdir()] == ["b.txt"]

    def test_temp_names_are_unique_per_call(self, tmp_path):
        with atomic_path(tmp_path / "x") as first, atomic_path(tmp_path / "x") as second:
            assert first != second
            first.write_text("1")
            second.write_text("2")

    def test_an_unwritable_target_is_one_user_error_line(self, tmp_path):
        (tmp_path / "file").write_text("")
        with pytest.raises(UserError, match="cannot write"):
            atomic_write_text(tmp_path / "file" / "below", "x")


def test_file_sha256_is_the_digest_of_the_bytes(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 300_000)
    assert file_sha256(path) == hashlib.sha256(b"x" * 300_000).hexdigest()


def test_complete_lines_skip_a_torn_tail_without_changing_the_file(tmp_path):
    path = tmp_path / "log.jsonl"
    assert read_complete_lines(path) == []
    path.write_bytes('{"a": "x\u2028y"}\n{"b": 2}\n{"c":'.encode())
    assert read_complete_lines(path) == ['{"a": "x\u2028y"}', '{"b": 2}']
    assert path.read_bytes().endswith(b'{"c":')


def test_provenance():
    assert re.fullmatch(r"[0-9a-f]{40}", git_commit() or "")
    found = versions(["pydantic", "no-such-distribution-xyz"])
    assert found["pydantic"] and found["no-such-distribution-xyz"] is None


def test_plots_need_no_display():
    assert pyplot().get_backend().lower() == "agg"
