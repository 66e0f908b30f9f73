"""The model_manifest module, run through ``ansible -c local`` on folders under tmp_path.

Each test builds a small model folder (four random 2 MiB "shards" and two small
JSON files under ``models/tiny/<revision>/``), writes its manifest with
``state=present`` and then damages the folder in one way: a flipped byte, a
missing or extra file, a wrong size, an unsigned or tampered manifest. Signatures
come from throwaway ed25519 keys made in a temporary GNUPGHOME. No root, no
network; about 80 s on two cores, most of it Ansible starting up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest
from netns import ensure_collection_link, run_module

REV = "56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad"
OTHER_REV = "0" * 40
SHARDS = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
SMALL = ["config.json", "tokenizer/tokenizer.json"]
SHARD_SIZE = 2 << 20
# The module caches a digest only when the file's mtime and ctime are at least
# this old (a write in the same timestamp tick could otherwise go unseen).
RACY_SECONDS = 2.1


@pytest.fixture(scope="module", autouse=True)
def _collection():
    ensure_collection_link()


def run(args, check=False):
    return run_module("model_manifest", args, extra=("--check",) if check else (), timeout=120)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def folder(tmp_path):
    """An unmanifested model folder; returns its path."""
    path = tmp_path / "models" / "tiny" / REV
    (path / "tokenizer").mkdir(parents=True)
    for name in SHARDS:
        (path / name).write_bytes(os.urandom(SHARD_SIZE))
    (path / "config.json").write_text('{"model_type": "llama"}\n')
    (path / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}\n')
    return path


def present_args(path, **changes):
    args = {
        "path": str(path),
        "state": "present",
        "name": "tiny",
        "repository": "https://huggingface.co/enclave-lab/tiny-r1",
        "revision": REV,
        "licence": "MIT",
        "publisher_sha256": {name: sha256(path / name) for name in SHARDS},
    }
    args.update(changes)
    return args


@pytest.fixture
def store(folder):
    """A model folder with its manifest, written by the module."""
    result = run(present_args(folder))
    assert result.get("changed") is True, result
    return folder


def flip_byte(path, offset=SHARD_SIZE // 2):
    """Flip one byte in place: same size, same inode."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def wait_past_racy_window(*paths):
    newest = max(max(os.stat(p).st_mtime_ns, os.stat(p).st_ctime_ns) for p in paths)
    delay = newest / 1e9 + RACY_SECONDS - time.time()
    if delay > 0:
        time.sleep(delay)


def all_files(path):
    return [path / name for name in SHARDS + SMALL]


# --- create, then verify -------------------------------------------------------


def test_create_then_verify(folder):
    created = run(present_args(folder))
    assert created["changed"] is True, created
    assert created["written"] is True
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == created["manifest"]
    assert manifest["revision"] == REV
    assert [f["path"] for f in manifest["files"]] == sorted(SHARDS + SMALL)
    sources = {f["path"]: f["sha256_source"] for f in manifest["files"]}
    assert sources == {**dict.fromkeys(SHARDS, "publisher"), **dict.fromkeys(SMALL, "mirror")}

    again = run(present_args(folder))
    assert again["changed"] is False, again
    assert again["written"] is False

    verified = run({"path": str(folder), "revision": REV, "name": "tiny"})
    assert verified.get("failed") is not True, verified
    assert verified["ok"] is True
    assert verified["changed"] is False
    assert verified["counts"] == {
        "missing": 0,
        "extra": 0,
        "not_regular": 0,
        "size_mismatch": 0,
        "corrupt": 0,
        "unreadable": 0,
    }
    assert verified["hashed_files"] == 6
    assert verified["hashed_bytes"] == verified["bytes_total"]
    assert verified["gib_per_s"] > 0
    assert [t["path"] for t in verified["timings"]] == sorted(SHARDS + SMALL)
    assert verified["signature"]["status"] == "absent"
    assert verified["cache"]["path"] is None
    assert not (folder.parent / ".manifest-cache").exists()


def test_publisher_mismatch_writes_nothing(folder):
    publisher = {SHARDS[0]: "c" * 64}
    result = run(present_args(folder, publisher_sha256=publisher))
    assert result["failed"] is True
    assert f"{SHARDS[0]}: sha256 {sha256(folder / SHARDS[0])} differs from the publisher's" in result["msg"]
    assert not (folder / "manifest.json").exists()


