"""The model_store role and the model_fetch module, on this machine against a loopback mirror.

A mirror tree under tmp_path holds the model ``tiny-r1`` at several revisions:
two good ones (signed manifests by a throwaway ed25519 key) and one per kind of
bad input (no manifest, unsigned, a corrupt shard, a missing shard, a size that
differs from the manifest). The publisher fixture serves the tree as files on
127.0.0.1 (tests/fixtures/publisher). ``playbooks/models.yml`` runs with a local
connection and ``model_store_root`` under tmp_path.

The good revision is installed first; every bad input must then fail with its
message while the store (everything but the staging folder) stays byte for byte
the same, which is checked with a digest of the whole tree. Needs root (the role
sets root ownership; the disk-full case mounts a small tmpfs). About 90 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from netns import ansible_bin, ensure_collection_link, run_module

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "publisher"))
sys.path.insert(0, str(REPO / ".collections"))

from control import serving  # noqa: E402

NAME = "tiny-r1"
REV_A = "a" * 40
REV_B = "b" * 40
REV_C = "c" * 40
BAD = {
    "no_manifest": "1" * 40,
    "unsigned": "2" * 40,
    "corrupt": "3" * 40,
    "missing": "4" * 40,
    "size": "5" * 40,
}
SHARDS = [f"model-0000{i}-of-00003.safetensors" for i in range(1, 4)]
SHARD_SIZE = 1 << 20

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the role sets root ownership; tmpfs needs root")


def write_model(folder, seed):
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    for shard in SHARDS:
        (folder / shard).write_bytes(rng.randbytes(SHARD_SIZE))
    (folder / "config.json").write_text(json.dumps({"model_type": "deepseek_v3", "seed": seed}) + "\n")


def write_manifest(folder, revision):
    from ansible_collections.enclave.llm.plugins.module_utils.models import manifest as lib
    from ansible_collections.enclave.llm.plugins.module_utils.models import manifest_io as io_lib

    observed = io_lib.hash_folder(str(folder))["observed"]
    manifest, problems = lib.build_manifest(
        NAME, "https://huggingface.co/enclave-lab/tiny-r1", revision, "MIT", "2026-01-01T00:00:00Z", observed
    )
    assert problems == []
    (folder / "manifest.json").write_text(lib.render_manifest(manifest))


def sign(gnupg, folder):
    subprocess.run(
        [
            *("gpg", "--homedir", str(gnupg), "--batch", "--yes", "--detach-sign"),
            *("--output", str(folder / "manifest.json.sig"), str(folder / "manifest.json")),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """``{url, tree, keyring}``: the loopback mirror with every revision, and its signing key."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed")
    ensure_collection_link()
    base = tmp_path_factory.mktemp("mirror")
    gnupg = base / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(gnupg), "--batch", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "model test <t@test.invalid>", "ed25519", "sign", "never"], check=True)
    keyring = base / "model-signing.gpg"
    keyring.write_bytes(subprocess.run([*gpg, "--export"], check=True, capture_output=True).stdout)
    tree = base / "tree"
    models = tree / "models" / NAME
    for seed, revision in enumerate([REV_A, REV_B, REV_C, *BAD.values()]):
        folder = models / revision
        write_model(folder, seed)
        if revision != BAD["no_manifest"]:
            write_manifest(folder, revision)
        if revision not in (BAD["no_manifest"], BAD["unsigned"]):
            sign(gnupg, folder)
    # Damage after the manifest was written and signed: the mirror itself is wrong.
    corrupt = models / BAD["corrupt"] / SHARDS[1]
    data = bytearray(corrupt.read_bytes())
    data[SHARD_SIZE // 2] ^= 0x01
    corrupt.write_bytes(bytes(data))
    (models / BAD["missing"] / SHARDS[2]).unlink()
    with open(models / BAD["size"] / SHARDS[0], "ab") as handle:
        handle.write(b"appended")
    # Not in the manifest: never fetched.
    (models / REV_A / "modeling_evil.py").write_text("import os\n")
    with serving(tree) as url:
        yield {"url": f"{url}/models/", "tree": tree, "keyring": keyring}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store") / "models"


def inventory(tmp_path):
    path = tmp_path / "hosts.yml"
    hosts = {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
    path.write_text(json.dumps({"llm_servers": {"hosts": hosts}}))
    return path


def play(tmp_path, mirror, root, revision, *extra, playbook="models.yml", **settings):
    """Run playbooks/PLAYBOOK on this machine; the CompletedProcess, with the recap's numbers in ``recap``."""
    variables = {
        "enclave_model_profile": "tiny-r1",
        "enclave_model_revision": revision,
        "model_store_root": str(root),
        "model_store_mirror_url": mirror["url"],
        "model_store_keyring": [str(mirror["keyring"])],
        "model_store_keyring_dir": str(Path(root).parent / "keys"),
        "model_store_fetch_timeout": 5,
        **settings,
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    command = [
        ansible_bin("ansible-playbook"),
        *("-i", str(inventory(tmp_path)), str(REPO / "playbooks" / playbook)),
        *("-e", f"@{tmp_path / 'vars.json'}", *extra),
    ]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", result.stdout)
    result.recap = {"ok": int(match[1]), "changed": int(match[2]), "failed": int(match[3])} if match else None
    return result


def tree_digest(root):
    """SHA-256 over every path, type, mode, owner, link target and file content under ``root``.

    Left out: the staging folder (a failed fetch keeps what arrived, to resume)
    and the incremental caches (bookkeeping of what a verification saw).
    """
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not (folder == str(root) and d == ".staging") and d != ".manifest-cache")
        for name in sorted(dirs + files):
            path = os.path.join(folder, name)
            st = os.lstat(path)
            digest.update(f"{os.path.relpath(path, root)} {st.st_mode:o} {st.st_uid} {st.st_gid}\n".encode())
            if os.path.islink(path):
                digest.update(os.readlink(path).encode())
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def modes(root):
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), root)] = (oct(st.st_mode & 0o7777), st.st_uid, st.st_gid)
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory, mirror, store):
    """The store with REV_A installed by a first run; that run's result."""
    result = play(tmp_path_factory.mktemp("install"), mirror, store, REV_A)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_first_run_installs_the_revision_read_only_and_points_current_at_it(installed, store):
    revision = store / NAME / REV_A
    assert os.readlink(store / NAME / "current") == REV_A
    entries = modes(revision)
    assert set(entries) == {*SHARDS, "config.json", "manifest.json", "manifest.json.sig"}
    assert {mode for mode, _uid, _gid in entries.values()} == {"0o444"}
    assert {(uid, gid) for _mode, uid, gid in entries.values()} == {(0, 0)}
    assert oct(revision.stat().st_mode & 0o7777) == "0o555"
    assert oct((store / ".staging").stat().st_mode & 0o7777) == "0o700"
    assert not (store / ".staging" / NAME / REV_A).exists()
    assert installed.recap["changed"] > 0


