#!/usr/bin/python
# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Ansible module: fetch a model revision from the mirror (or a publisher) into a staging folder."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: model_fetch
short_description: Fetch a pinned model revision into a staging folder, in parallel, resuming interrupted transfers
version_added: 0.1.0
description:
  - With O(mirror), reads C(NAME/REVISION/manifest.json) (and C(manifest.json.sig) when the mirror has one)
    from the offline mirror's models folder (C(docs/mirror.md)), then fetches every file the manifest lists,
    and nothing else, into O(dest).
  - With O(publisher_endpoint), reads a Hugging Face-compatible revision listing
    (C(/api/models/REPOSITORY/revision/REVISION?blobs=true)) and fetches every file it lists from
    C(/REPOSITORY/resolve/REVISION/PATH); returns the publisher's SHA-256 of each LFS file for
    M(enclave.llm.model_manifest). Used by the staging playbook only.
  - Files are fetched in parallel (O(workers) at a time, biggest first) into O(partial_dir) and renamed into
    O(dest) only when complete. A partial file left by an interrupted run is resumed with an HTTP C(Range)
    request; the response must be C(206) with a C(Content-Range) that continues the file, otherwise the file
    is fetched again from the start. A file already complete in O(dest) with the listed size is kept (the
    caller verifies its hash with M(enclave.llm.model_manifest)).
  - Redirects are followed only to the same scheme, host and port; every request has a timeout.
  - Before anything is written, the bytes still to fetch are compared with the free space of the file system
    of O(free_space_path); the module fails with both numbers when they do not fit.
author:
  - llm-enclave maintainers (@llm-enclave)
attributes:
  check_mode:
    description: Reads the manifest and reports what would be fetched; writes nothing.
    support: full
  diff_mode:
    description: Reports no diff; the fetched files are listed in the result.
    support: none