def test_branch_name_is_refused(folder):
    result = run(present_args(folder, revision="main"))
    assert result["failed"] is True
    assert result["msg"].startswith("revision: revision 'main' is not pinned")
    assert not (folder / "manifest.json").exists()


def test_verify_against_another_revision(store):
    result = run({"path": str(store), "revision": OTHER_REV})
    assert result["failed"] is True
    assert f"is for revision {REV}, not {OTHER_REV}" in result["msg"]
    result = run({"path": str(store), "revision": "main"})
    assert result["failed"] is True
    assert "revision 'main' is not pinned" in result["msg"]


# --- one damage at a time ------------------------------------------------------


def assert_only(result, kind, expected):
    assert result["failed"] is True, result
    assert result["ok"] is False
    for other in ("missing", "extra", "not_regular", "size_mismatch", "corrupt", "unreadable"):
        assert result[other] == (expected if other == kind else []), other
        assert result["counts"][other] == (len(expected) if other == kind else 0)


def test_corrupt_shard(store):
    flip_byte(store / SHARDS[1])
    result = run({"path": str(store)})
    assert_only(result, "corrupt", [SHARDS[1]])
    assert f"1 corrupt (sha256 differs): {SHARDS[1]}" in result["msg"]
    assert "do not serve this folder" in result["msg"]


def test_missing_shard(store):
    (store / SHARDS[2]).unlink()
    result = run({"path": str(store)})
    assert_only(result, "missing", [SHARDS[2]])
    assert f"1 missing: {SHARDS[2]}" in result["msg"]


def test_extra_file(store):
    (store / "tokenizer" / "loader.py").write_text("import os\n")
    result = run({"path": str(store)})
    assert_only(result, "extra", ["tokenizer/loader.py"])
    assert "1 unexpected (not in the manifest): tokenizer/loader.py" in result["msg"]


def test_size_mismatch(store):
    with open(store / SHARDS[3], "ab") as handle:
        handle.write(b"\0")
    result = run({"path": str(store)})
    assert_only(result, "size_mismatch", [{"path": SHARDS[3], "expected": SHARD_SIZE, "actual": SHARD_SIZE + 1}])
    assert f"{SHARDS[3]} ({SHARD_SIZE + 1} bytes, manifest says {SHARD_SIZE})" in result["msg"]


def test_symlink_in_place_of_a_file(store):
    (store / "config.json").unlink()
    (store / "config.json").symlink_to("/etc/hostname")
    result = run({"path": str(store)})
    assert_only(result, "not_regular", ["config.json"])


def test_manifest_missing(folder):
    result = run({"path": str(folder)})
    assert result["failed"] is True
    assert result["msg"].startswith(f"{folder}/manifest.json is missing: the folder has no manifest")


def test_manifest_malformed(store):
    (store / "manifest.json").write_text('{"format_version": 1,')
    result = run({"path": str(store)})
    assert result["failed"] is True
    assert f"{store}/manifest.json is malformed: it is not valid JSON" in result["msg"]


def test_manifest_with_a_branch(store):
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["revision"] = "main"
    (store / "manifest.json").write_text(json.dumps(manifest))
    result = run({"path": str(store)})
    assert result["failed"] is True
    assert "is malformed: revision 'main' is not pinned" in result["msg"]


def test_folder_missing(tmp_path):
    result = run({"path": str(tmp_path / "nowhere")})
    assert result["failed"] is True
    assert "does not exist" in result["msg"]


# --- check mode ------------------------------------------------------------------


def test_check_mode_present_writes_nothing(folder):
    result = run(present_args(folder), check=True)
    assert result["changed"] is True
    assert result["written"] is False
    assert [f["path"] for f in result["manifest"]["files"]] == sorted(SHARDS + SMALL)
    assert not (folder / "manifest.json").exists()

    run(present_args(folder))
    before = (folder / "manifest.json").read_bytes()
    (folder / "notes.txt").write_text("new file\n")
    result = run(present_args(folder), check=True)
    assert result["changed"] is True
    assert "notes.txt" in [f["path"] for f in result["manifest"]["files"]]
    assert (folder / "manifest.json").read_bytes() == before


def test_check_mode_verify_runs_and_writes_no_cache(store):
    flip_byte(store / SHARDS[0])
    result = run({"path": str(store), "mode": "incremental"}, check=True)
    assert result["failed"] is True
    assert result["corrupt"] == [SHARDS[0]]
    assert result["cache"]["written"] is False
    assert not (store.parent / ".manifest-cache").exists()


