# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Manifests of model folders: the format and its checks, as pure functions.

A model folder (``models/<name>/<revision>/`` on the mirror, ``/srv/models/<name>/<revision>/``
on the host) holds the files of one pinned revision and a ``manifest.json`` that lists
every file with its size and SHA-256 (docs/mirror.md, section "Manifest").

This file is pure: schema checks, building and rendering a manifest,
comparing a folder listing with it, the incremental cache's decisions, reading gpg's
status lines. It takes and returns plain data and is unit-tested without a host.

The I/O the module and the benchmark share (listing a folder, hashing its files
in parallel, the cache on disk) is in module_utils/models/manifest_io.py.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import time

FORMAT_VERSION = 1
CACHE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
RESERVED_NAMES = (MANIFEST_NAME, SIGNATURE_NAME)
SOURCES = ("publisher", "mirror")
SIGNATURE_CHOICES = ("required", "optional", "ignore")
MODES = ("full", "incremental")

MANIFEST_KEYS = ("format_version", "name", "repository", "revision", "licence", "created", "files")
FILE_KEYS = ("path", "size", "sha256", "sha256_source")
STAT_KEYS = ("size", "mtime_ns", "ctime_ns", "ino", "dev")

# A file whose mtime or ctime lies this close to the end of its hashing is not
# cached: a write in the same timestamp tick would leave its stat unchanged.
RACY_NS = 2_000_000_000

GIB = 1 << 30

_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CREATED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---------------------------------------------------------------------------
# The format (pure)
# ---------------------------------------------------------------------------


def _is_int(value):
    """An int that is not a bool (JSON true is not a size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def revision_problem(revision):
    """'' when ``revision`` is a full 40-hex commit id, else a message saying what to give."""
    if isinstance(revision, str) and _HEX40.match(revision):
        return ""
    shown = revision if isinstance(revision, str) else repr(revision)
    return (
        f"revision {shown!r} is not pinned: give the full 40-hex commit id of the model repository "
        "(the `sha` field of https://huggingface.co/api/models/OWNER/NAME/revision/BRANCH, or "
        "`git ls-remote URL BRANCH`), never a branch or tag name, which can move."
    )


def path_problem(path):
    """'' when ``path`` is a safe relative POSIX path inside the folder, else why not."""
    if not isinstance(path, str) or not path:
        return f"path {path!r} is empty or not a string"
    if _CONTROL.search(path) or "\\" in path:
        return f"path {path!r} contains a control character or a backslash"
    if path.startswith("/"):
        return f"path {path!r} is absolute; paths are relative to the model folder"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or posixpath.normpath(path) != path:
        return f"path {path!r} is not normalised (empty, '.' or '..' components)"
    if path in RESERVED_NAMES:
        return f"path {path!r} is the manifest or its signature, which the manifest cannot list"
    return ""


def manifest_problems(data):
    """Messages for everything wrong with a parsed manifest; [] when it is valid."""
    if not isinstance(data, dict):
        return ["the manifest is not a JSON object"]
    problems = []
    missing = [key for key in MANIFEST_KEYS if key not in data]
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    unknown = sorted(set(data) - set(MANIFEST_KEYS))
    if unknown:
        problems.append(f"unknown keys: {', '.join(unknown)}")
    version = data.get("format_version")
    if "format_version" in data and (not _is_int(version) or version != FORMAT_VERSION):
        problems.append(f"format_version is {version!r}; this collection reads format_version {FORMAT_VERSION}")
    name = data.get("name")
    if "name" in data and not (isinstance(name, str) and _NAME.match(name)):
        problems.append(f"name {name!r} is not a model name (letters, digits, '.', '_', '-')")
    for key in ("repository", "licence"):
        if key in data and not (isinstance(data[key], str) and data[key].strip()):
            problems.append(f"{key} is empty or not a string")
    if "revision" in data:
        problem = revision_problem(data["revision"])
        if problem:
            problems.append(problem)
    created = data.get("created")
    if "created" in data and not (isinstance(created, str) and _CREATED.match(created)):
        problems.append(f"created {created!r} is not a UTC time like 2025-01-20T12:00:00Z")
    if "files" in data:
        problems += files_problems(data["files"])
    return problems


def files_problems(files):
    """Messages for the manifest's ``files`` list."""
    if not isinstance(files, list) or not files:
        return ["files is empty or not a list"]
    problems = []
    seen = set()
    for index, entry in enumerate(files):
        where = f"files[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            continue
        missing = [key for key in FILE_KEYS if key not in entry]
        unknown = sorted(set(entry) - set(FILE_KEYS))
        if missing:
            problems.append(f"{where}: missing keys: {', '.join(missing)}")
        if unknown:
            problems.append(f"{where}: unknown keys: {', '.join(unknown)}")
        path = entry.get("path")
        if "path" in entry:
            problem = path_problem(path)
            if problem:
                problems.append(f"{where}: {problem}")
            elif path in seen:
                problems.append(f"{where}: path {path!r} is listed twice")
            else:
                seen.add(path)
        size = entry.get("size")
        if "size" in entry and (not _is_int(size) or size < 0):
            problems.append(f"{where}: size {size!r} is not a byte count")
        digest = entry.get("sha256")
        if "sha256" in entry and not (isinstance(digest, str) and _HEX64.match(digest)):
            problems.append(f"{where}: sha256 {digest!r} is not 64 lower-case hex digits")
        source = entry.get("sha256_source")
        if "sha256_source" in entry and source not in SOURCES:
            problems.append(f"{where}: sha256_source {source!r} is not one of {', '.join(SOURCES)}")
    return problems