options:
  mirror:
    description:
      - The mirror's models folder, C(https://...) (with O(ca_file)), C(http://...) (lab) or a local or NFS
        path (C(/mnt/mirror/models) or C(file:///mnt/mirror/models)).
    type: str
  publisher_endpoint:
    description: A Hugging Face-compatible endpoint (C(https://huggingface.co)); needs O(repository).
    type: str
  repository:
    description: The publisher's repository, C(OWNER/NAME). With O(publisher_endpoint) only.
    type: str
  name:
    description: The model's folder name on the mirror (C(NAME)). Required with O(mirror).
    type: str
  revision:
    description: The pinned revision, a full 40-hex commit id; a branch or tag name is refused.
    type: str
    required: true
  dest:
    description: The staging folder the files go to (created mode 0700).
    type: path
    required: true
  partial_dir:
    description: Where unfinished transfers are kept between runs. Default C(DEST.partial).
    type: path
  ca_file:
    description: A CA bundle on the managed host for an C(https) mirror (the hospital CA).
    type: path
  timeout:
    description: Seconds to wait for a connection or for data before a transfer counts as broken.
    type: float
    default: 30
  workers:
    description: Files fetched at the same time.
    type: int
    default: 4
  attempts:
    description: Tries per file within one run (each resumes the previous one).
    type: int
    default: 3
  free_space_path:
    description: A path on the file system the revision is installed on. Default the parent of O(dest).
    type: path
  reserve_bytes:
    description: Bytes that must stay free on that file system after the fetch.
    type: int
    default: 0
notes:
  - The module checks sizes only; hashes and the signature are M(enclave.llm.model_manifest)'s job.
"""

EXAMPLES = r"""
- name: Fetch a revision from the hospital mirror into the staging folder
  enclave.llm.model_fetch:
    mirror: https://mirror.hospital.example/models/
    ca_file: /etc/enclave/hospital-ca.pem
    name: deepseek-r1
    revision: 56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad
    dest: /srv/models/.staging/deepseek-r1/56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad
    free_space_path: /srv/models
    workers: 8

- name: Download a revision from the publisher on the staging host
  enclave.llm.model_fetch:
    publisher_endpoint: https://huggingface.co
    repository: deepseek-ai/DeepSeek-R1
    revision: 56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad
    dest: /srv/staging/deepseek-r1/56d4cbbb4d29f4355bab4b9a39ccb717a14ad5ad
  register: download
"""

RETURN = r"""
source:
  description: The URL or folder the revision was read from.
  returned: always
  type: str
files_total:
  description: Files the manifest (or the publisher) lists.
  returned: success
  type: int
bytes_total:
  description: Their size in bytes.
  returned: success
  type: int
files_reused:
  description: Files already complete in O(dest).
  returned: success
  type: int
files_resumed:
  description: Files continued from a partial transfer.
  returned: success
  type: int
files_fetched:
  description: Files transferred in this run (resumed or whole).
  returned: success
  type: int
bytes_reused:
  description: Bytes not transferred again (complete files and the kept part of partial ones).
  returned: success
  type: int
bytes_transferred:
  description: Bytes received in this run.
  returned: success
  type: int
bytes_needed:
  description: Bytes that were still to fetch when the run started.
  returned: success
  type: int
free_bytes:
  description: Free bytes on the file system of O(free_space_path) before the fetch.
  returned: success
  type: int
restarted:
  description: URLs whose server did not honour a range request, so the file was fetched again from the start.
  returned: success
  type: list
  elements: str
signature_fetched:
  description: Whether the mirror had a C(manifest.json.sig) (O(mirror) only).
  returned: with O(mirror)
  type: bool
manifest:
  description: The manifest's name, revision, repository, licence and file count (O(mirror) only).
  returned: with O(mirror)
  type: dict
publisher_sha256:
  description: The publisher's SHA-256 of each LFS file, by path (O(publisher_endpoint) only).
  returned: with O(publisher_endpoint)
  type: dict
licence:
  description: The licence the publisher's card names, or an empty string (O(publisher_endpoint) only).
  returned: with O(publisher_endpoint)
  type: str
seconds:
  description: Seconds the transfers took.
  returned: success
  type: float
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.atomic_file import write_atomic  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.models import fetch as lib  # noqa: E402
from ansible_collections.enclave.llm.plugins.module_utils.models import manifest as model_manifest  # noqa: E402


def read_mirror_manifest(module, source, base, result):
    """``(manifest bytes, signature bytes or None, manifest)`` of the revision on the mirror."""
    params = module.params
    location = lib.revision_location(base, params["name"], params["revision"])
    manifest_url = lib.join(location, model_manifest.MANIFEST_NAME)
    try:
        raw = source.read(manifest_url)
    except FileNotFoundError:
        module.fail_json(
            msg=f"{manifest_url} is missing: the mirror has no manifest for {params['name']} at revision "
            f"{params['revision']}. Publish the revision with playbooks/publish_model.yml, or check the model profile "
            "and enclave_model_revision.",
            **result,
        )
    except lib.FetchError as exc:
        module.fail_json(msg=str(exc), **result)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        module.fail_json(msg=f"{manifest_url} is not UTF-8 text: the manifest on the mirror is damaged.", **result)
    manifest, problems = model_manifest.parse_manifest(text)
    if problems:
        module.fail_json(msg=f"{manifest_url} is malformed: {'; '.join(problems[:5])}.", **result)
    if manifest["revision"].lower() != params["revision"].lower() or manifest["name"] != params["name"]:
        module.fail_json(
            msg=f"{manifest_url} is for {manifest['name']} at {manifest['revision']}, not {params['name']} at "
            f"{params['revision']}: the mirror's folder holds another model or revision.",
            **result,
        )
    try:
        signature = source.read(lib.join(location, model_manifest.SIGNATURE_NAME))
    except FileNotFoundError:
        signature = None
    except lib.FetchError as exc:
        module.fail_json(msg=str(exc), **result)
    jobs = [
        {"path": entry["path"], "size": entry["size"], "url": lib.join(location, entry["path"])}
        for entry in manifest["files"]
    ]
    return raw, signature, manifest, jobs


def read_publisher_listing(module, source, result):
    params = module.params
    problem = lib.repository_problem(params["repository"])
    if problem:
        module.fail_json(msg=f"repository: {problem}", **result)
    url = lib.join(params["publisher_endpoint"], "api", "models", params["repository"], "revision", params["revision"])
    url += "?blobs=true"
    result["source"] = url
    try:
        info = lib.read_json(source, url)
    except FileNotFoundError:
        module.fail_json(
            msg=f"{url} answered 404: the publisher has no revision {params['revision']} of {params['repository']}.",
            **result,
        )
    except lib.FetchError as exc:
        module.fail_json(msg=str(exc), **result)
    entries, published, problems = lib.publisher_entries(info, params["revision"])
    if problems:
        module.fail_json(msg=f"{url}: {'; '.join(problems[:5])}.", **result)
    card = info.get("cardData") if isinstance(info.get("cardData"), dict) else {}
    result["publisher_sha256"] = published
    result["licence"] = str(card.get("license") or "")
    return [
        {
            "path": entry["path"],
            "size": entry["size"],
            "url": lib.publisher_file_url(
                params["publisher_endpoint"], params["repository"], params["revision"], entry["path"]
            ),
        }
        for entry in entries
    ]


def write_if_different(path, data):
    """Write ``data`` (bytes) atomically unless ``path`` already holds it; True when written."""
    try:
        with open(path, "rb") as handle:
            if handle.read() == data:
                return False
    except FileNotFoundError:
        pass
    write_atomic(path, data, mode=0o644)
    return True


def write_signature(path, data):
    """Keep ``path`` equal to the mirror's signature (bytes) or absent; True when it changed."""
    if data is None:
        if os.path.lexists(path):
            os.unlink(path)
            return True
        return False
    return write_if_different(path, data)


def main():
    module = AnsibleModule(
        argument_spec={
            "mirror": {"type": "str"},
            "publisher_endpoint": {"type": "str"},
            "repository": {"type": "str"},
            "name": {"type": "str"},
            "revision": {"type": "str", "required": True},
            "dest": {"type": "path", "required": True},
            "partial_dir": {"type": "path"},
            "ca_file": {"type": "path"},
            "timeout": {"type": "float", "default": 30},
            "workers": {"type": "int", "default": 4},
            "attempts": {"type": "int", "default": 3},
            "free_space_path": {"type": "path"},
            "reserve_bytes": {"type": "int", "default": 0},
        },
        mutually_exclusive=[("mirror", "publisher_endpoint")],
        required_one_of=[("mirror", "publisher_endpoint")],
        required_by={"publisher_endpoint": ("repository",), "mirror": ("name",)},
        supports_check_mode=True,
    )
    params = module.params
    base = params["mirror"] or params["publisher_endpoint"]
    result = {"changed": False, "source": base}
    problem = model_manifest.revision_problem(params["revision"])
    if problem:
        module.fail_json(msg=f"revision: {problem}", **result)
    problem = lib.base_problem(base)
    if problem:
        module.fail_json(msg=f"{'mirror' if params['mirror'] else 'publisher_endpoint'}: {problem}", **result)
    if params["publisher_endpoint"] and not lib.is_url(base):
        module.fail_json(msg="publisher_endpoint must be an http(s) URL.", **result)
    if params["mirror"] and not model_manifest._NAME.match(params["name"]):
        module.fail_json(msg=f"name {params['name']!r}: use letters, digits, '.', '_' and '-'.", **result)
    if params["workers"] < 1 or params["attempts"] < 1 or params["timeout"] <= 0:
        module.fail_json(msg="workers and attempts must be at least 1, timeout above 0.", **result)
    if params["ca_file"] and not os.path.isfile(params["ca_file"]):
        module.fail_json(msg=f"ca_file {params['ca_file']} does not exist on the host: install the CA bundle first.")

    dest = params["dest"]
    partial_dir = params["partial_dir"] or dest.rstrip("/") + ".partial"
    source = lib.source_for(base, params["ca_file"], params["timeout"])
    manifest_raw = signature = None
    if params["mirror"]:
        result["source"] = lib.revision_location(base, params["name"], params["revision"])
        manifest_raw, signature, manifest, jobs = read_mirror_manifest(module, source, base, result)
        result["signature_fetched"] = signature is not None
        result["manifest"] = {
            "name": manifest["name"],
            "revision": manifest["revision"],
            "repository": manifest["repository"],
            "licence": manifest["licence"],
            "files": len(manifest["files"]),
        }
    else:
        jobs = read_publisher_listing(module, source, result)

    paths = [job["path"] for job in jobs]
    plan = lib.plan_files(jobs, lib.scan_sizes(dest, paths), lib.scan_sizes(partial_dir, paths))
    needed = lib.bytes_needed(jobs, plan)
    where = params["free_space_path"] or os.path.dirname(dest.rstrip("/"))
    free = lib.free_bytes(where)
    result.update(
        bytes_total=sum(job["size"] for job in jobs),
        files_total=len(jobs),
        bytes_needed=needed,
        free_bytes=free,
    )
    what = f"{params['name'] or params['repository']} at {params['revision']}"
    problem = lib.free_space_problem(needed, free, where, what, params["reserve_bytes"])
    if problem:
        module.fail_json(msg=problem, **result)

    manifest_path = os.path.join(dest, model_manifest.MANIFEST_NAME)
    signature_path = os.path.join(dest, model_manifest.SIGNATURE_NAME)
    if module.check_mode:
        stale = False
        if manifest_raw is not None:
            try:
                with open(manifest_path, "rb") as handle:
                    stale = handle.read() != manifest_raw
            except OSError:
                stale = True
        result.update(
            changed=bool(needed) or stale,
            files_reused=sum(1 for action, _offset in plan.values() if action == "reuse"),
            files_resumed=sum(1 for action, _offset in plan.values() if action == "resume"),
            files_fetched=0,
            bytes_reused=sum(offset for _action, offset in plan.values()),
            bytes_transferred=0,
            restarted=[],
            seconds=0.0,
        )
        module.exit_json(**result)

    os.makedirs(os.path.dirname(dest.rstrip("/")), mode=0o700, exist_ok=True)
    if not os.path.isdir(dest):
        os.mkdir(dest, 0o700)
        result["changed"] = True
    if manifest_raw is not None:
        result["changed"] |= write_if_different(manifest_path, manifest_raw)
        result["changed"] |= write_signature(signature_path, signature)
    report = lib.fetch_files(source, jobs, dest, partial_dir, params["workers"], params["attempts"])
    errors = report.pop("errors")
    result.update(report)
    result["changed"] |= report["files_fetched"] > 0
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        module.fail_json(
            msg=f"{len(errors)} of {len(jobs)} files could not be fetched from {result['source']}: {shown}. "
            f"What arrived is kept in {partial_dir} and resumed by the next run.",
            **result,
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
