# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Manifests of model folders: the format, its checks, and parallel SHA-256.

A model folder (``models/<name>/<revision>/`` on the mirror, ``/srv/models/<name>/<revision>/``
on the host) holds the files of one pinned revision and a ``manifest.json`` that lists
every file with its size and SHA-256 (docs/mirror.md, section "Manifest").

The first half of this file is pure: schema checks, building and rendering a manifest,
comparing a folder listing with it, the incremental cache's decisions, reading gpg's
status lines. It takes and returns plain data and is unit-tested without a host.

The second half does the I/O the module and the benchmark share: listing a folder,
hashing files in parallel (one file per worker thread, biggest first; each file mapped
under a read lease and handed to hashlib in large slices, with the kernel reading ahead,
so hashlib, which releases the GIL for large updates, keeps every core busy), reading and
atomically writing the root-only cache, and :func:`verify_folder` and :func:`hash_folder`,
which put them together.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import posixpath
import re
import signal
import stat
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

from ansible_collections.enclave.llm.plugins.module_utils.atomic_file import write_atomic

FORMAT_VERSION = 1
CACHE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
RESERVED_NAMES = (MANIFEST_NAME, SIGNATURE_NAME)
SOURCES = ("publisher", "mirror")
SIGNATURE_CHOICES = ("required", "optional", "ignore")
MODES = ("full", "incremental")
IO_METHODS = ("mmap", "read")

MANIFEST_KEYS = ("format_version", "name", "repository", "revision", "licence", "created", "files")
FILE_KEYS = ("path", "size", "sha256", "sha256_source")
STAT_KEYS = ("size", "mtime_ns", "ctime_ns", "ino", "dev")

DEFAULT_BUFFER_SIZE = 8 << 20
# Below this size a file is read, not mapped: mapping costs more than copying.
MMAP_MIN_SIZE = 1 << 20
# Pages asked for ahead of the hashing position (MADV_WILLNEED), so a cold disk
# always has reads queued for every worker.
READAHEAD_STEPS = 4
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


# ---------------------------------------------------------------------------
# I/O shared by the module and the benchmark
# ---------------------------------------------------------------------------


def list_folder(root):
    """``{relative path: {"size", "regular"}}`` for everything under ``root`` except the manifest and signature.

    Symlinks are not followed (a symlinked file is listed as not regular; a
    symlinked directory is listed as one entry). Directories themselves are not
    listed.
    """
    listing = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                if not rel and entry.name in RESERVED_NAMES:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                    continue
                st = entry.stat(follow_symlinks=False)
                listing[path] = {"size": st.st_size, "regular": stat.S_ISREG(st.st_mode)}
    return listing


def stat_files(root, paths):
    """``{path: stat_key}`` for ``paths`` (lstat; a path that vanished is left out)."""
    stats = {}
    for path in paths:
        try:
            stats[path] = stat_key(os.lstat(os.path.join(root, path)))
        except FileNotFoundError:
            continue
    return stats


def hash_file(path, buffer_size=DEFAULT_BUFFER_SIZE, io="mmap"):
    """SHA-256 of one file: ``{"sha256", "size", "io", "seconds", "before", "after", "finished_ns"}``.

    ``io="mmap"`` hands hashlib ``buffer_size`` slices of a read-only mapping of
    the file: nothing is copied out of the page cache, which leaves the CPUs to
    the hashing. A mapped file that shrinks while it is read would kill the
    process with SIGBUS, so the file is mapped only under a read lease
    (``F_SETLEASE``): another process that opens it for writing or truncates it
    then waits until the lease is given back, and the lease is polled before
    every slice, so hashing stops (the file is reported as changed) and the lease
    is released before the other process can go on. Where no lease can be taken
    (the file is open for writing, a file system without leases, a user without
    CAP_LEASE who does not own it) and for files below ``MMAP_MIN_SIZE`` the file
    is read into one reused buffer instead (``io="read"`` forces that).

    Either way the kernel is asked to read ``READAHEAD_STEPS`` steps ahead of the
    hashing position, so a cold disk has reads queued for every worker. The stat
    before and after reading comes from the open descriptor.
    """
    start = time.perf_counter()
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        before = os.fstat(fd)
        size = before.st_size
        if io == "mmap" and size >= MMAP_MIN_SIZE and _take_lease(fd):
            method = "mmap"
            try:
                complete = _hash_mapped(fd, size, digest, buffer_size)
            finally:
                _release_lease(fd)
            if not complete:
                raise OSError(errno.EBUSY, "another process opened it for writing while it was being hashed")
        else:
            method = "read"
            _hash_read(fd, size, digest, buffer_size)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    return {
        "sha256": digest.hexdigest(),
        "size": size,
        "io": method,
        "seconds": time.perf_counter() - start,
        "before": stat_key(before),
        "after": stat_key(after),
        "finished_ns": time.time_ns(),
    }


