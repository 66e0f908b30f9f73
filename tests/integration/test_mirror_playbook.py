"""playbooks/publish_model.yml on this machine, downloading from the publisher fixture on 127.0.0.1.

A small model folder (two LFS shards, a config) is served by
tests/fixtures/publisher as ``enclave-test/Tiny-Model`` at its content-derived
commit; the playbook publishes it into a mirror folder under tmp_path with a
manifest signed by a throwaway key. A publisher hash that does not match the
download, and a branch name instead of a commit, are refused with nothing
written to the mirror. No root needed; about 30 s.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from netns import ansible_bin, ensure_collection_link

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "publisher"))

from control import revision_of, serving  # noqa: E402

REPOSITORY = "enclave-test/Tiny-Model"
SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


@pytest.fixture(scope="module")
def publisher(tmp_path_factory):
    """``{folder, revision, gnupg, fingerprint}``: the model the fixture serves and a signing key."""
    if shutil.which("gpg") is None or shutil.which("rsync") is None:
        pytest.skip("gpg and rsync are needed")
    ensure_collection_link()
    base = tmp_path_factory.mktemp("publisher")
    folder = base / "model"
    folder.mkdir()
    rng = random.Random(7)
    for shard in SHARDS:
        (folder / shard).write_bytes(rng.randbytes(1 << 20))
    (folder / "config.json").write_text('{"model_type": "deepseek_v3"}\n')
    gnupg = base / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(gnupg), "--batch", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "mirror test <m@test.invalid>", "ed25519", "sign", "never"], check=True)
    keyring = base / "keyring.gpg"
    keyring.write_bytes(subprocess.run([*gpg, "--export"], check=True, capture_output=True).stdout)
    return {"folder": folder, "revision": revision_of(folder, REPOSITORY), "gnupg": gnupg, "keyring": keyring}


def publish(tmp_path, endpoint, revision, gnupg):
    inventory = tmp_path / "hosts.yml"
    hosts = {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
    inventory.write_text(json.dumps({"staging": {"hosts": hosts}}))
    variables = {
        "mirror_model_repository": REPOSITORY,
        "mirror_model_revision": revision,
        "mirror_publisher_endpoint": endpoint,
        "mirror_work_dir": str(tmp_path / "work"),
        "mirror_models_dest": str(tmp_path / "mirror" / "models"),
        "mirror_signing_key": "m@test.invalid",
        "mirror_gnupghome": str(gnupg),
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    command = [ansible_bin("ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / "publish_model.yml")]
    return subprocess.run(
        [*command, "-e", f"@{tmp_path / 'vars.json'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_a_pinned_revision_is_published_with_a_signed_manifest(publisher, tmp_path):
    with serving(publisher["folder"], "--repo", REPOSITORY, "--licence", "mit") as endpoint:
        result = publish(tmp_path, endpoint, publisher["revision"], publisher["gnupg"])
        assert result.returncode == 0, result.stdout + result.stderr
        again = publish(tmp_path, endpoint, publisher["revision"], publisher["gnupg"])
    assert again.returncode == 0, again.stdout
    assert "changed=0" in again.stdout, again.stdout
    published = tmp_path / "mirror" / "models" / "tiny-model" / publisher["revision"]
    assert sorted(p.name for p in published.iterdir()) == sorted(
        [*SHARDS, "config.json", "manifest.json", "manifest.json.sig"]
    )
    manifest = json.loads((published / "manifest.json").read_text())
    assert manifest["revision"] == publisher["revision"]
    assert manifest["licence"] == "mit"
    assert manifest["repository"].endswith("/" + REPOSITORY)
    sources = {entry["path"]: entry["sha256_source"] for entry in manifest["files"]}
    assert sources == {SHARDS[0]: "publisher", SHARDS[1]: "publisher", "config.json": "mirror"}
    verify = subprocess.run(
        [
            *("gpgv", "--keyring", str(publisher["keyring"])),
            *(str(published / "manifest.json.sig"), str(published / "manifest.json")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


def test_a_publisher_hash_mismatch_writes_nothing_to_the_mirror(publisher, tmp_path):
    with serving(publisher["folder"], "--repo", REPOSITORY, "--wrong-sha256", SHARDS[1]) as endpoint:
        result = publish(tmp_path, endpoint, publisher["revision"], publisher["gnupg"])
    assert result.returncode != 0
    assert f"{SHARDS[1]}: sha256" in result.stdout
    assert "differs from the publisher's" in result.stdout
    assert not (tmp_path / "mirror").exists()


def test_a_branch_name_is_refused_before_any_download(publisher, tmp_path):
    with serving(publisher["folder"], "--repo", REPOSITORY) as endpoint:
        result = publish(tmp_path, endpoint, "main", publisher["gnupg"])
    assert result.returncode != 0
    assert "mirror_model_revision: revision 'main' is not pinned" in result.stdout
    assert not (tmp_path / "work").exists()
    assert not (tmp_path / "mirror").exists()