# --- incremental mode ---------------------------------------------------------------


def cache_file(store):
    return store.parent / ".manifest-cache" / f"{REV}.json"


def test_incremental_skips_unchanged_and_catches_changed(store):
    wait_past_racy_window(*all_files(store))
    first = run({"path": str(store), "mode": "incremental"})
    assert first["ok"] is True, first
    assert (first["hashed_files"], first["reused_files"]) == (6, 0)
    assert first["cache"]["written"] is True
    cache = cache_file(store)
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert oct(cache.parent.stat().st_mode & 0o777) == "0o700"

    second = run({"path": str(store), "mode": "incremental"})
    assert second["ok"] is True
    assert (second["hashed_files"], second["reused_files"], second["hashed_bytes"]) == (0, 6, 0)

    # A new mtime (content unchanged): only that file is hashed again.
    os.utime(store / SHARDS[0], ns=(time.time_ns(), time.time_ns() - 10**9))
    third = run({"path": str(store), "mode": "incremental"})
    assert third["ok"] is True
    assert [t["path"] for t in third["timings"]] == [SHARDS[0]]
    assert third["reused_files"] == 5

    # A changed size is caught before any hashing.
    with open(store / SHARDS[1], "ab") as handle:
        handle.write(b"tail")
    fourth = run({"path": str(store), "mode": "incremental"})
    assert fourth["failed"] is True
    assert fourth["size_mismatch"] == [{"path": SHARDS[1], "expected": SHARD_SIZE, "actual": SHARD_SIZE + 4}]


def test_incremental_catches_an_in_place_write_with_the_mtime_put_back(store):
    wait_past_racy_window(*all_files(store))
    assert run({"path": str(store), "mode": "incremental"})["ok"] is True
    shard = store / SHARDS[2]
    before = shard.stat()
    flip_byte(shard)
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = shard.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    # Writing and utime() both move the ctime, which no program can set back.
    result = run({"path": str(store), "mode": "incremental"})
    assert result["failed"] is True
    assert result["corrupt"] == [SHARDS[2]]


def test_incremental_cannot_see_a_change_the_file_system_did_not_record(store):
    """The documented limit: a change below the file system keeps the old metadata.

    A failing disk or a write to the block device changes the content and
    nothing else. Simulated here by corrupting a shard and then rewriting its
    cache entry with the shard's current metadata, as if no write had happened.
    Incremental mode trusts the metadata and passes; full mode finds it.
    """
    wait_past_racy_window(*all_files(store))
    assert run({"path": str(store), "mode": "incremental"})["ok"] is True
    shard = store / SHARDS[3]
    flip_byte(shard)
    cache = json.loads(cache_file(store).read_text())
    st = shard.stat()
    cache["files"][SHARDS[3]].update(
        {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}
    )
    cache_file(store).write_text(json.dumps(cache))

    incremental = run({"path": str(store), "mode": "incremental"})
    assert incremental["ok"] is True
    assert incremental["hashed_files"] == 0
    full = run({"path": str(store)})
    assert full["failed"] is True
    assert full["corrupt"] == [SHARDS[3]]


def test_cache_open_to_others_is_not_trusted(store):
    wait_past_racy_window(*all_files(store))
    run({"path": str(store), "mode": "incremental"})
    cache_file(store).chmod(0o644)
    result = run({"path": str(store), "mode": "incremental"})
    assert result["ok"] is True
    assert result["hashed_files"] == 6
    assert any("the cache is not trusted" in w for w in result.get("warnings", [])), result
    assert oct(cache_file(store).stat().st_mode & 0o777) == "0o600"


def test_cache_path_is_configurable(store, tmp_path):
    custom = tmp_path / "state" / "tiny.json"
    result = run({"path": str(store), "mode": "incremental", "cache_path": str(custom)})
    assert result["cache"]["path"] == str(custom)
    assert custom.exists()
    assert not cache_file(store).exists()


# --- progress ---------------------------------------------------------------------


def test_progress_log(store, tmp_path):
    log = tmp_path / "progress.log"
    result = run({"path": str(store), "progress_log": str(log)})
    assert result["ok"] is True
    lines = log.read_text().splitlines()
    assert "state=verified mode=full" in lines[0]
    assert lines[1].endswith("0/6 files, 0.00/0.01 GiB (0.0%), 0.00 GiB/s, about 0s left; started")
    assert sum(f"; done {name} (" in line for line in lines for name in SHARDS + SMALL) == 6
    assert "finished 6 files" in lines[-1]


