#!/usr/bin/python
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module: create or verify the SHA-256 manifest of a model folder."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_manifest
short_description: Create or verify the SHA-256 manifest of a model folder, hashing in parallel
version_added: 0.1.0
description:
  - A model folder (C(models/NAME/REVISION/) on the mirror, C(/srv/models/NAME/REVISION/) on the host)
    holds the files of one pinned revision and a C(manifest.json) listing every file with its size and
    SHA-256, plus the model name, source repository, pinned commit, licence and creation time.
    The format is described in C(docs/mirror.md), section "Manifest".
  - O(state=verified) checks the folder against its manifest and fails, naming the files, when any file
    is missing, unexpected (not in the manifest), of the wrong size, corrupt (SHA-256 differs), not a regular
    file, or unreadable. Each kind is returned as its own list, with counts.
  - O(state=present) hashes every file of the folder and writes its manifest, or leaves it alone when
    only the creation time would change. Hashes the publisher lists (O(publisher_sha256)) must match
    the files; those files are marked C(publisher), the others C(mirror).
  - Files are hashed in parallel, one file per worker thread (one worker per CPU by default), biggest
    first; hashlib releases the GIL while it hashes, so the threads keep every core busy. Each file is
    mapped read-only under a read lease and hashed in 8 MiB slices with the kernel reading ahead (a file
    that cannot be leased is read instead); another process that opens a file for writing while it is
    hashed makes it C(unreadable), never crashes the module.
  - A detached OpenPGP signature C(manifest.json.sig) is checked with C(gpg --verify) against the
    keyring files given, in a throwaway gpg home directory (O(signature)).
author:
  - llm-enclave maintainers (@llm-enclave)
requirements:
  - Python 3.9 or later on the managed host
  - C(gpg) on the managed host when a signature is checked
attributes:
  check_mode:
    description:
      - O(state=verified) runs the whole verification (it only reads) but writes no cache.
      - O(state=present) hashes the folder and reports the manifest it would write, writing nothing.
    support: full
  diff_mode:
    description: With O(state=present), the manifest before and after.
    support: full
options:
  path:
    description: The model folder (the manifest is C(manifest.json) in it).
    type: path
    required: true
  state:
    description:
      - C(verified) checks the folder against its manifest; C(present) creates or updates the manifest.
    type: str
    choices: [verified, present]
    default: verified
  name:
    description:
      - The model's name (letters, digits, C(.), C(_), C(-)). Required with O(state=present);
        with O(state=verified), when set, the manifest must name the same model.
    type: str
  revision:
    description:
      - The pinned revision, a full 40-hex commit id of the source repository; a branch or tag name is
        refused. Required with O(state=present); with O(state=verified), when set, the manifest must be
        for this revision.
    type: str
  repository:
    description: The source repository, e.g. C(https://huggingface.co/deepseek-ai/DeepSeek-R1). O(state=present) only.
    type: str
  licence:
    description: The model's licence, as an SPDX identifier where there is one (C(MIT)). O(state=present) only.
    type: str
  created:
    description:
      - The creation time written into a new manifest, C(YYYY-MM-DDTHH:MM:SSZ) in UTC. Default is now;
        an unchanged manifest keeps its own. O(state=present) only.
    type: str
  publisher_sha256:
    description:
      - SHA-256 per relative path as the publisher lists them (Hugging Face lists one for every LFS file).
        Each must equal the file's hash, and each path must exist, or nothing is written.
        O(state=present) only.
    type: dict
    default: {}
  mode:
    description:
      - C(full) hashes every file and neither reads nor writes the cache; use it for audits.
      - C(incremental) hashes only files whose size, mtime, ctime, inode or device changed since the cache
        was written and takes the others' SHA-256 from the cache, then rewrites the cache (not in check
        mode). It trusts the file system's metadata, so a change that does not pass through the file system
        (a failing disk, a write to the block device, an edit of the disk from another system) keeps the
        old metadata and is only found by C(full).
    type: str
    choices: [full, incremental]
    default: full
  cache_path:
    description:
      - The incremental cache file. Default C(PATH/../.manifest-cache/NAME.json), where NAME is the last
        component of the resolved O(path).
      - It is used only when the file is owned by the user the module runs as (root) with mode C(0600)
        in a folder of mode C(0700); otherwise every file is hashed and a warning says why. It is written
        atomically (temporary file, fsync, rename).
    type: path
  signature:
    description:
      - C(required) fails unless C(manifest.json.sig) exists and is a good signature by a key in O(keyring).
      - C(optional) checks the signature when the file exists and O(keyring) is set (a bad signature fails);
        a missing signature is reported, not an error.
      - C(ignore) does not look at the signature.
    type: str
    choices: [required, optional, ignore]
    default: optional
  keyring:
    description:
      - OpenPGP public key files (binary or armored) on the managed host whose keys may sign the manifest.
        Required when O(signature=required).
    type: list
    elements: path
  signature_fingerprints:
    description:
      - When set, the signing key's primary fingerprint (40 hex digits) must be one of these, even if
        O(keyring) holds other keys.
    type: list
    elements: str
    default: []
  workers:
    description: Files hashed at the same time; C(0) means one per CPU the module may run on.
    type: int
    default: 0
  progress_log:
    description:
      - A file to which one line per hashed file is appended (files done, GiB done, GiB/s, time left),
        so an operator can follow a long run with C(tail -f). Ansible shows a module's result only when
        it ends; this file is the way to watch a run of several minutes.
    type: path