def parse_manifest(text):
    """``(data, problems)`` from the manifest's text; data is None when it is unusable."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError) as exc:
        return None, [f"it is not valid JSON ({exc})"]
    problems = manifest_problems(data)
    return (None if problems else data), problems


def utc_now():
    """The current time in the manifest's ``created`` form."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def build_manifest(name, repository, revision, licence, created, observed, publisher=None):
    """``(manifest, problems)`` for a folder whose files were hashed.

    ``observed`` maps each relative path to ``{"size", "sha256"}`` as hashed now;
    ``publisher`` maps paths to the SHA-256 the publisher lists (LFS files). A
    publisher hash must equal the observed one, and every path it names must exist:
    otherwise the download is wrong and no manifest is built.
    """
    publisher = {path: str(digest).strip().lower() for path, digest in (publisher or {}).items()}
    problems = []
    problem = revision_problem(revision)
    if problem:
        problems.append(problem)
    for path in sorted(set(publisher) - set(observed)):
        problems.append(f"{path}: the publisher lists it but it is not in the folder")
    for path in sorted(set(publisher) & set(observed)):
        if not _HEX64.match(publisher[path]):
            problems.append(f"{path}: the publisher hash {publisher[path]!r} is not 64 hex digits")
        elif publisher[path] != observed[path]["sha256"]:
            problems.append(
                f"{path}: sha256 {observed[path]['sha256']} differs from the publisher's {publisher[path]}; "
                "the download is corrupt or not of this revision: fetch it again"
            )
    if problems:
        return None, problems
    files = [
        {
            "path": path,
            "size": observed[path]["size"],
            "sha256": observed[path]["sha256"],
            "sha256_source": "publisher" if path in publisher else "mirror",
        }
        for path in sorted(observed)
    ]
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "repository": repository,
        "revision": revision.lower() if isinstance(revision, str) else revision,
        "licence": licence,
        "created": created,
        "files": files,
    }
    problems = manifest_problems(manifest)
    return (None if problems else manifest), problems


def render_manifest(manifest):
    """The manifest's bytes as written (stable key order, files sorted, one trailing newline)."""
    ordered = {key: manifest[key] for key in MANIFEST_KEYS}
    ordered["files"] = [{key: entry[key] for key in FILE_KEYS} for entry in sorted(manifest["files"], key=_path)]
    return json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"


