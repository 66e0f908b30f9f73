"""model_store: the pinned revision is installed read-only, verified, and served through `current`.

The revision's files are compared with its manifest here with sha256sum and
find, independently of the model_manifest module that installed them, and the
manifest's signature is checked with gpgv against the key the role installed.
The service account reads the weights (the control) but cannot change them.
ENCLAVE_MODEL_STORE_ROOT checks a store installed under another root.
"""

from __future__ import annotations

import json
import os
import re

import pytest


@pytest.fixture
def store(enclave_vars) -> dict:
    root = os.environ.get("ENCLAVE_MODEL_STORE_ROOT") or enclave_vars.get("model_store_root", "/srv/models")
    revision = enclave_vars["enclave_model_revision"].lower()
    name = "tiny-r1" if enclave_vars.get("enclave_model_profile") == "tiny-r1" else None
    if name is None:
        pytest.skip("the store's folder name is checked here for the lab's tiny-r1 profile only")
    base = f"{root}/{name}"
    return {"root": root, "base": base, "revision": revision, "path": f"{base}/{revision}"}


@pytest.fixture
def account(enclave_vars) -> str:
    return enclave_vars.get("podman_rootless_user", "enclave-llm")


def test_ENC_MS_001_revisions_are_stored_by_name_and_full_commit(host, store):
    """<root>/<name>/ holds only full-commit revision folders, the current link and the manifest cache."""
    listing = host.check_output("find %s -mindepth 1 -maxdepth 1 -printf '%%y %%f\\n'", store["base"]).splitlines()
    assert f"d {store['revision']}" in listing, listing
    for line in listing:
        kind, name = line.split(" ", 1)
        expected = (kind == "d" and re.fullmatch(r"[0-9a-f]{40}", name)) or (kind, name) in {
            ("l", "current"),
            ("d", ".manifest-cache"),
        }
        assert expected, f"{store['base']}/{name} is not a revision the store manages ({kind})"


def test_ENC_MS_003_current_points_at_the_pinned_revision(host, store):
    current = host.file(f"{store['base']}/current")
    assert current.is_symlink
    assert current.linked_to == store["path"]


def test_ENC_MS_002_the_revision_is_root_owned_and_read_only(host, store):
    listing = host.check_output("find %s -printf '%%y %%m %%u %%g %%P\\n'", store["path"]).splitlines()
    assert listing, f"{store['path']} is empty"
    for line in listing:
        kind, mode, user, group = line.split(" ", 4)[:4]
        assert (user, group) == ("root", "root"), line
        assert mode == ("555" if kind == "d" else "444"), line
        assert kind in ("d", "f"), line
    for folder, mode in ((store["root"], "755"), (store["base"], "755"), (f"{store['root']}/.staging", "700")):
        info = host.file(folder)
        if info.exists:
            assert (info.user, oct(info.mode)[2:]) == ("root", mode), folder


def test_ENC_MS_004_the_files_match_the_manifest_in_full(host, store):
    manifest = json.loads(host.file(f"{store['path']}/manifest.json").content_string)
    assert manifest["revision"] == store["revision"]
    listed = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    found = host.check_output("cd %s && find . -type f -printf '%%P\\n'", store["path"]).splitlines()
    assert sorted(found) == sorted([*listed, "manifest.json", "manifest.json.sig"])
    paths = sorted(listed)
    sums = host.check_output("cd %s && sha256sum -- " + " ".join(["%s"] * len(paths)), store["path"], *paths)
    actual = {line[66:]: line[:64] for line in sums.splitlines()}
    assert actual == listed


def test_ENC_MS_005_the_manifest_signature_verifies_with_the_installed_key(host, store, enclave_vars):
    keys_dir = enclave_vars.get("model_store_keyring_dir", "/etc/enclave/model-keys")
    keys = host.check_output("find %s -maxdepth 1 -type f", keys_dir).split()
    assert keys, f"no manifest-signing key in {keys_dir}"
    args = " ".join(f"--keyring {key}" for key in keys)
    result = host.run(f"gpgv {args} %s %s", f"{store['path']}/manifest.json.sig", f"{store['path']}/manifest.json")
    assert result.rc == 0, result.stderr
    assert re.search(r"Good signature", result.stderr)


@pytest.mark.mutates_host
def test_ENC_MS_002_the_service_account_reads_but_cannot_write_the_weights(host, store, account):
    shard = host.check_output("find %s -name '*.safetensors' -print -quit", store["path"])
    read = host.run("runuser -u %s -- head -c 16 %s", account, shard)
    assert read.rc == 0, read.stderr  # the control: the account can read the weights
    for attempt in (
        ["runuser", "-u", account, "--", "sh", "-c", f"echo x >> {shard}"],
        ["runuser", "-u", account, "--", "touch", f"{store['path']}/planted"],
        ["runuser", "-u", account, "--", "ln", "-sfn", "/tmp", f"{store['base']}/current"],
    ):
        result = host.run(" ".join(["%s"] * len(attempt)), *attempt)
        assert result.rc != 0, attempt
        assert "Permission denied" in result.stderr or "Read-only" in result.stderr, result.stderr
    assert host.file(f"{store['base']}/current").linked_to == store["path"]