def test_a_second_run_changes_nothing_and_fetches_nothing(installed, mirror, store, tmp_path):
    before = tree_digest(store)
    result = play(tmp_path, mirror, store, REV_A)
    assert result.returncode == 0, result.stdout
    assert result.recap["changed"] == 0, result.stdout
    assert "Fetch the revision from the mirror" not in result.stdout
    check = play(tmp_path, mirror, store, REV_A, "--check")
    assert (check.returncode, check.recap["changed"]) == (0, 0), check.stdout
    assert tree_digest(store) == before


def test_check_mode_with_a_new_revision_reports_changes_and_makes_none(installed, mirror, store, tmp_path):
    before = tree_digest(store)
    result = play(tmp_path, mirror, store, REV_B, "--check")
    assert result.returncode == 0, result.stdout
    assert result.recap["changed"] > 0
    assert tree_digest(store) == before
    assert not (store / ".staging" / NAME / REV_B).exists()


def refused(tmp_path, mirror, store, revision, *fragments, root=None, playbook="models.yml", **settings):
    """Run with a bad input; assert the failure names every fragment and the store did not change."""
    before = tree_digest(store)
    result = play(tmp_path, mirror, root or store, revision, playbook=playbook, **settings)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for fragment in fragments:
        assert fragment in output, output
    assert tree_digest(store) == before
    assert os.readlink(store / NAME / "current") == REV_A
    return output


def test_a_missing_manifest_is_refused(installed, mirror, store, tmp_path):
    refused(tmp_path, mirror, store, BAD["no_manifest"], "manifest.json is missing", "playbooks/publish_model.yml")
    assert not (store / ".staging" / NAME / BAD["no_manifest"]).exists()


def test_an_unsigned_manifest_is_refused_when_a_signature_is_required(installed, mirror, store, tmp_path):
    refused(tmp_path, mirror, store, BAD["unsigned"], "the manifest is unsigned", "was not changed")
    assert not (store / ".staging" / NAME / BAD["unsigned"]).exists()