# --- signatures -----------------------------------------------------------------------


class Signer:
    """A throwaway ed25519 signing key in its own GNUPGHOME."""

    def __init__(self, home, name):
        self.home = home
        self.env = {**os.environ, "GNUPGHOME": str(home)}
        self.gpg("--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", name, "ed25519", "sign", "never")
        colons = self.gpg("--with-colons", "--list-keys").stdout
        self.fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
        self.public = home.parent / f"{home.name}.asc"
        self.public.write_text(self.gpg("--armor", "--export", self.fingerprint).stdout)

    def gpg(self, *args):
        return subprocess.run(
            ["gpg", "--batch", "--quiet", *args], env=self.env, capture_output=True, text=True, check=True
        )

    def sign(self, folder):
        self.gpg(
            *("--pinentry-mode", "loopback", "--passphrase", "", "--yes", "--local-user", self.fingerprint),
            *("--detach-sign", "--output", str(folder / "manifest.json.sig"), str(folder / "manifest.json")),
        )

    def close(self):
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], check=False, capture_output=True)


@pytest.fixture(scope="module")
def signers(tmp_path_factory):
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    made = []
    try:
        for name in ("mirror", "stranger"):
            home = tmp_path_factory.mktemp(f"gnupg-{name}")
            home.chmod(0o700)
            made.append(Signer(home, f"{name} <{name}@example.org>"))
        yield {"mirror": made[0], "stranger": made[1]}
    finally:
        for signer in made:
            signer.close()


def test_signature_required_and_missing(store, signers):
    result = run({"path": str(store), "signature": "required", "keyring": [str(signers["mirror"].public)]})
    assert result["failed"] is True
    assert result["msg"].startswith(f"{store}/manifest.json.sig is missing and signature=required")
    assert "hashed_files" not in result


def test_signature_required_needs_a_keyring(store):
    result = run({"path": str(store), "signature": "required"})
    assert result["failed"] is True
    assert "keyring" in result["msg"]


def test_good_signature(store, signers):
    mirror = signers["mirror"]
    mirror.sign(store)
    result = run(
        {
            "path": str(store),
            "signature": "required",
            "keyring": [str(mirror.public)],
            "signature_fingerprints": [mirror.fingerprint],
        }
    )
    assert result.get("failed") is not True, result
    assert result["ok"] is True
    assert result["signature"]["status"] == "verified"
    assert result["signature"]["primary_fingerprint"] == mirror.fingerprint
    assert any("--verify" in command for command in result["commands"])


def test_tampered_manifest(store, signers):
    mirror = signers["mirror"]
    mirror.sign(store)
    manifest = json.loads((store / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = "0" * 64
    (store / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    result = run({"path": str(store), "signature": "optional", "keyring": [str(mirror.public)]})
    assert result["failed"] is True
    assert "does not verify" in result["msg"]
    assert "the signature does not match the manifest" in result["msg"]
    assert result["signature"]["status"] == "bad"


def test_signature_by_a_key_not_in_the_keyring(store, signers):
    signers["stranger"].sign(store)
    result = run({"path": str(store), "signature": "required", "keyring": [str(signers["mirror"].public)]})
    assert result["failed"] is True
    assert "is not in the keyring given" in result["msg"]


def test_signature_by_a_key_not_pinned(store, signers):
    signers["stranger"].sign(store)
    keyring = [str(signers["mirror"].public), str(signers["stranger"].public)]
    result = run(
        {
            "path": str(store),
            "signature": "required",
            "keyring": keyring,
            "signature_fingerprints": [signers["mirror"].fingerprint],
        }
    )
    assert result["failed"] is True
    assert f"good signature by key {signers['stranger'].fingerprint}, which is not one of" in result["msg"]


def test_optional_signature_without_keyring_is_reported(store, signers):
    signers["mirror"].sign(store)
    result = run({"path": str(store)})
    assert result["ok"] is True
    assert result["signature"]["status"] == "unchecked"
    assert any("was not checked" in w for w in result.get("warnings", []))


def test_rewriting_the_manifest_removes_a_stale_signature(store, signers):
    signers["mirror"].sign(store)
    (store / "generation_config.json").write_text("{}\n")
    result = run(present_args(store))
    assert result["changed"] is True
    assert result["signature_removed"] is True
    assert not (store / "manifest.json.sig").exists()
