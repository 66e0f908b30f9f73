"""Unit tests for plugins/module_utils/models/manifest.py (no root, no gpg; files only under tmp_path)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.models import manifest as lib
from ansible_collections.enclave.llm.plugins.module_utils.models import manifest_io as io_lib

REV = "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad"
SHA_A = "a" * 64
SHA_B = "b" * 64


def manifest(**changes):
    data = {
        "format_version": 1,
        "name": "deepseek-r1",
        "repository": "https://huggingface.co/deepseek-ai/DeepSeek-R1",
        "revision": REV,
        "licence": "MIT",
        "created": "2025-01-20T12:00:00Z",
        "files": [
            {"path": "config.json", "size": 10, "sha256": SHA_A, "sha256_source": "mirror"},
            {"path": "model-00001-of-00002.safetensors", "size": 100, "sha256": SHA_B, "sha256_source": "publisher"},
        ],
    }
    data.update(changes)
    return data


def file_entry(**changes):
    entry = {"path": "x.bin", "size": 1, "sha256": SHA_A, "sha256_source": "mirror"}
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not None}


# --- revision pinning --------------------------------------------------------


@pytest.mark.parametrize("revision", [REV, REV.upper()])
def test_full_commit_is_pinned(revision):
    assert lib.revision_problem(revision) == ""


@pytest.mark.parametrize(
    "revision",
    [
        pytest.param("main", id="branch"),
        pytest.param("v1.0", id="tag"),
        pytest.param(REV[:39], id="39-hex"),
        pytest.param(REV[:7], id="short-hash"),
        pytest.param(REV + "0", id="41-hex"),
        pytest.param("g" * 40, id="not-hex"),
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
        pytest.param(1234, id="number"),
    ],
)
def test_unpinned_revision_is_refused(revision):
    problem = lib.revision_problem(revision)
    assert "is not pinned" in problem
    assert "40-hex commit id" in problem


def test_branch_message_names_the_branch():
    assert lib.revision_problem("main").startswith("revision 'main' is not pinned")


# --- paths ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["config.json", "a/b/c.safetensors", "tokenizer.model", "..hidden", "a/.b"])
def test_safe_paths(path):
    assert lib.path_problem(path) == ""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/etc/passwd", "is absolute", id="absolute"),
        pytest.param("../x", "not normalised", id="dotdot"),
        pytest.param("a/../b", "not normalised", id="inner-dotdot"),
        pytest.param("a//b", "not normalised", id="empty-component"),
        pytest.param("./a", "not normalised", id="dot"),
        pytest.param("a/", "not normalised", id="trailing-slash"),
        pytest.param("", "empty", id="empty"),
        pytest.param("a\nb", "control character", id="newline"),
        pytest.param("a\\b", "backslash", id="backslash"),
        pytest.param("manifest.json", "the manifest or its signature", id="manifest"),
        pytest.param("manifest.json.sig", "the manifest or its signature", id="signature"),
    ],
)
def test_unsafe_paths(path, expected):
    assert expected in lib.path_problem(path)


# --- schema --------------------------------------------------------------------


def test_good_manifest_has_no_problems():
    assert lib.manifest_problems(manifest()) == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param([], "not a JSON object", id="not-object"),
        pytest.param({k: v for k, v in manifest().items() if k != "licence"}, "missing keys: licence", id="no-licence"),
        pytest.param(manifest(extra=1), "unknown keys: extra", id="unknown-key"),
        pytest.param(manifest(format_version=2), "format_version is 2", id="future-format"),
        pytest.param(manifest(format_version=True), "format_version is True", id="bool-format"),
        pytest.param(manifest(name="deep seek"), "is not a model name", id="bad-name"),
        pytest.param(manifest(repository=" "), "repository is empty", id="empty-repository"),
        pytest.param(manifest(revision="main"), "revision 'main' is not pinned", id="branch"),
        pytest.param(manifest(created="yesterday"), "is not a UTC time", id="created"),
        pytest.param(manifest(files=[]), "files is empty", id="no-files"),
        pytest.param(manifest(files={"a": 1}), "files is empty or not a list", id="files-object"),
        pytest.param(manifest(files=["a"]), "files[0] is not an object", id="file-not-object"),
        pytest.param(manifest(files=[file_entry(size=-1)]), "size -1 is not a byte count", id="negative-size"),
        pytest.param(manifest(files=[file_entry(size="1")]), "size '1' is not a byte count", id="string-size"),
        pytest.param(manifest(files=[file_entry(size=True)]), "size True is not a byte count", id="bool-size"),
        pytest.param(manifest(files=[file_entry(sha256="A" * 64)]), "64 lower-case hex", id="upper-sha"),
        pytest.param(manifest(files=[file_entry(sha256="a" * 63)]), "64 lower-case hex", id="short-sha"),
        pytest.param(manifest(files=[file_entry(sha256_source="hf")]), "sha256_source 'hf'", id="source"),
        pytest.param(manifest(files=[file_entry(sha256=None)]), "files[0]: missing keys: sha256", id="no-sha"),
        pytest.param(manifest(files=[file_entry(mode=420)]), "files[0]: unknown keys: mode", id="file-unknown"),
        pytest.param(manifest(files=[file_entry(path="../x")]), "files[0]: path '../x'", id="unsafe-path"),
        pytest.param(manifest(files=[file_entry(), file_entry()]), "files[1]: path 'x.bin' is listed twice", id="dup"),
    ],
)
def test_bad_manifest(data, expected):
    problems = lib.manifest_problems(data)
    assert any(expected in problem for problem in problems), problems


def test_parse_manifest_reports_invalid_json():
    data, problems = lib.parse_manifest('{"format_version": 1,')
    assert data is None
    assert problems[0].startswith("it is not valid JSON")


def test_parse_manifest_round_trips_the_rendering():
    text = lib.render_manifest(manifest())
    data, problems = lib.parse_manifest(text)
    assert problems == []
    assert data == manifest()


def test_render_is_stable_and_sorted():
    data = manifest()
    data["files"] = list(reversed(data["files"]))
    text = lib.render_manifest(data)
    assert text == lib.render_manifest(manifest())
    assert text.endswith("}\n")
    assert list(json.loads(text)) == list(lib.MANIFEST_KEYS)
    assert [f["path"] for f in json.loads(text)["files"]] == ["config.json", "model-00001-of-00002.safetensors"]


# --- building a manifest ---------------------------------------------------------

OBSERVED = {
    "config.json": {"size": 10, "sha256": SHA_A},
    "model-00001-of-00002.safetensors": {"size": 100, "sha256": SHA_B},
}


def build(**changes):
    args = {
        "name": "deepseek-r1",
        "repository": "https://huggingface.co/deepseek-ai/DeepSeek-R1",
        "revision": REV,
        "licence": "MIT",
        "created": "2025-01-20T12:00:00Z",
        "observed": OBSERVED,
        "publisher": {"model-00001-of-00002.safetensors": SHA_B},
    }
    args.update(changes)
    return lib.build_manifest(**args)


def test_build_marks_publisher_hashes():
    data, problems = build()
    assert problems == []
    assert data == manifest()


def test_build_lowercases_the_revision():
    data, _problems = build(revision=REV.upper(), publisher={"model-00001-of-00002.safetensors": SHA_B.upper()})
    assert data["revision"] == REV
    assert data["files"][1]["sha256_source"] == "publisher"


def test_build_refuses_a_publisher_mismatch():
    data, problems = build(publisher={"model-00001-of-00002.safetensors": "c" * 64})
    assert data is None
    assert problems == [
        f"model-00001-of-00002.safetensors: sha256 {SHA_B} differs from the publisher's {'c' * 64}; "
        "the download is corrupt or not of this revision: fetch it again"
    ]


def test_build_refuses_a_publisher_file_that_is_not_there():
    _data, problems = build(publisher={"model-00002-of-00002.safetensors": SHA_B})
    assert problems == ["model-00002-of-00002.safetensors: the publisher lists it but it is not in the folder"]


def test_build_refuses_a_branch():
    data, problems = build(revision="main")
    assert data is None
    assert "is not pinned" in problems[0]


def test_same_content_ignores_created_only():
    assert lib.same_content(manifest(), manifest(created="2030-01-01T00:00:00Z"))
    assert not lib.same_content(manifest(), manifest(licence="Apache-2.0"))
    assert not lib.same_content(None, manifest())


# --- comparing a folder ----------------------------------------------------------

FILES = manifest()["files"]


def listing(**changes):
    found = {
        "config.json": {"size": 10, "regular": True},
        "model-00001-of-00002.safetensors": {"size": 100, "regular": True},
    }
    for path, value in changes.items():
        path = path.replace("__", "/").replace("_dot_", ".")
        if value is None:
            found.pop(path)
        else:
            found[path] = value
    return found


def test_diff_clean_folder():
    assert lib.diff_folder(FILES, listing()) == {
        "missing": [],
        "extra": [],
        "not_regular": [],
        "size_mismatch": [],
        "to_hash": ["config.json", "model-00001-of-00002.safetensors"],
    }


def test_diff_sorts_each_kind_separately():
    found = listing()
    found.pop("config.json")
    found["model-00001-of-00002.safetensors"] = {"size": 99, "regular": True}
    found["notes/readme.txt"] = {"size": 1, "regular": True}
    found["evil.py"] = {"size": 1, "regular": False}
    diff = lib.diff_folder(FILES, found)
    assert diff["missing"] == ["config.json"]
    assert diff["extra"] == ["evil.py", "notes/readme.txt"]
    assert diff["size_mismatch"] == [{"path": "model-00001-of-00002.safetensors", "expected": 100, "actual": 99}]
    assert diff["to_hash"] == []


def test_diff_symlink_in_place_of_a_listed_file():
    found = listing()
    found["config.json"] = {"size": 10, "regular": False}
    diff = lib.diff_folder(FILES, found)
    assert diff["not_regular"] == ["config.json"]
    assert diff["to_hash"] == ["model-00001-of-00002.safetensors"]


def test_corrupt_files():
    digests = {"config.json": SHA_A, "model-00001-of-00002.safetensors": "c" * 64}
    assert lib.corrupt_files(FILES, digests) == ["model-00001-of-00002.safetensors"]


# --- the incremental cache's decisions ---------------------------------------------

STAT = {"size": 100, "mtime_ns": 1_000, "ctime_ns": 2_000, "ino": 7, "dev": 3}


def test_unchanged_stat_reuses_the_digest():
    assert lib.cached_digest({**STAT, "sha256": SHA_A}, dict(STAT)) == SHA_A


@pytest.mark.parametrize("key", lib.STAT_KEYS)
def test_any_changed_stat_field_rehashes(key):
    now = {**STAT, key: STAT[key] + 1}
    assert lib.cached_digest({**STAT, "sha256": SHA_A}, now) is None


@pytest.mark.parametrize(
    "entry",
    [None, "x", {**STAT}, {**STAT, "sha256": "zz"}, {**STAT, "sha256": None}],
    ids=["none", "string", "no-digest", "bad-digest", "null-digest"],
)
def test_unusable_cache_entry_rehashes(entry):
    assert lib.cached_digest(entry, dict(STAT)) is None


def test_plan_hashing_splits_reuse_and_rehash():
    stats = {"a": dict(STAT), "b": {**STAT, "mtime_ns": 5}, "c": dict(STAT)}
    cache = {"a": {**STAT, "sha256": SHA_A}, "b": {**STAT, "sha256": SHA_B}}
    reuse, rehash = lib.plan_hashing(["a", "b", "c"], stats, cache)
    assert reuse == {"a": SHA_A}
    assert rehash == ["b", "c"]


def test_plan_hashing_without_cache_hashes_everything():
    assert lib.plan_hashing(["a"], {"a": dict(STAT)}, {}) == ({}, ["a"])


def test_cacheable_when_stable_and_old():
    assert lib.cacheable(dict(STAT), dict(STAT), finished_ns=10 * lib.RACY_NS)


def test_not_cacheable_when_changed_while_hashed():
    assert not lib.cacheable(dict(STAT), {**STAT, "mtime_ns": 3_000}, finished_ns=10 * lib.RACY_NS)


@pytest.mark.parametrize("key", ["mtime_ns", "ctime_ns"])
def test_not_cacheable_when_written_just_before(key):
    finished = 10 * lib.RACY_NS
    recent = {**STAT, key: finished - lib.RACY_NS // 2}
    assert not lib.cacheable(recent, dict(recent), finished_ns=finished)


def good_cache(store="/srv/models/m/r"):
    return {"format_version": 1, "store": store, "files": {"a": {**STAT, "sha256": SHA_A}}}


def test_cache_problems_accepts_a_good_cache():
    assert lib.cache_problems(good_cache(), "/srv/models/m/r") == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"format_version": 2}, "format_version 2", id="version"),
        pytest.param({"store": "/srv/models/m/other"}, "it records '/srv/models/m/other'", id="other-store"),
        pytest.param({"files": []}, "files is not an object", id="files-list"),
        pytest.param({"files": {"a": {**STAT, "size": "1", "sha256": SHA_A}}}, "entry for 'a' is malformed", id="s"),
        pytest.param({"files": {"a": {**STAT, "sha256": "x"}}}, "no valid sha256", id="digest"),
    ],
)
def test_cache_problems(change, expected):
    data = {**good_cache(), **change}
    assert expected in lib.cache_problems(data, "/srv/models/m/r")[0]


def test_default_cache_path_is_next_to_the_store(tmp_path):
    store = tmp_path / "models" / "m" / REV
    store.mkdir(parents=True)
    link = tmp_path / "current"
    link.symlink_to(store)
    expected = str(tmp_path / "models" / "m" / ".manifest-cache" / f"{REV}.json")
    assert lib.default_cache_path(str(store)) == expected
    assert lib.default_cache_path(str(link)) == expected


# --- messages ----------------------------------------------------------------------

NO_FINDINGS = {"missing": [], "extra": [], "not_regular": [], "size_mismatch": [], "corrupt": [], "unreadable": []}


def test_clean_findings_have_no_message():
    assert lib.findings_message("/srv/m", NO_FINDINGS) == ""


def test_message_names_every_kind():
    findings = {
        **NO_FINDINGS,
        "corrupt": ["b.safetensors"],
        "missing": ["c.safetensors"],
        "extra": ["evil.py"],
        "size_mismatch": [{"path": "d.safetensors", "expected": 10, "actual": 9}],
    }
    message = lib.findings_message("/srv/m", findings)
    assert message.startswith("/srv/m does not match its manifest: 1 corrupt (sha256 differs): b.safetensors; ")
    assert "1 with the wrong size: d.safetensors (9 bytes, manifest says 10)" in message
    assert "1 missing: c.safetensors" in message
    assert "1 unexpected (not in the manifest): evil.py" in message
    assert message.endswith("do not serve this folder.")


def test_message_shortens_long_lists():
    findings = {**NO_FINDINGS, "missing": [f"f{i:02}" for i in range(25)]}
    assert "25 missing: f00, f01, f02, f03, f04, f05, f06, f07, f08, f09 and 15 more" in lib.findings_message(
        "/m", findings
    )


# --- gpg status lines ------------------------------------------------------------

FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
SUB = "89ABCDEF0123456789ABCDEF0123456789ABCDEF"


def test_good_signature():
    status = lib.parse_gpg_status(
        "[GNUPG:] NEWSIG\n"
        "[GNUPG:] KEY_CONSIDERED " + FPR + " 0\n"
        "[GNUPG:] SIG_ID abc 2025-01-20 1737374400\n"
        "[GNUPG:] GOODSIG 0123456789ABCDEF Mirror <mirror@example.org>\n"
        f"[GNUPG:] VALIDSIG {SUB} 2025-01-20 1737374400 0 4 0 22 10 00 {FPR}\n"
        "[GNUPG:] TRUST_UNDEFINED 0 pgp\n"
    )
    assert status == {"valid": True, "fingerprint": SUB, "primary_fingerprint": FPR, "reason": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[GNUPG:] BADSIG 0123456789ABCDEF Mirror\n", "does not match the manifest", id="bad"),
        pytest.param(
            "[GNUPG:] ERRSIG 0123456789ABCDEF 22 10 00 1737374400 9 -\n[GNUPG:] NO_PUBKEY 0123456789ABCDEF\n",
            "the signing key 0123456789ABCDEF is not in the keyring given",
            id="unknown-key",
        ),
        pytest.param(
            "[GNUPG:] EXPKEYSIG 0123456789ABCDEF Mirror\n"
            f"[GNUPG:] VALIDSIG {FPR} 2025-01-20 1737374400 0 4 0 22 10 00 {FPR}\n",
            "the signing key has expired",
            id="expired-key",
        ),
        pytest.param("[GNUPG:] REVKEYSIG 0123456789ABCDEF Mirror\n", "has been revoked", id="revoked"),
        pytest.param("[GNUPG:] NODATA 1\n", "holds no OpenPGP signature", id="no-data"),
        pytest.param("", "gpg reported no good signature", id="nothing"),
        pytest.param("[GNUPG:] GOODSIG 0123456789ABCDEF Mirror\n", "no good signature", id="good-not-valid"),
    ],
)
def test_bad_signatures(text, expected):
    status = lib.parse_gpg_status(text)
    assert not status["valid"]
    assert expected in status["reason"]


def test_normalise_fingerprint():
    assert lib.normalise_fingerprint("0123 4567 89ab cdef 0123  4567 89AB CDEF 0123 4567") == FPR
    assert lib.normalise_fingerprint("0123456789ABCDEF") == ""


# --- progress ----------------------------------------------------------------------


def test_progress_line():
    line = lib.progress_line(
        "model_manifest /srv/m",
        3,
        10,
        3 * lib.GIB,
        10 * lib.GIB,
        2.0,
        {"path": "model-00003.safetensors", "size": lib.GIB, "seconds": 0.5},
    )
    assert line == (
        "model_manifest /srv/m: 3/10 files, 3.00/10.00 GiB (30.0%), 1.50 GiB/s, about 5s left; "
        "done model-00003.safetensors (1.00 GiB in 0.50 s)"
    )


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3725, "1h02m")])
def test_format_duration(seconds, text):
    assert lib.format_duration(seconds) == text


# --- hashing and the cache file (tmp_path only) -------------------------------------


@pytest.mark.parametrize("io", io_lib.IO_METHODS)
@pytest.mark.parametrize("size", [0, 1, io_lib.MMAP_MIN_SIZE - 1, io_lib.MMAP_MIN_SIZE, 3 * io_lib.MMAP_MIN_SIZE + 17])
def test_hash_file_equals_hashlib(tmp_path, io, size):
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    result = io_lib.hash_file(str(path), buffer_size=1 << 20, io=io)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["size"] == size
    assert result["before"] == result["after"]


def test_hash_files_biggest_first(tmp_path):
    for name, size in [("small", 10), ("big", 3000), ("middle", 500)]:
        (tmp_path / name).write_bytes(b"x" * size)
    order = []
    results = io_lib.hash_files(
        str(tmp_path), ["small", "big", "middle"], workers=1, on_done=lambda p, r: order.append(p)
    )
    assert order == ["big", "middle", "small"]
    assert results["middle"]["sha256"] == hashlib.sha256(b"x" * 500).hexdigest()


def test_hash_files_reports_an_unreadable_file(tmp_path):
    (tmp_path / "link").symlink_to("/etc/hostname")
    results = io_lib.hash_files(str(tmp_path), ["link", "gone"], workers=2)
    assert "error" in results["link"]
    assert "error" in results["gone"]


def test_hash_files_in_processes(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    results = io_lib.hash_files(str(tmp_path), ["a"], executor="process")
    assert results["a"]["sha256"] == hashlib.sha256(b"abc").hexdigest()


def test_cache_is_written_private_and_read_back(tmp_path):
    store = str(tmp_path / "m" / REV)
    cache_path = lib.default_cache_path(store)
    assert io_lib.read_cache(cache_path, store) == ({}, "no cache yet")
    assert io_lib.write_cache(cache_path, store, {"a": {**STAT, "sha256": SHA_A}}) == ""
    assert stat.S_IMODE(os.stat(os.path.dirname(cache_path)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(cache_path).st_mode) == 0o600
    assert os.listdir(os.path.dirname(cache_path)) == [f"{REV}.json"]
    assert io_lib.read_cache(cache_path, store) == ({"a": {**STAT, "sha256": SHA_A}}, "")


def test_cache_open_to_others_is_not_trusted(tmp_path):
    store = str(tmp_path / "m" / REV)
    cache_path = lib.default_cache_path(store)
    io_lib.write_cache(cache_path, store, {"a": {**STAT, "sha256": SHA_A}})
    os.chmod(cache_path, 0o644)
    files, reason = io_lib.read_cache(cache_path, store)
    assert files == {}
    assert "with mode 0600; the cache is not trusted" in reason
    os.chmod(cache_path, 0o600)
    os.chmod(os.path.dirname(cache_path), 0o755)
    files, reason = io_lib.read_cache(cache_path, store)
    assert files == {}
    assert "with mode 0700; the cache is not trusted" in reason
    io_lib.write_cache(cache_path, store, {})
    assert stat.S_IMODE(os.stat(os.path.dirname(cache_path)).st_mode) == 0o700


def test_cache_symlink_is_not_followed(tmp_path):
    store = str(tmp_path / "m" / REV)
    cache_path = lib.default_cache_path(store)
    os.makedirs(os.path.dirname(cache_path), mode=0o700)
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(good_cache(store)))
    os.symlink(target, cache_path)
    files, reason = io_lib.read_cache(cache_path, store)
    assert files == {}
    assert "cannot be opened" in reason


def test_malformed_cache_is_ignored(tmp_path):
    store = str(tmp_path / "m" / REV)
    cache_path = lib.default_cache_path(store)
    io_lib.write_cache(cache_path, store, {})
    with open(cache_path, "w") as handle:
        handle.write("{not json")
    files, reason = io_lib.read_cache(cache_path, store)
    assert files == {}
    assert "is not valid JSON" in reason


# --- a folder end to end, through the function the module calls ----------------------


@pytest.fixture
def store(tmp_path):
    folder = tmp_path / "models" / "tiny" / REV
    (folder / "sub").mkdir(parents=True)
    contents = {"a.safetensors": os.urandom(300_000), "b.safetensors": os.urandom(200_000), "sub/c.json": b"{}"}
    for path, data in contents.items():
        (folder / path).write_bytes(data)
    observed = {p: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in contents.items()}
    data, problems = lib.build_manifest("tiny", "local", REV, "MIT", "2025-01-20T12:00:00Z", observed)
    assert problems == []
    (folder / lib.MANIFEST_NAME).write_text(lib.render_manifest(data))
    return folder


def load(folder):
    _text, data, error = io_lib.load_manifest(str(folder))
    assert error == ""
    return data


def test_verify_clean_folder(store):
    report = io_lib.verify_folder(str(store), load(store), workers=2)
    assert report["ok"]
    assert report["counts"] == dict.fromkeys(NO_FINDINGS, 0)
    assert report["hashed_files"] == 3
    assert report["cache"] == {"path": None, "used": False, "written": False, "note": ""}


def test_verify_finds_each_kind(store):
    data = load(store)
    blob = bytearray((store / "a.safetensors").read_bytes())
    blob[1234] ^= 0xFF
    (store / "a.safetensors").write_bytes(bytes(blob))
    (store / "b.safetensors").write_bytes(b"short")
    (store / "sub" / "c.json").unlink()
    (store / "sub" / "c.json").symlink_to("/etc/hostname")
    (store / "extra.py").write_text("print('hi')\n")
    report = io_lib.verify_folder(str(store), data)
    assert not report["ok"]
    assert report["corrupt"] == ["a.safetensors"]
    assert report["size_mismatch"] == [{"path": "b.safetensors", "expected": 200_000, "actual": 5}]
    assert report["not_regular"] == ["sub/c.json"]
    assert report["extra"] == ["extra.py"]
    assert report["missing"] == []


def test_load_manifest_messages(tmp_path):
    assert "is missing: the folder has no manifest" in io_lib.load_manifest(str(tmp_path))[2]
    (tmp_path / lib.MANIFEST_NAME).write_bytes(b"\xff\xfe")
    assert "is not UTF-8 text" in io_lib.load_manifest(str(tmp_path))[2]
    bad = copy.deepcopy(manifest(revision="main"))
    (tmp_path / lib.MANIFEST_NAME).write_text(json.dumps(bad))
    error = io_lib.load_manifest(str(tmp_path))[2]
    assert "is malformed: revision 'main' is not pinned" in error


def test_mapped_hashing_takes_a_lease_and_reports_it(tmp_path):
    path = tmp_path / "shard"
    path.write_bytes(os.urandom(2 * io_lib.MMAP_MIN_SIZE))
    result = io_lib.hash_file(str(path), io="mmap")
    assert result["io"] == ("mmap" if os.geteuid() == 0 or path.stat().st_uid == os.geteuid() else "read")
    assert io_lib.hash_file(str(path), io="read")["io"] == "read"


def test_file_open_for_writing_is_read_not_mapped(tmp_path):
    path = tmp_path / "shard"
    path.write_bytes(os.urandom(2 * io_lib.MMAP_MIN_SIZE))
    with open(path, "r+b"):
        result = io_lib.hash_file(str(path), io="mmap")
    assert result["io"] == "read"
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


TRUNCATE_WHILE_HASHING = r"""
import os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.enclave.llm.plugins.module_utils.models import manifest as lib
from ansible_collections.enclave.llm.plugins.module_utils.models import manifest_io as io_lib
path = sys.argv[2]
io_lib.READAHEAD_STEPS = 0
started = time.perf_counter()
truncate = subprocess.Popen(
    [sys.executable, "-c", "import os, sys, time; time.sleep(0.05); os.truncate(sys.argv[1], 4096)", path]
)
try:
    result = io_lib.hash_file(path, buffer_size=64 * 1024, io="mmap")
    print("digest", result["io"], result["size"])
except OSError as exc:
    print("error", exc.strerror)
print("waited", round(time.perf_counter() - started, 3))
print("truncated", truncate.wait(timeout=60))
"""


def test_truncating_a_mapped_file_does_not_kill_the_hashing(tmp_path):
    """Without the lease, truncating a file while it is mapped ends the process with SIGBUS.

    Runs in a child process, so a SIGBUS would show as its exit status instead
    of ending pytest. The truncation waits for the lease; the hashing notices the
    broken lease, lets go, and reports the file as changed.
    """
    path = tmp_path / "shard"
    path.write_bytes(os.urandom(256 * io_lib.MMAP_MIN_SIZE))
    collections = Path(__file__).resolve().parents[2] / ".collections"
    run = subprocess.run(
        [sys.executable, "-c", TRUNCATE_WHILE_HASHING, str(collections), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)
    assert run.stdout.startswith("error another process opened it for writing while it was being hashed"), run.stdout
    assert "truncated 0" in run.stdout
    assert path.stat().st_size == 4096