def test_a_corrupt_shard_is_refused(installed, mirror, store, tmp_path):
    refused(tmp_path, mirror, store, BAD["corrupt"], "1 corrupt", SHARDS[1], "The staged copy was removed")
    assert not (store / ".staging" / NAME / BAD["corrupt"]).exists()


def test_a_missing_shard_is_refused(installed, mirror, store, tmp_path):
    refused(tmp_path, mirror, store, BAD["missing"], f"{SHARDS[2]} is missing on the mirror (404)")


def test_a_size_that_differs_from_the_manifest_is_refused(installed, mirror, store, tmp_path):
    refused(tmp_path, mirror, store, BAD["size"], f"sent more than the {SHARD_SIZE} bytes the manifest lists")


def test_an_unreachable_mirror_is_refused(installed, mirror, store, tmp_path):
    closed = {**mirror, "url": "http://127.0.0.1:9/models/"}
    refused(tmp_path, closed, store, REV_B, "http://127.0.0.1:9/models/tiny-r1/" + REV_B, "is unreachable", "firewall")


def test_an_extra_file_in_the_installed_revision_is_refused(installed, mirror, store, tmp_path):
    planted = store / NAME / REV_A / "modeling_evil.py"
    os.chmod(store / NAME / REV_A, 0o755)
    planted.write_text("import os\n")
    os.chmod(store / NAME / REV_A, 0o555)
    try:
        refused(tmp_path, mirror, store, REV_A, "1 unexpected", "modeling_evil.py", "playbooks/repair-model.yml")
    finally:
        os.chmod(store / NAME / REV_A, 0o755)
        planted.unlink()
        os.chmod(store / NAME / REV_A, 0o555)


