# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""The I/O half of model manifests: listing a model folder, hashing its files, the cache.

Shared by the model_manifest module and the benchmark. Hashing runs in
parallel (one file per worker thread, biggest first; each file mapped under a
read lease and handed to hashlib in large slices, with the kernel reading
ahead, so hashlib, which releases the GIL for large updates, keeps every core
busy). The root-only cache is read and written atomically.
:func:`verify_folder` and :func:`hash_folder` put it together. Every decision
is taken by the pure half, module_utils/models/manifest.py.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import signal
import stat
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

from ansible_collections.enclave.llm.plugins.module_utils.atomic_file import write_atomic
from ansible_collections.enclave.llm.plugins.module_utils.models.manifest import (
    CACHE_FORMAT_VERSION,
    GIB,
    MANIFEST_NAME,
    RESERVED_NAMES,
    cache_problems,
    cacheable,
    corrupt_files,
    default_cache_path,
    diff_folder,
    parse_manifest,
    plan_hashing,
    progress_line,
    stat_key,
)

IO_METHODS = ("mmap", "read")
DEFAULT_BUFFER_SIZE = 8 << 20
# Below this size a file is read, not mapped: mapping costs more than copying.
MMAP_MIN_SIZE = 1 << 20
# Pages asked for ahead of the hashing position (MADV_WILLNEED), so a cold disk
# always has reads queued for every worker.
READAHEAD_STEPS = 4


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