def same_content(old, new):
    """True when two manifests differ at most in ``created``."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return False
    strip = {key for key in MANIFEST_KEYS if key != "created"}
    return {k: old.get(k) for k in strip} == {k: new.get(k) for k in strip}


def _path(entry):
    return entry["path"]


# ---------------------------------------------------------------------------
# Comparing a folder with its manifest (pure)
# ---------------------------------------------------------------------------


def diff_folder(manifest_files, listing):
    """Sort a folder listing against the manifest's files.

    ``listing`` maps relative paths to ``{"size", "regular"}``. Returns
    ``missing`` (listed, absent), ``extra`` (present, not listed),
    ``not_regular`` (listed, but a symlink or special file), ``size_mismatch``
    (``[{"path", "expected", "actual"}]``) and ``to_hash`` (the listed regular
    files of the right size, whose content is still to be checked).
    """
    expected = {entry["path"]: entry for entry in manifest_files}
    missing, not_regular, size_mismatch, to_hash = [], [], [], []
    for path in sorted(expected):
        found = listing.get(path)
        if found is None:
            missing.append(path)
        elif not found["regular"]:
            not_regular.append(path)
        elif found["size"] != expected[path]["size"]:
            size_mismatch.append({"path": path, "expected": expected[path]["size"], "actual": found["size"]})
        else:
            to_hash.append(path)
    extra = sorted(set(listing) - set(expected))
    return {
        "missing": missing,
        "extra": extra,
        "not_regular": not_regular,
        "size_mismatch": size_mismatch,
        "to_hash": to_hash,
    }


def corrupt_files(manifest_files, digests):
    """Paths whose observed digest differs from the manifest's, sorted."""
    expected = {entry["path"]: entry["sha256"] for entry in manifest_files}
    return sorted(path for path, digest in digests.items() if path in expected and digest != expected[path])


def stat_key(st):
    """The parts of an ``os.stat_result`` the incremental cache compares."""
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "ino": st.st_ino,
        "dev": st.st_dev,
    }


def cached_digest(entry, now):
    """The cached SHA-256 when the cache entry still describes the file ``now`` (a stat_key), else None."""
    if not isinstance(entry, dict) or not isinstance(now, dict):
        return None
    if any(entry.get(key) != now.get(key) for key in STAT_KEYS):
        return None
    digest = entry.get("sha256")
    return digest if isinstance(digest, str) and _HEX64.match(digest) else None


def cacheable(before, after, finished_ns, racy_ns=RACY_NS):
    """True when a file hashed between stat ``before`` and stat ``after`` may go into the cache.

    Not when it changed while being read, nor when its mtime or ctime is within
    ``racy_ns`` of the end of hashing: a write in the same timestamp tick could
    change the content and leave the stat as it was.
    """
    if before != after:
        return False
    return max(after["mtime_ns"], after["ctime_ns"]) < finished_ns - racy_ns


def cache_problems(data, store):
    """Why a parsed cache cannot be used for ``store`` ([] when it can)."""
    if not isinstance(data, dict):
        return ["it is not a JSON object"]
    if data.get("format_version") != CACHE_FORMAT_VERSION:
        return [f"format_version {data.get('format_version')!r} is not {CACHE_FORMAT_VERSION}"]
    if data.get("store") != store:
        return [f"it records {data.get('store')!r}, not {store!r}"]
    files = data.get("files")
    if not isinstance(files, dict):
        return ["files is not an object"]
    for path, entry in files.items():
        if not isinstance(entry, dict) or any(not _is_int(entry.get(key)) for key in STAT_KEYS):
            return [f"the entry for {path!r} is malformed"]
        if not (isinstance(entry.get("sha256"), str) and _HEX64.match(entry["sha256"])):
            return [f"the entry for {path!r} has no valid sha256"]
    return []


def plan_hashing(to_hash, stats, cache_files):
    """Split ``to_hash`` into ``(reuse, rehash)`` using the cache.

    ``reuse`` maps paths to their cached digest (the stat is unchanged);
    ``rehash`` lists the rest. ``stats`` maps paths to stat_keys taken now.
    """
    reuse, rehash = {}, []
    for path in to_hash:
        digest = cached_digest((cache_files or {}).get(path), stats.get(path))
        if digest is None:
            rehash.append(path)
        else:
            reuse[path] = digest
    return reuse, rehash


def default_cache_path(store):
    """``<store>/../.manifest-cache/<store's name>.json`` for a store path (resolved)."""
    store = os.path.realpath(store)
    parent, name = os.path.split(store)
    return os.path.join(parent, ".manifest-cache", f"{name}.json")