def _take_lease(fd):
    """Take a read lease on ``fd``; False when the kernel refuses one.

    The lease-break signal is set to SIGURG, which is ignored unless a program
    handles it (the default SIGIO would end the process).
    """
    try:
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except (OSError, AttributeError):
        return False
    return True


def _lease_broken(fd):
    """True when another process has asked for the lease (it waits for us to let go)."""
    return fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK


def _release_lease(fd):
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def _readahead(fd, offset, length, size):
    """Ask the kernel to start reading ``[offset, offset + length)`` in the background."""
    if offset < size and hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, min(length, size - offset), os.POSIX_FADV_WILLNEED)


def _hash_mapped(fd, size, digest, step):
    """Hash the mapped file; False when the lease broke first (the mapping is gone by then)."""
    mapping = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    try:
        _readahead(fd, 0, step * READAHEAD_STEPS, size)
        with memoryview(mapping) as view:
            for offset in range(0, size, step):
                if _lease_broken(fd):
                    return False
                _readahead(fd, offset + step * READAHEAD_STEPS, step, size)
                with view[offset : offset + step] as chunk:
                    digest.update(chunk)
    finally:
        mapping.close()
    return True


def _hash_read(fd, size, digest, step):
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    _readahead(fd, 0, step * READAHEAD_STEPS, size)
    buffer = bytearray(step)
    offset = 0
    with memoryview(buffer) as view:
        while True:
            _readahead(fd, offset + step * READAHEAD_STEPS, step, size)
            count = os.readv(fd, [buffer])
            if not count:
                break
            offset += count
            with view[:count] as chunk:
                digest.update(chunk)


def default_workers():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def hash_files(
    root, paths, workers=0, buffer_size=DEFAULT_BUFFER_SIZE, io="mmap", executor="thread", on_done=None, sizes=None
):
    """Hash ``paths`` under ``root`` in parallel; ``{path: hash_file result}``.

    One file per worker at a time, biggest first, so the big shards start early
    and the small files fill the gaps at the end. ``executor`` is ``thread``
    (the default: hashlib releases the GIL, and the benchmark measured threads
    at least as fast as processes) or ``process``. ``on_done(path, result)`` is
    called, in the calling thread, as each file finishes. A file that cannot be
    read gets ``{"error": message}``.
    """
    if sizes is None:
        sizes = {}
        for path in paths:
            try:
                sizes[path] = os.lstat(os.path.join(root, path)).st_size
            except OSError:
                sizes[path] = 0
    order = sorted(paths, key=lambda p: (-sizes.get(p, 0), p))
    workers = max(1, min(workers or default_workers(), len(order) or 1))
    results = {}
    if not order:
        return results
    pool_class = ProcessPoolExecutor if executor == "process" else ThreadPoolExecutor
    with pool_class(max_workers=workers) as pool:
        futures = {pool.submit(_hash_one, os.path.join(root, path), buffer_size, io): path for path in order}
        for future in as_completed(futures):
            path = futures[future]
            results[path] = future.result()
            if on_done is not None:
                on_done(path, results[path])
    return results


def _hash_one(path, buffer_size, io):
    try:
        return hash_file(path, buffer_size, io)
    except OSError as exc:
        return {"error": f"{exc.strerror or exc}"}


def _owned_private(st):
    return st.st_uid == os.geteuid() and not st.st_mode & 0o077