def flip_a_byte(path):
    """Corrupt ``path`` in place, keeping its size, mode and owner (as damage on disk would)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_repair_fetches_only_the_corrupt_file_and_keeps_current(installed, mirror, store, tmp_path):
    revision = store / NAME / REV_A
    before = tree_digest(store)
    flip_a_byte(revision / SHARDS[0])
    result = play(tmp_path, mirror, store, REV_A, playbook="repair-model.yml")
    assert result.returncode == 0, result.stdout
    assert "1 file(s) fetched" in result.stdout, result.stdout
    assert tree_digest(store) == before  # contents, modes and owners as installed; current unchanged
    evidence = list((store / ".staging" / NAME).glob(f"{REV_A}.damaged-*"))
    try:
        assert len(evidence) == 1, evidence
        assert (evidence[0] / SHARDS[0]).read_bytes() != (revision / SHARDS[0]).read_bytes()
        # The files that verified were linked into the repaired copy, not fetched or copied.
        assert (evidence[0] / SHARDS[1]).stat().st_ino == (revision / SHARDS[1]).stat().st_ino
    finally:
        for folder in evidence:
            shutil.rmtree(folder)


def test_the_repair_refuses_a_corrupt_mirror_copy_and_says_so(installed, mirror, store, tmp_path):
    installed_shard = store / NAME / REV_A / SHARDS[2]
    on_mirror = mirror["tree"] / "models" / NAME / REV_A / SHARDS[2]
    good = on_mirror.read_bytes()
    flip_a_byte(installed_shard)
    flip_a_byte(on_mirror)
    try:
        output = refused(
            tmp_path,
            mirror,
            store,
            REV_A,
            f"The mirror's copy of {NAME} at {REV_A} is corrupt: {SHARDS[2]}",
            "re-publish the revision on the mirror",
            "were not changed",
            playbook="repair-model.yml",
        )
        assert "1 file(s) fetched" not in output
        assert not (store / ".staging" / NAME / REV_A).exists()
    finally:
        on_mirror.write_bytes(good)
        installed_shard.write_bytes(good)


def test_an_unknown_profile_is_refused(installed, mirror, store, tmp_path):
    refused(tmp_path, mirror, store, REV_B, "enclave_model_profile 'gpt-9' is not a known model profile",
            enclave_model_profile="gpt-9")  # fmt: skip


def test_a_branch_name_is_refused(installed, mirror, store, tmp_path):
    output = refused(tmp_path, mirror, store, "main", "enclave_model_revision: revision 'main' is not pinned")
    assert "Fetch the revision" not in output


def test_a_store_too_small_for_the_revision_is_refused(installed, mirror, store, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "enclave-test-small", str(small)], check=True)
    try:
        output = refused(tmp_path, mirror, store, REV_B, "free space", "bytes) free", root=small)
        assert re.search(r"needs 3\.0 MiB \(\d+ bytes\) more", output), output
        assert not (small / NAME / REV_B).exists()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_rollback_and_pruning_keep_the_previous_revisions(installed, mirror, store, tmp_path):
    for revision in (REV_B, REV_C):
        result = play(tmp_path, mirror, store, revision)
        assert result.returncode == 0, result.stdout
        assert os.readlink(store / NAME / "current") == revision
    # Back to A: already installed, verified, no download; the pointer moves.
    result = play(tmp_path, mirror, store, REV_A, "-e", '{"model_store_keep_revisions": 1}')
    assert result.returncode == 0, result.stdout
    assert "Fetch the revision from the mirror" not in result.stdout
    assert os.readlink(store / NAME / "current") == REV_A
    kept = sorted(p.name for p in (store / NAME).iterdir() if len(p.name) == 40)
    assert kept == sorted([REV_A, REV_C])  # B, the oldest other, was removed
    assert not (store / NAME / ".manifest-cache" / f"{REV_B}.json").exists()


# --- model_fetch on its own: resume, a server that ignores ranges, redirects off the host --------


def fetch(url, dest, **changes):
    args = {"mirror": url, "name": NAME, "revision": REV_A, "dest": str(dest), "attempts": 1, "timeout": 5}
    return run_module("model_fetch", {**args, **changes}, timeout=120)


def test_an_interrupted_fetch_resumes_where_it_stopped(mirror, tmp_path):
    dest = tmp_path / "staging" / REV_A
    total = 3 * SHARD_SIZE
    with serving(mirror["tree"], "--fail-after", total // 2) as url:
        first = fetch(f"{url}/models/", dest)
    assert first.get("failed"), first
    assert "resumed by the next run" in first["msg"]
    kept = sum(p.stat().st_size for p in (tmp_path / "staging" / f"{REV_A}.partial").rglob("*") if p.is_file())
    assert kept > 0
    with serving(mirror["tree"]) as url:
        second = fetch(f"{url}/models/", dest)
    assert not second.get("failed"), second
    assert second["files_resumed"] >= 1
    assert second["bytes_transferred"] + second["bytes_reused"] == second["bytes_total"]
    for shard in SHARDS:
        assert (dest / shard).read_bytes() == (mirror["tree"] / "models" / NAME / REV_A / shard).read_bytes()
    assert not (dest / "modeling_evil.py").exists()  # only what the manifest lists


def test_a_server_that_ignores_the_range_gets_the_whole_file_again(mirror, tmp_path):
    dest = tmp_path / REV_A
    partial = tmp_path / f"{REV_A}.partial"
    partial.mkdir()
    (partial / SHARDS[0]).write_bytes(b"\0" * 1000)  # wrong bytes: appending to them would corrupt the file
    with serving(mirror["tree"], "--ignore-range") as url:
        result = fetch(f"{url}/models/", dest)
    assert not result.get("failed"), result
    assert len(result["restarted"]) == 1
    assert (dest / SHARDS[0]).read_bytes() == (mirror["tree"] / "models" / NAME / REV_A / SHARDS[0]).read_bytes()


def test_a_redirect_off_the_mirror_host_is_refused(mirror, tmp_path):
    with serving(mirror["tree"], "--redirect-off-host") as url:
        result = fetch(f"{url}/models/", tmp_path / REV_A)
    assert result.get("failed"), result
    assert "off the mirror host" in result["msg"]
    assert "192.0.2.1" in result["msg"]


def test_a_current_folder_placed_by_hand_is_refused_and_kept(mirror, tmp_path):
    root = tmp_path / "models"
    placed = root / NAME / "current"
    placed.mkdir(parents=True)
    (placed / "config.json").write_text("{}\n")
    result = play(tmp_path, mirror, root, REV_A)
    assert result.returncode != 0
    assert f"{placed} is a folder, not the link to a verified revision" in result.stdout
    assert (placed / "config.json").read_text() == "{}\n"
    assert not (root / NAME / REV_A).exists()


def test_an_https_mirror_is_trusted_only_through_the_given_ca(mirror, tmp_path):
    cert, key = tmp_path / "mirror.crt", tmp_path / "mirror.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    with serving(mirror["tree"], "--tls-cert", cert, "--tls-key", key) as url:
        base = url.replace("http://", "https://") + "/models/"
        untrusted = fetch(base, tmp_path / "a" / REV_A)
        trusted = fetch(base, tmp_path / "b" / REV_A, ca_file=str(cert))
    assert untrusted.get("failed"), untrusted
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted["msg"]
    assert "the CA bundle" in untrusted["msg"]
    assert not trusted.get("failed"), trusted
    assert trusted["files_fetched"] == len(SHARDS) + 1