notes:
  - The module reports per-file sizes and times and the total GiB/s in RV(timings) and RV(gib_per_s).
  - O(state=verified) never reports a change; writing the incremental cache is bookkeeping, reported in
    RV(cache).
  - When O(state=present) rewrites the manifest, a C(manifest.json.sig) next to it no longer matches and is
    removed (RV(signature_removed)); sign the new manifest again.
seealso:
  - name: Hugging Face Hub API
    description: The revision's commit id and the SHA-256 of each LFS file (C(lfs.sha256) of each sibling).
    link: https://huggingface.co/docs/hub/api
"""

EXAMPLES = r"""
- name: Verify a model folder in full (audit), with a required signature
  enclave.llm.model_manifest:
    path: /srv/models/deepseek-r1/56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad
    revision: 56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad
    signature: required
    keyring: [/etc/enclave/keys/models.asc]
    progress_log: /var/log/enclave/model-verify.log

- name: Re-verify quickly on every run, re-hashing only files whose metadata changed
  enclave.llm.model_manifest:
    path: /srv/models/deepseek-r1/56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad
    mode: incremental

- name: Write the manifest of a downloaded revision on the staging host
  enclave.llm.model_manifest:
    path: /srv/mirror/models/deepseek-r1/56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad
    state: present
    name: deepseek-r1
    repository: https://huggingface.co/deepseek-ai/DeepSeek-R1
    revision: 56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad
    licence: MIT
    publisher_sha256:
      model-00001-of-000163.safetensors: 8a5a6e2c0f0b1c9e6d6f1f3e5b2a4c7d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b
"""

RETURN = r"""
folder:
  description: The model folder, resolved (O(path) after symlinks).
  returned: always
  type: str
manifest_path:
  description: The manifest file.
  returned: always
  type: str
ok:
  description: True when every file verified (O(state=verified)).
  returned: when O(state=verified) and the manifest could be read
  type: bool
missing:
  description: Files the manifest lists that are not in the folder.
  returned: when O(state=verified) and the manifest could be read
  type: list
  elements: str
extra:
  description: Files in the folder the manifest does not list (unexpected).
  returned: when O(state=verified) and the manifest could be read
  type: list
  elements: str
size_mismatch:
  description: Files whose size differs from the manifest's (not hashed).
  returned: when O(state=verified) and the manifest could be read
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
    expected:
      description: The size in the manifest, in bytes.
      type: int
    actual:
      description: The size on disk, in bytes.
      type: int
corrupt:
  description: Files of the right size whose SHA-256 differs from the manifest's.
  returned: when O(state=verified) and the manifest could be read
  type: list
  elements: str
not_regular:
  description: Files the manifest lists that are a symlink or special file in the folder.
  returned: when O(state=verified) and the manifest could be read
  type: list
  elements: str
unreadable:
  description: Files that could not be read, or changed while being hashed, with the reason.
  returned: when O(state=verified) and the manifest could be read
  type: list
  elements: str
counts:
  description: The length of each of the lists above.
  returned: when O(state=verified) and the manifest could be read
  type: dict
  sample: {missing: 0, extra: 1, size_mismatch: 0, corrupt: 1, not_regular: 0, unreadable: 0}