def read_cache(cache_path, store):
    """``(files, reason)``: the cache's files for ``store``, or ``({}, why it is not used)``.

    The cache is used only when its folder and file are owned by this user and
    closed to everyone else; otherwise anyone who could write it could make the
    incremental mode skip a changed file.
    """
    folder = os.path.dirname(cache_path)
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return {}, "no cache yet"
    if not stat.S_ISDIR(st.st_mode) or not _owned_private(st):
        return {}, f"{folder} is not a folder owned by uid {os.geteuid()} with mode 0700; the cache is not trusted"
    try:
        fd = os.open(cache_path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return {}, "no cache yet"
    except OSError as exc:
        return {}, f"{cache_path} cannot be opened ({exc.strerror}); the cache is not trusted"
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or not _owned_private(st):
            return {}, f"{cache_path} is not owned by uid {os.geteuid()} with mode 0600; the cache is not trusted"
        try:
            data = json.loads(handle.read())
        except ValueError as exc:
            return {}, f"{cache_path} is not valid JSON ({exc}); every file is hashed"
    problems = cache_problems(data, store)
    if problems:
        return {}, f"{cache_path}: {problems[0]}; every file is hashed"
    return data["files"], ""


def write_cache(cache_path, store, files):
    """Write the cache atomically (temp file, fsync, rename) in a 0700 folder, the file 0600.

    Returns '' or the reason it was not written (a folder not owned by this user).
    """
    folder = os.path.dirname(cache_path)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return f"{folder} is not a folder owned by uid {os.geteuid()}; the cache was not written"
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(folder, 0o700)
    data = {"format_version": CACHE_FORMAT_VERSION, "store": store, "files": files}
    write_atomic(cache_path, json.dumps(data, sort_keys=True), mode=0o600)
    return ""


def append_log(path, line):
    """Append one time-stamped line to ``path`` (created 0640 when missing)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o640)
    try:
        os.write(fd, f"{stamp} {line}\n".encode())
    finally:
        os.close(fd)


class Progress:
    """Counts finished files; appends a line per file to ``log_path`` when set (for ``tail -f``)."""

    def __init__(self, label, total_files, total_bytes, log_path=None):
        self.label = label
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.done_files = 0
        self.done_bytes = 0
        self.start = time.perf_counter()
        self.log_path = log_path
        self.lock = threading.Lock()
        self.write(progress_line(label, 0, total_files, 0, total_bytes, 0.0) + "; started")

    def write(self, line):
        if self.log_path:
            append_log(self.log_path, line)

    def done(self, path, result):
        with self.lock:
            self.done_files += 1
            self.done_bytes += result.get("size", 0)
            last = {"path": path, "size": result.get("size", 0), "seconds": result.get("seconds", 0.0)}
            elapsed = time.perf_counter() - self.start
            line = progress_line(
                self.label, self.done_files, self.total_files, self.done_bytes, self.total_bytes, elapsed, last
            )
            if "error" in result:
                line += f" (unreadable: {result['error']})"
            self.write(line)


def hash_with_cache(root, paths, cache_files, workers, buffer_size, io, progress_log=None, label="", executor="thread"):
    """Digests for ``paths``: reused from the cache where the stat is unchanged, else hashed.

    Returns ``{"digests", "errors", "timings", "new_cache", "reused", "hashed_bytes", "seconds",
    "gib_per_s", "workers"}``; ``new_cache`` holds an entry for every file whose digest is known
    and stable. A file that changed while it was read is an error, not a digest.
    """
    stats = stat_files(root, paths)
    reuse, rehash = plan_hashing(paths, stats, cache_files)
    sizes = {path: stats[path]["size"] for path in rehash if path in stats}
    progress = Progress(label or root, len(rehash), sum(sizes.values()), progress_log)
    start = time.perf_counter()
    results = hash_files(root, rehash, workers, buffer_size, io, executor, progress.done, sizes)
    seconds = time.perf_counter() - start
    digests = dict(reuse)
    new_cache = {path: {**stats[path], "sha256": reuse[path]} for path in reuse}
    errors, timings = {}, []
    hashed_bytes = 0
    for path in sorted(results):
        result = results[path]
        if "error" not in result and result["before"] != result["after"]:
            result = {"error": "it changed while it was being hashed; run again when nothing writes to the folder"}
        if "error" in result:
            errors[path] = result["error"]
            continue
        digests[path] = result["sha256"]
        hashed_bytes += result["size"]
        timings.append(
            {
                "path": path,
                "size": result["size"],
                "io": result["io"],
                "seconds": round(result["seconds"], 4),
                "gib_per_s": round(result["size"] / GIB / result["seconds"], 3) if result["seconds"] > 0 else None,
            }
        )
        if cacheable(result["before"], result["after"], result["finished_ns"]):
            new_cache[path] = {**result["after"], "sha256": result["sha256"]}
    rate = hashed_bytes / GIB / seconds if seconds > 0 and hashed_bytes else 0.0
    if rehash:
        progress.write(
            f"{progress.label}: finished {len(results)} files, {hashed_bytes / GIB:.2f} GiB in {seconds:.2f} s "
            f"({rate:.2f} GiB/s)"
        )
    return {
        "digests": digests,
        "errors": errors,
        "timings": timings,
        "new_cache": new_cache,
        "reused": sorted(reuse),
        "hashed_bytes": hashed_bytes,
        "seconds": seconds,
        "gib_per_s": round(rate, 3),
        "workers": min(workers or default_workers(), len(rehash)),
    }


def _hash_step(store, paths, mode, cache_path, write, workers, buffer_size, io, progress_log, executor):
    """Hash ``paths`` with the cache when ``mode`` is incremental; ``(hashed, cache report)``."""
    cache_files, note = {}, ""
    if mode == "incremental":
        cache_path = cache_path or default_cache_path(store)
        cache_files, note = read_cache(cache_path, store)
    hashed = hash_with_cache(
        store, paths, cache_files, workers, buffer_size, io, progress_log, f"model_manifest {store}", executor
    )
    cache = {
        "path": cache_path if mode == "incremental" else None,
        "used": bool(cache_files),
        "written": False,
        "note": note,
    }
    if mode == "incremental" and write:
        not_written = write_cache(cache_path, store, hashed["new_cache"])
        cache["written"] = not not_written
        cache["note"] = not_written or note
    return hashed, cache


def _timing_report(hashed, start):
    return {
        "hashed_files": len(hashed["timings"]),
        "hashed_bytes": hashed["hashed_bytes"],
        "reused_files": len(hashed["reused"]),
        "hash_seconds": round(hashed["seconds"], 4),
        "gib_per_s": hashed["gib_per_s"],
        "seconds": round(time.perf_counter() - start, 4),
        "workers": hashed["workers"],
        "timings": hashed["timings"],
    }


def load_manifest(folder):
    """``(text, data, error)`` of ``folder``'s manifest; error is '' or says what is wrong and what to do."""
    path = os.path.join(folder, MANIFEST_NAME)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return (
            None,
            None,
            (
                f"{path} is missing: the folder has no manifest. Fetch the model with its manifest from the "
                "mirror (docs/mirror.md), or create one on the staging host with state=present."
            ),
        )
    except OSError as exc:
        return None, None, f"{path} cannot be read ({exc.strerror}): check its owner and mode."
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, None, f"{path} is not UTF-8 text: the manifest is damaged; fetch it again from the mirror."
    data, problems = parse_manifest(text)
    if problems:
        return (
            text,
            None,
            (
                f"{path} is malformed: {'; '.join(problems[:5])}"
                + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
                + ". Fetch it again from the mirror, or recreate it on the staging host (docs/mirror.md)."
            ),
        )
    return text, data, ""


def verify_folder(
    folder,
    manifest,
    mode="full",
    cache_path=None,
    workers=0,
    buffer_size=DEFAULT_BUFFER_SIZE,
    io="mmap",
    progress_log=None,
    write=True,
    executor="thread",
):
    """Verify ``folder`` against a parsed, valid ``manifest``: the one path of the module and the benchmark.

    ``mode="incremental"`` reuses digests from the cache for files whose size,
    mtime, ctime, inode and device are unchanged, and (when ``write``) records
    what it saw; ``mode="full"`` hashes every file and neither reads nor writes
    the cache. Returns the findings (``missing``, ``extra``, ``not_regular``,
    ``size_mismatch``, ``corrupt``, ``unreadable``), ``counts``, ``ok``, the
    timings and a report on the cache.
    """
    start = time.perf_counter()
    store = os.path.realpath(folder)
    found = diff_folder(manifest["files"], list_folder(store))
    hashed, cache = _hash_step(
        store, found["to_hash"], mode, cache_path, write, workers, buffer_size, io, progress_log, executor
    )
    findings = {
        "missing": found["missing"],
        "extra": found["extra"],
        "not_regular": found["not_regular"],
        "size_mismatch": found["size_mismatch"],
        "corrupt": corrupt_files(manifest["files"], hashed["digests"]),
        "unreadable": [f"{path} ({error})" for path, error in sorted(hashed["errors"].items())],
    }
    return {
        **findings,
        "counts": {key: len(value) for key, value in findings.items()},
        "ok": not any(findings.values()),
        "files_total": len(manifest["files"]),
        "bytes_total": sum(entry["size"] for entry in manifest["files"]),
        **_timing_report(hashed, start),
        "cache": cache,
    }


def hash_folder(
    folder,
    mode="full",
    cache_path=None,
    workers=0,
    buffer_size=DEFAULT_BUFFER_SIZE,
    io="mmap",
    progress_log=None,
    write=True,
):
    """Hash every regular file of ``folder`` (to create its manifest).

    Returns ``{"observed": {path: {"size", "sha256"}}, "not_regular", "unreadable"}``
    with the same timings and cache report as :func:`verify_folder`.
    """
    start = time.perf_counter()
    store = os.path.realpath(folder)
    listing = list_folder(store)
    regular = sorted(path for path, entry in listing.items() if entry["regular"])
    hashed, cache = _hash_step(
        store, regular, mode, cache_path, write, workers, buffer_size, io, progress_log, "thread"
    )
    observed = {path: {"size": listing[path]["size"], "sha256": digest} for path, digest in hashed["digests"].items()}
    for timing in hashed["timings"]:
        observed[timing["path"]]["size"] = timing["size"]
    return {
        "observed": observed,
        "not_regular": sorted(path for path, entry in listing.items() if not entry["regular"]),
        "unreadable": [f"{path} ({error})" for path, error in sorted(hashed["errors"].items())],
        **_timing_report(hashed, start),
        "cache": cache,
    }