def findings_message(folder, findings, limit=10):
    """One message naming the files that did not verify, by kind; '' when all verified."""
    parts = []

    def names(paths):
        shown = ", ".join(paths[:limit])
        return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")

    if findings["corrupt"]:
        parts.append(f"{len(findings['corrupt'])} corrupt (sha256 differs): {names(findings['corrupt'])}")
    if findings["size_mismatch"]:
        sized = [f"{m['path']} ({m['actual']} bytes, manifest says {m['expected']})" for m in findings["size_mismatch"]]
        parts.append(f"{len(sized)} with the wrong size: {names(sized)}")
    if findings["missing"]:
        parts.append(f"{len(findings['missing'])} missing: {names(findings['missing'])}")
    if findings["extra"]:
        parts.append(f"{len(findings['extra'])} unexpected (not in the manifest): {names(findings['extra'])}")
    if findings["not_regular"]:
        parts.append(
            f"{len(findings['not_regular'])} not regular files (symlink or special file): "
            f"{names(findings['not_regular'])}"
        )
    if findings.get("unreadable"):
        parts.append(f"{len(findings['unreadable'])} unreadable: {names(findings['unreadable'])}")
    if not parts:
        return ""
    return (
        f"{folder} does not match its manifest: {'; '.join(parts)}. "
        "An installed revision is repaired with playbooks/repair-model.yml, which "
        "fetches only these files again and refuses a mirror copy that is itself corrupt (docs/mirror.md); "
        "do not serve this folder."
    )


def parse_gpg_status(text):
    """Read ``gpg --status-fd`` output of one ``--verify``.

    Returns ``{"valid", "fingerprint", "primary_fingerprint", "reason"}``; valid
    only when gpg reported at least one good, valid signature and nothing bad.
    """
    good = valid = False
    fingerprint = primary = ""
    reason = ""
    bad = {
        "BADSIG": "the signature does not match the manifest (the manifest or the signature was altered)",
        "EXPSIG": "the signature has expired",
        "EXPKEYSIG": "the signing key has expired",
        "REVKEYSIG": "the signing key has been revoked",
        "NODATA": "the signature file holds no OpenPGP signature",
    }
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "[GNUPG:]":
            continue
        keyword = fields[1]
        if keyword == "GOODSIG":
            good = True
        elif keyword == "VALIDSIG" and len(fields) >= 3:
            valid = True
            fingerprint = fields[2].upper()
            primary = fields[11].upper() if len(fields) >= 12 else fingerprint
        elif keyword in ("ERRSIG", "NO_PUBKEY") and not reason:
            key = fields[2] if len(fields) > 2 else "?"
            reason = f"the signing key {key} is not in the keyring given"
        elif keyword in bad and not reason:
            reason = bad[keyword]
    if reason:
        return {"valid": False, "fingerprint": fingerprint, "primary_fingerprint": primary, "reason": reason}
    if not (good and valid):
        return {
            "valid": False,
            "fingerprint": fingerprint,
            "primary_fingerprint": primary,
            "reason": "gpg reported no good signature",
        }
    return {"valid": True, "fingerprint": fingerprint, "primary_fingerprint": primary, "reason": ""}


def normalise_fingerprint(value):
    """Upper case, no spaces; '' when it is not 40 hex digits."""
    cleaned = str(value or "").replace(" ", "").upper()
    return cleaned if _HEX40.match(cleaned) else ""


def format_duration(seconds):
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def progress_line(label, done_files, total_files, done_bytes, total_bytes, elapsed, last=None):
    """One line of the progress log (without the time stamp)."""
    rate = done_bytes / GIB / elapsed if elapsed > 0 else 0.0
    share = 100.0 * done_bytes / total_bytes if total_bytes else 100.0
    left = (total_bytes - done_bytes) / GIB / rate if rate > 0 else 0.0
    line = (
        f"{label}: {done_files}/{total_files} files, {done_bytes / GIB:.2f}/{total_bytes / GIB:.2f} GiB "
        f"({share:.1f}%), {rate:.2f} GiB/s, about {format_duration(left)} left"
    )
    if last:
        line += f"; done {last['path']} ({last['size'] / GIB:.2f} GiB in {last['seconds']:.2f} s)"
    return line