files_total:
  description: Files the manifest lists (O(state=verified)) or the folder holds (O(state=present)).
  returned: after hashing
  type: int
bytes_total:
  description: Their size in bytes.
  returned: after hashing
  type: int
hashed_files:
  description: Files hashed in this run.
  returned: after hashing
  type: int
hashed_bytes:
  description: Bytes hashed in this run.
  returned: after hashing
  type: int
reused_files:
  description: Files whose SHA-256 came from the incremental cache.
  returned: after hashing
  type: int
hash_seconds:
  description: Wall-clock seconds spent hashing.
  returned: after hashing
  type: float
gib_per_s:
  description: Bytes hashed per second of hashing, in GiB/s.
  returned: after hashing
  type: float
seconds:
  description: Wall-clock seconds for listing, the cache and hashing.
  returned: after hashing
  type: float
workers:
  description: Worker threads used.
  returned: after hashing
  type: int
timings:
  description: One entry per hashed file, in path order.
  returned: after hashing
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
    size:
      description: Bytes.
      type: int
    seconds:
      description: Seconds its hashing took.
      type: float
    gib_per_s:
      description: Its rate.
      type: float
cache:
  description: What happened to the incremental cache.
  returned: after hashing
  type: dict
  contains:
    path:
      description: The cache file (null in full mode).
      type: str
    used:
      description: Whether digests were taken from it.
      type: bool
    written:
      description: Whether it was rewritten.
      type: bool
    note:
      description: Why it was not used or not written, if so.
      type: str
signature:
  description: The signature check.
  returned: when O(state=verified) and the manifest could be read
  type: dict
  contains:
    status:
      description: C(verified), C(absent), C(unchecked) (present, but no keyring given) or C(ignored).
      type: str
    fingerprint:
      description: The signing (sub)key's fingerprint.
      type: str
    primary_fingerprint:
      description: The signing key's primary fingerprint.
      type: str
manifest:
  description: The manifest as written, or as it would be written in check mode.
  returned: when O(state=present) and it could be built
  type: dict
written:
  description: Whether the manifest file was written.
  returned: when O(state=present)
  type: bool
signature_removed:
  description: Whether a stale C(manifest.json.sig) was removed.
  returned: when O(state=present)
  type: bool
commands:
  description: The external commands run (gpg), in order.
  returned: always
  type: list
  elements: str
