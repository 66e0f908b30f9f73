"""Unit tests for plugins/module_utils/models/fetch.py: the pure decisions, and transfers from local folders."""

from __future__ import annotations

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.models import fetch as lib

REV = "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad"


@pytest.mark.parametrize(
    ("base", "fragment"),
    [
        ("http://198.51.100.10/models/", ""),
        ("https://mirror.example/models", ""),
        ("/mnt/mirror/models", ""),
        ("file:///mnt/mirror/models", ""),
        ("https:///models", "has no host"),
        ("http://mirror/models?x=1", "query or fragment"),
        ("mirror/models", "neither an http(s) URL nor an absolute path"),
        ("ftp://mirror/models", "neither"),
        ("", "neither"),
    ],
)
def test_base_problem(base, fragment):
    problem = lib.base_problem(base)
    assert (fragment in problem) if fragment else problem == ""


def test_join_quotes_url_paths_and_joins_local_paths():
    assert lib.join("http://m/models/", "tiny", REV, "a b.json") == f"http://m/models/tiny/{REV}/a%20b.json"
    assert lib.join("file:///srv/mirror/models", "tiny", "x") == "/srv/mirror/models/tiny/x"
    assert lib.join("/srv/mirror/models", "tiny") == "/srv/mirror/models/tiny"


@pytest.mark.parametrize(
    ("target", "same"),
    [
        ("http://198.51.100.10/models/x", True),
        ("http://198.51.100.10:80/other", True),
        ("http://198.51.100.10:8080/models/x", False),
        ("https://198.51.100.10/models/x", False),
        ("http://192.0.2.1/models/x", False),
    ],
)
def test_same_origin(target, same):
    assert lib.same_origin("http://198.51.100.10/models/", target) is same


@pytest.mark.parametrize(
    ("status", "header", "offset", "size", "honoured"),
    [
        (206, "bytes 100-999/1000", 100, 1000, True),
        (206, "bytes 100-999/*", 100, 1000, True),
        (200, "", 100, 1000, False),  # the whole file: the server ignored the range
        (206, "bytes 0-999/1000", 100, 1000, False),  # another start
        (206, "bytes 100-499/1000", 100, 1000, False),  # stops early
        (206, "bytes 100-999/2000", 100, 1000, False),  # another file size
        (206, "bytes 100-99/1000", 100, 1000, False),
        (206, "items 100-999/1000", 100, 1000, False),
        (206, None, 100, 1000, False),
    ],
)
def test_range_honoured(status, header, offset, size, honoured):
    assert lib.range_honoured(status, header, offset, size) is honoured


def test_plan_reuses_complete_files_resumes_short_partials_and_restarts_the_rest():
    entries = [{"path": p, "size": 100} for p in ("done", "half", "wrong", "toolong", "new")]
    plan = lib.plan_files(entries, {"done": 100, "wrong": 50}, {"half": 40, "toolong": 120})
    assert plan == {
        "done": ("reuse", 100),
        "half": ("resume", 40),
        "wrong": ("fetch", 0),
        "toolong": ("fetch", 0),
        "new": ("fetch", 0),
    }
    assert lib.bytes_needed(entries, plan) == 60 + 100 + 100 + 100


def test_free_space_problem_gives_both_numbers():
    assert lib.free_space_problem(10, 10, "/srv/models", "tiny") == ""
    message = lib.free_space_problem(3 << 30, 1 << 30, "/srv/models", "tiny at abc")
    assert "3.00 GiB (3221225472 bytes)" in message
    assert "1.00 GiB (1073741824 bytes) free" in message
    assert "model_store_root" in message
    assert lib.free_space_problem(10, 15, "/x", "t", reserve=10).count("reserve") == 1


def test_entries_problems_reuse_the_manifest_path_rules():
    problems = lib.entries_problems(
        [
            {"path": "../etc/passwd", "size": 1},
            {"path": "manifest.json", "size": 1},
            {"path": "a", "size": -1},
            {"path": "b", "size": 1},
            {"path": "b", "size": 1},
        ]
    )
    assert len(problems) == 4
    assert any("not normalised" in p for p in problems)
    assert any("listed twice" in p for p in problems)


def test_publisher_entries_take_lfs_hashes_and_refuse_another_commit():
    info = {
        "sha": REV,
        "siblings": [
            {"rfilename": "config.json", "size": 10},
            {"rfilename": "model.safetensors", "size": 134, "lfs": {"sha256": "A" * 64, "size": 5000}},
        ],
        "cardData": {"license": "mit"},
    }
    entries, published, problems = lib.publisher_entries(info, REV)
    assert problems == []
    assert entries == [{"path": "config.json", "size": 10}, {"path": "model.safetensors", "size": 5000}]
    assert published == {"model.safetensors": "a" * 64}
    _entries, _publisher_sha256, problems = lib.publisher_entries({**info, "sha": "0" * 40}, REV)
    assert "resolved the revision" in problems[0]
    _entries, _publisher_sha256, problems = lib.publisher_entries({"sha": REV, "siblings": [{"rfilename": "x"}]}, REV)
    assert "?blobs=true" in problems[0]


@pytest.mark.parametrize(("repo", "ok"), [("deepseek-ai/DeepSeek-R1", True), ("x", False), ("a/../b", False)])
def test_repository_problem(repo, ok):
    assert (lib.repository_problem(repo) == "") is ok


def test_fetch_files_from_a_folder_resumes_a_partial_file(tmp_path):
    mirror, dest = tmp_path / "mirror", tmp_path / "dest"
    mirror.mkdir()
    data = bytes(range(256)) * 4096
    (mirror / "shard").write_bytes(data)
    (mirror / "small").write_bytes(b"x")
    partial = tmp_path / "dest.partial"
    partial.mkdir()
    (partial / "shard").write_bytes(data[:1000])
    jobs = [{"path": p, "size": (mirror / p).stat().st_size, "url": str(mirror / p)} for p in ("shard", "small")]
    report = lib.fetch_files(lib.FileSource(), jobs, str(dest), str(partial), workers=2)
    assert report["errors"] == []
    assert (dest / "shard").read_bytes() == data
    assert report["bytes_reused"] == 1000
    assert report["bytes_transferred"] == len(data) - 1000 + 1
    assert not partial.exists()
    again = lib.fetch_files(lib.FileSource(), jobs, str(dest), str(partial))
    assert (again["bytes_transferred"], again["files_reused"]) == (0, 2)


def test_a_source_longer_than_listed_is_an_error(tmp_path):
    (tmp_path / "big").write_bytes(b"y" * (3 << 20))
    jobs = [{"path": "big", "size": 10, "url": str(tmp_path / "big")}]
    report = lib.fetch_files(lib.FileSource(), jobs, str(tmp_path / "d"), str(tmp_path / "p"), max_attempts=1)
    assert "more than the 10 bytes" in report["errors"][0]
    assert not (tmp_path / "d" / "big").exists()