"""

import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.models import manifest as lib  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.models import manifest_io as io_lib  # noqa: E402


class Gpg:
    """Runs gpg in a throwaway home directory and records the commands."""

    def __init__(self, module, commands):
        self.module = module
        self.commands = commands
        self.binary = module.get_bin_path("gpg", required=True)

    def run(self, argv):
        self.commands.append(shlex.join(argv))
        return self.module.run_command(argv, environ_update={"LC_ALL": "C"})

    def verify(self, keyring, manifest_bytes, signature_bytes):
        """``(status dict, error)``; the manifest bytes verified are the ones parsed."""
        home = tempfile.mkdtemp(prefix="enclave-gpg-")
        try:
            base = [self.binary, "--homedir", home, "--batch", "--no-tty", "--no-autostart"]
            rc, out, err = self.run([*base, "--quiet", "--import", "--", *keyring])
            if rc != 0:
                return None, (
                    f"gpg could not read the keyring {', '.join(keyring)} (rc {rc}: {(err or out).strip()[:300]}): "
                    "give OpenPGP public key files (binary or armored)."
                )
            data = os.path.join(home, lib.MANIFEST_NAME)
            signature = os.path.join(home, lib.SIGNATURE_NAME)
            with open(data, "wb") as handle:
                handle.write(manifest_bytes)
            with open(signature, "wb") as handle:
                handle.write(signature_bytes)
            rc, out, err = self.run([*base, "--status-fd", "1", "--trust-model", "always", "--verify", signature, data])
            status = lib.parse_gpg_status(out)
            if rc != 0 and status["valid"]:
                status = {**status, "valid": False, "reason": f"gpg failed (rc {rc}): {err.strip()[:300]}"}
            return status, ""
        finally:
            shutil.rmtree(home, ignore_errors=True)


def check_signature(module, folder, text, result):
    """The signature report; fails the module when the signature must be good and is not."""
    params = module.params
    policy = params["signature"]
    none = {"fingerprint": "", "primary_fingerprint": ""}
    if policy == "ignore":
        return {"status": "ignored", **none}
    sig_path = os.path.join(folder, lib.SIGNATURE_NAME)
    manifest_path = result["manifest_path"]
    if not os.path.exists(sig_path):
        if policy == "required":
            module.fail_json(
                msg=f"{sig_path} is missing and signature=required: the manifest is unsigned. Sign it on the "
                "staging host (gpg --detach-sign --output manifest.json.sig manifest.json) and publish the "
                "signature with it (docs/mirror.md).",
                **result,
            )
        return {"status": "absent", **none}
    if not params["keyring"]:
        if policy == "required":
            module.fail_json(msg="signature=required needs keyring: the mirror's signing key file(s).", **result)
        module.warn(f"{sig_path} exists but was not checked: set keyring to the mirror's signing key(s).")
        return {"status": "unchecked", **none}
    try:
        with open(sig_path, "rb") as handle:
            signature_bytes = handle.read()
    except OSError as exc:
        module.fail_json(msg=f"{sig_path} cannot be read ({exc.strerror}).", **result)
    status, error = Gpg(module, result["commands"]).verify(params["keyring"], text.encode("utf-8"), signature_bytes)
    if error:
        module.fail_json(msg=error, **result)
    report = {key: status[key] for key in ("fingerprint", "primary_fingerprint")}
    if not status["valid"]:
        module.fail_json(
            msg=f"{sig_path} does not verify {manifest_path}: {status['reason']}. Do not use this folder; "
            "fetch the model and its manifest again from the mirror.",
            signature={"status": "bad", **report},
            **result,
        )
    pinned = [lib.normalise_fingerprint(f) for f in params["signature_fingerprints"]]
    if pinned and status["primary_fingerprint"] not in pinned:
        module.fail_json(
            msg=f"{sig_path} is a good signature by key {status['primary_fingerprint']}, which is not one of "
            f"signature_fingerprints ({', '.join(pinned)}).",
            signature={"status": "bad", **report},
            **result,
        )
    return {"status": "verified", **report}


def check_folder(module, folder):
    if not os.path.isdir(folder):
        what = "does not exist" if not os.path.lexists(folder) else "is not a folder"
        module.fail_json(msg=f"path {folder} {what}: give the model folder (models/NAME/REVISION).", folder=folder)


def run_verified(module, folder, result):
    params = module.params
    manifest_path = os.path.join(folder, lib.MANIFEST_NAME)
    text, manifest, error = io_lib.load_manifest(folder)
    if error:
        module.fail_json(msg=error, **result)
    if params["revision"] is not None:
        problem = lib.revision_problem(params["revision"])
        if problem:
            module.fail_json(msg=f"revision: {problem}", **result)
        if params["revision"].lower() != manifest["revision"].lower():
            module.fail_json(
                msg=f"{manifest_path} is for revision {manifest['revision']}, not {params['revision'].lower()}: "
                "the folder holds another revision of the model.",
                **result,
            )
    if params["name"] is not None and params["name"] != manifest["name"]:
        module.fail_json(msg=f"{manifest_path} is for model {manifest['name']!r}, not {params['name']!r}.", **result)
    result["signature"] = check_signature(module, folder, text, result)
    result["name"] = manifest["name"]
    result["revision"] = manifest["revision"]
    try:
        report = io_lib.verify_folder(
            folder,
            manifest,
            mode=params["mode"],
            cache_path=params["cache_path"],
            workers=params["workers"],
            progress_log=params["progress_log"],
            write=not module.check_mode,
        )
    except OSError as exc:
        module.fail_json(msg=f"verifying {folder} failed: {exc}", **result)
    result.update(report)
    warn_cache(module, report["cache"])
    message = lib.findings_message(folder, report)
    if message:
        module.fail_json(msg=message, **result)


def warn_cache(module, cache):
    if cache["path"] and cache["note"] and cache["note"] != "no cache yet":
        module.warn(f"incremental cache: {cache['note']}")


def run_present(module, folder, result):
    params = module.params
    manifest_path = result["manifest_path"]
    problem = lib.revision_problem(params["revision"])
    if problem:
        module.fail_json(msg=f"revision: {problem}", **result)
    try:
        report = io_lib.hash_folder(
            folder,
            mode=params["mode"],
            cache_path=params["cache_path"],
            workers=params["workers"],
            progress_log=params["progress_log"],
            write=not module.check_mode,
        )
    except OSError as exc:
        module.fail_json(msg=f"hashing {folder} failed: {exc}", **result)
    observed = report.pop("observed")
    not_regular, unreadable = report.pop("not_regular"), report.pop("unreadable")
    result.update(report)
    result["files_total"] = len(observed) + len(unreadable)
    result["bytes_total"] = sum(entry["size"] for entry in observed.values())
    warn_cache(module, report["cache"])
    if not_regular or unreadable:
        parts = []
        if not_regular:
            parts.append(
                f"not regular files (symlinks or special files; copy the real files in): {', '.join(not_regular)}"
            )
        if unreadable:
            parts.append(f"unreadable: {', '.join(unreadable)}")
        module.fail_json(msg=f"cannot write a manifest for {folder}: {'; '.join(parts)}.", **result)
    if not observed:
        module.fail_json(msg=f"{folder} holds no files: there is nothing to write a manifest for.", **result)

    old_text, old, _error = io_lib.load_manifest(folder)
    created = params["created"] or (old["created"] if old else None) or lib.utc_now()
    manifest, problems = lib.build_manifest(
        params["name"],
        params["repository"],
        params["revision"],
        params["licence"],
        created,
        observed,
        params["publisher_sha256"],
    )
    if problems:
        module.fail_json(
            msg=f"cannot write a manifest for {folder}: {'; '.join(problems)}.", problems=problems, **result
        )
    if old and not lib.same_content(old, manifest):
        manifest["created"] = params["created"] or lib.utc_now()
    text = lib.render_manifest(manifest)
    result["manifest"] = manifest
    result["changed"] = old is None or text != old_text
    result["diff"] = {
        "before": old_text or "",
        "after": text,
        "before_header": manifest_path,
        "after_header": manifest_path,
    }
    sig_path = os.path.join(folder, lib.SIGNATURE_NAME)
    if result["changed"] and not module.check_mode:
        try:
            io_lib.write_atomic(manifest_path, text)
            result["written"] = True
            if os.path.lexists(sig_path):
                os.unlink(sig_path)
                result["signature_removed"] = True
        except OSError as exc:
            module.fail_json(msg=f"writing {manifest_path} failed: {exc}", **result)
    if result["changed"] and os.path.lexists(sig_path) and module.check_mode:
        result["signature_removed"] = True


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["verified", "present"], "default": "verified"},
            "name": {"type": "str"},
            "revision": {"type": "str"},
            "repository": {"type": "str"},
            "licence": {"type": "str"},
            "created": {"type": "str"},
            "publisher_sha256": {"type": "dict", "default": {}},
            "mode": {"type": "str", "choices": list(lib.MODES), "default": "full"},
            "cache_path": {"type": "path"},
            "signature": {"type": "str", "choices": list(lib.SIGNATURE_CHOICES), "default": "optional"},
            "keyring": {"type": "list", "elements": "path", "no_log": False},
            "signature_fingerprints": {"type": "list", "elements": "str", "default": []},
            "workers": {"type": "int", "default": 0},
            "progress_log": {"type": "path"},
        },
        required_if=[
            ("state", "present", ["name", "repository", "revision", "licence"]),
            ("signature", "required", ["keyring"]),
        ],
        supports_check_mode=True,
    )
    params = module.params
    folder = os.path.realpath(params["path"])
    result = {
        "changed": False,
        "folder": folder,
        "manifest_path": os.path.join(folder, lib.MANIFEST_NAME),
        "commands": [],
    }
    if params["workers"] < 0:
        module.fail_json(msg="workers must be 0 (one per CPU) or a positive number.", **result)
    bad = [f for f in params["signature_fingerprints"] if not lib.normalise_fingerprint(f)]
    if bad:
        module.fail_json(
            msg=f"signature_fingerprints: {', '.join(map(repr, bad))} is not a full 40-hex-digit primary key "
            "fingerprint (the fpr line after pub in `gpg --show-keys --with-colons FILE`).",
            **result,
        )
    check_folder(module, folder)
    if params["progress_log"]:
        try:
            io_lib.append_log(
                params["progress_log"], f"model_manifest {folder}: state={params['state']} mode={params['mode']}"
            )
        except OSError as exc:
            module.fail_json(msg=f"progress_log {params['progress_log']} cannot be written: {exc.strerror}.", **result)
    if params["state"] == "present":
        result.update({"written": False, "signature_removed": False})
        run_present(module, folder, result)
    else:
        run_verified(module, folder, result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
