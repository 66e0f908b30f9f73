# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Fetching a model revision from the offline mirror (or a publisher) into a staging folder.

The first half is pure and unit-tested: URLs and paths of a revision, the
Content-Range check that tells whether a server honoured a resumed request,
whether a redirect stays on the mirror host, the plan (which files are
complete, which resume, which start over) and the free-space verdict.

The second half does the I/O: one HTTP(S) or file source, and
:func:`fetch_files`, which runs one transfer per worker thread. A transfer
writes to ``<partial_dir>/<path>`` and is renamed into the staging folder only
when complete, so an interrupted run leaves partial files that the next run
resumes with a ``Range`` request (checked: 206 and a matching Content-Range,
else the file starts over).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed

from ansible_collections.enclave.llm.plugins.module_utils.models import manifest as model_manifest

CHUNK = 1 << 20
GIB = 1 << 30
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class FetchError(Exception):
    """A transfer failed; the message names the URL and what to check."""


# ---------------------------------------------------------------------------
# Pure logic
# ---------------------------------------------------------------------------


def is_url(base):
    return urllib.parse.urlsplit(str(base)).scheme in ("http", "https")


def local_base(base):
    """The folder of a ``file://`` URL or a plain path; '' for an HTTP(S) URL."""
    parts = urllib.parse.urlsplit(str(base))
    if parts.scheme == "file":
        return urllib.parse.unquote(parts.path)
    return "" if parts.scheme in ("http", "https") else str(base)


def base_problem(base):
    """'' when ``base`` is an http(s) URL with a host, a file:// URL or an absolute path."""
    parts = urllib.parse.urlsplit(str(base or ""))
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            return f"mirror URL {base!r} has no host"
        if parts.query or parts.fragment:
            return f"mirror URL {base!r} has a query or fragment; give the models/ folder's URL"
        return ""
    path = local_base(base)
    if not path.startswith("/"):
        return f"mirror {base!r} is neither an http(s) URL nor an absolute path (a local or NFS folder)"
    return ""


def join(base, *parts):
    """``base`` with URL-quoted ``parts`` appended, one ``/`` between each."""
    quoted = "/".join(urllib.parse.quote(part, safe="/") for part in parts)
    if is_url(base):
        return base.rstrip("/") + "/" + quoted
    return os.path.join(local_base(base), *parts)


def revision_location(base, name, revision):
    """Where the revision folder ``<name>/<revision>/`` lies under the mirror's models folder."""
    return join(base, name, revision)


def same_origin(url, other):
    """True when both URLs have the same scheme, host and port (a redirect may go there)."""
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(other)

    def port(parts):
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)

    return (a.scheme, (a.hostname or "").lower(), port(a)) == (b.scheme, (b.hostname or "").lower(), port(b))


def parse_content_range(value):
    """``(first, last, total or None)`` of a ``Content-Range: bytes a-b/n`` header; None if malformed."""
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if last < first or (total is not None and last >= total):
        return None
    return first, last, total


def range_honoured(status, content_range, offset, size):
    """Whether a response to ``Range: bytes=<offset>-`` continues the file at ``offset``.

    Only a 206 whose Content-Range starts at ``offset`` and ends at the file's
    last byte (total = ``size`` when the server gives it) may be appended;
    anything else (a 200 with the whole file, another range) restarts the file.
    """
    if status != 206:
        return False
    parsed = parse_content_range(content_range)
    if parsed is None:
        return False
    first, last, total = parsed
    return first == offset and last == size - 1 and total in (None, size)


def plan_files(entries, complete_sizes, partial_sizes):
    """Sort ``entries`` (``{path, size}``) into what a fetch must do.

    ``complete_sizes`` maps paths already in the staging folder to their size,
    ``partial_sizes`` those with a partial file. Returns ``{path: (action, offset)}``
    where action is ``reuse`` (complete, right size), ``resume`` (a partial file
    shorter than the file) or ``fetch`` (from the start: nothing yet, a complete
    file of the wrong size, a partial file too long).
    """
    plan = {}
    for entry in entries:
        path, size = entry["path"], entry["size"]
        if complete_sizes.get(path) == size:
            plan[path] = ("reuse", size)
        elif 0 < partial_sizes.get(path, 0) < size:
            plan[path] = ("resume", partial_sizes[path])
        else:
            plan[path] = ("fetch", 0)
    return plan


def bytes_needed(entries, plan):
    """Bytes still to transfer under ``plan``."""
    return sum(entry["size"] - plan[entry["path"]][1] for entry in entries if plan[entry["path"]][0] != "reuse")


def human_bytes(value):
    if value >= GIB:
        return f"{value / GIB:.2f} GiB"
    if value >= 1 << 20:
        return f"{value / (1 << 20):.1f} MiB"
    return f"{value} bytes"


def free_space_problem(needed, free, where, what, reserve=0):
    """'' when ``free`` bytes hold ``needed`` plus ``reserve``; else the message, with the numbers."""
    if needed + reserve <= free:
        return ""
    return (
        f"{what} needs {human_bytes(needed)} ({needed} bytes) more"
        + (f" plus a reserve of {human_bytes(reserve)}" if reserve else "")
        + f", but the file system of {where} has {human_bytes(free)} ({free} bytes) free: free space there, "
        "or put model_store_root on a larger file system. Nothing was fetched."
    )


def entries_problems(entries):
    """Problems of a file list (paths by model_manifest's rules, sizes, duplicates)."""
    problems, seen = [], set()
    for entry in entries:
        path = entry.get("path")
        problem = model_manifest.path_problem(path)
        if problem:
            problems.append(problem)
            continue
        if path in seen:
            problems.append(f"path {path!r} is listed twice")
        seen.add(path)
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            problems.append(f"path {path!r} has no valid size")
    return problems


def repository_problem(repository):
    if isinstance(repository, str) and _REPOSITORY.match(repository):
        return ""
    return f"repository {repository!r} is not OWNER/NAME (e.g. deepseek-ai/DeepSeek-R1)"


def publisher_entries(info, revision):
    """``(entries, publisher_sha256, problems)`` from a Hugging Face revision API answer.

    ``info`` is the JSON of ``/api/models/<repo>/revision/<rev>?blobs=true``: its
    ``sha`` must be the pinned revision, and each sibling gives ``rfilename``,
    ``size`` and, for LFS files, ``lfs.sha256`` (the publisher's hash).
    """
    if not isinstance(info, dict):
        return [], {}, ["the publisher's answer is not a JSON object"]
    if str(info.get("sha", "")).lower() != revision.lower():
        return [], {}, [f"the publisher resolved the revision to {info.get('sha')!r}, not {revision}"]
    entries, published, problems = [], {}, []
    for sibling in info.get("siblings") or []:
        path = sibling.get("rfilename") if isinstance(sibling, dict) else None
        lfs = sibling.get("lfs") if isinstance(sibling, dict) else None
        size = sibling.get("size") if isinstance(sibling, dict) else None
        if isinstance(lfs, dict):
            size = lfs.get("size", size)
            published[path] = str(lfs.get("sha256", "")).lower()
        if size is None:
            problems.append(f"the publisher lists {path!r} without a size: ask for ?blobs=true")
            continue
        entries.append({"path": path, "size": size})
    problems += entries_problems(entries)
    if not entries:
        problems.append("the publisher lists no files for this revision")
    return sorted(entries, key=lambda e: e["path"]), published, problems


def publisher_file_url(endpoint, repository, revision, path):
    return join(endpoint, repository, "resolve", revision, path)


# ---------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same scheme, host and port."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urljoin(req.full_url, newurl)
        if not same_origin(req.full_url, target):
            raise FetchError(
                f"{req.full_url} redirects to {target}, off the mirror host: the mirror must serve the "
                "files itself; nothing is fetched from elsewhere"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _hint(url, ca_file):
    if url.startswith("https:"):
        bundle = ca_file or "the CA bundle"
        return f"check that the mirror is up, that the firewall allows it, and that {bundle} signed its certificate"
    return "check that the mirror is up and that the firewall allows it"


class HttpSource:
    """GETs (ranged or whole) from an http(s) mirror, with a timeout and no redirect off-host."""

    def __init__(self, ca_file=None, timeout=30.0):
        self.ca_file = ca_file
        self.timeout = timeout
        handlers = [_SameHostRedirects()]
        if ca_file:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca_file)))
        self.opener = urllib.request.build_opener(*handlers)

    def open(self, url, offset=0):
        """``(response, honoured offset)``; a 404 is FileNotFoundError, anything else FetchError."""
        request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = self.opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise FileNotFoundError(url) from None
            if exc.code == 416 and offset:
                return None, 0
            raise FetchError(f"{url} answered HTTP {exc.code} {exc.reason}: {_hint(url, self.ca_file)}") from None
        except FetchError:
            raise
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(f"{url} is unreachable ({reason}): {_hint(url, self.ca_file)}") from None
        return response, offset

    def read(self, url):
        response, _offset = self.open(url)
        with response:
            try:
                return response.read()
            except OSError as exc:
                raise FetchError(f"reading {url} failed ({exc}): {_hint(url, self.ca_file)}") from None


class _FileResponse:
    """A local file opened at an offset, answering like a ranged HTTP response."""

    def __init__(self, handle, offset):
        self.handle = handle
        self.status = 206 if offset else 200
        last = os.fstat(handle.fileno()).st_size - 1
        self.headers = {"Content-Range": f"bytes {offset}-{last}/*"}
        handle.seek(offset)

    def read(self, count=-1):
        return self.handle.read(count)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


class FileSource:
    """Reads from a local or NFS mirror folder, with the same interface as HttpSource."""

    def open(self, path, offset=0):
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by _FileResponse
        except FileNotFoundError:
            raise FileNotFoundError(path) from None
        except OSError as exc:
            raise FetchError(f"{path} cannot be read ({exc.strerror}): check the mirror folder's mount") from None
        return _FileResponse(handle, offset), offset

    def read(self, path):
        response, _offset = self.open(path)
        with response:
            return response.read()


def source_for(base, ca_file=None, timeout=30.0):
    return HttpSource(ca_file, timeout) if is_url(base) else FileSource()


def scan_sizes(folder, paths):
    """``{path: size}`` of the regular files among ``paths`` in ``folder``."""
    sizes = {}
    for path in paths:
        try:
            st = os.lstat(os.path.join(folder, path))
        except OSError:
            continue
        if os.path.isfile(os.path.join(folder, path)) and not os.path.islink(os.path.join(folder, path)):
            sizes[path] = st.st_size
    return sizes


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.transferred = 0
        self.restarted = []

    def add(self, count):
        with self.lock:
            self.transferred += count


def _transfer(source, url, partial, final, size, offset, counters, max_attempts):
    """Fetch one file into ``partial`` from ``offset``, then rename it to ``final``."""
    os.makedirs(os.path.dirname(partial), exist_ok=True)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    attempt = 0
    while True:
        attempt += 1
        try:
            response, offset = source.open(url, offset)
            if response is None:  # 416: the partial file is not a prefix we can continue
                offset = 0
                response, offset = source.open(url, 0)
            with response:
                status = getattr(response, "status", 200)
                if offset and not range_honoured(status, response.headers.get("Content-Range"), offset, size):
                    counters.restarted.append(url)
                    offset = 0
                    if status == 206:  # some other range: ask again for the whole file
                        continue
                with open(partial, "r+b" if offset else "wb") as out:
                    out.seek(offset)
                    out.truncate()
                    written = offset
                    while True:
                        chunk = response.read(CHUNK)
                        if not chunk:
                            break
                        written += len(chunk)
                        if written > size:
                            raise FetchError(
                                f"{url} sent more than the {size} bytes the manifest lists: the mirror's file "
                                "does not match its manifest; publish the revision again (playbooks/publish_model.yml)"
                            )
                        out.write(chunk)
                        counters.add(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
            if written != size:
                raise FetchError(
                    f"{url} ended after {written} of the {size} bytes the manifest lists (the connection broke, "
                    "or the mirror's file is shorter than its manifest says)"
                )
            os.replace(partial, final)
            return
        except FileNotFoundError:
            raise FetchError(
                f"{url} is missing on the mirror (404) although the manifest lists it: the mirror's copy of the "
                "revision is incomplete; publish it again (playbooks/publish_model.yml)"
            ) from None
        except FetchError as exc:
            if attempt >= max_attempts or "off the mirror host" in str(exc) or "more than" in str(exc):
                raise
        except OSError as exc:
            if attempt >= max_attempts:
                raise FetchError(f"{url} broke off ({exc}): the partial file is kept; run again to resume") from None
        offset = os.path.getsize(partial) if os.path.exists(partial) else 0
        time.sleep(min(0.2 * attempt, 2.0))


def fetch_files(source, jobs, dest, partial_dir, workers=4, max_attempts=3):
    """Fetch ``jobs`` (``{path, size, url}``) into ``dest``, resuming from ``partial_dir``.

    Returns a report: files and bytes reused (complete already or from a
    partial file) and transferred, the files restarted because a server did
    not honour a range, seconds, and the errors (one per failed file).
    """
    started = time.monotonic()
    paths = [job["path"] for job in jobs]
    plan = plan_files(jobs, scan_sizes(dest, paths), scan_sizes(partial_dir, paths))
    counters = Counters()
    report = {
        "files_total": len(jobs),
        "bytes_total": sum(job["size"] for job in jobs),
        "files_reused": sum(1 for action, _offset in plan.values() if action == "reuse"),
        "bytes_reused": sum(offset for _action, offset in plan.values()),
        "files_resumed": sum(1 for action, _offset in plan.values() if action == "resume"),
        "files_fetched": 0,
        "errors": [],
    }
    todo = [job for job in jobs if plan[job["path"]][0] != "reuse"]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            pool.submit(
                _transfer,
                source,
                job["url"],
                os.path.join(partial_dir, job["path"]),
                os.path.join(dest, job["path"]),
                job["size"],
                plan[job["path"]][1],
                counters,
                max_attempts,
            ): job
            for job in sorted(todo, key=lambda job: -job["size"])
        }
        for future in as_completed(futures):
            try:
                future.result()
                report["files_fetched"] += 1
            except (FetchError, OSError) as exc:
                report["errors"].append(str(exc))
    report["bytes_transferred"] = counters.transferred
    report["restarted"] = sorted(counters.restarted)
    report["seconds"] = round(time.monotonic() - started, 3)
    if not report["errors"] and os.path.isdir(partial_dir):
        shutil.rmtree(partial_dir, ignore_errors=True)
    return report


def free_bytes(path):
    """Free bytes (for root) on the file system of ``path`` or its nearest existing parent."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def read_json(source, url):
    raw = source.read(url)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FetchError(f"{url} is not valid JSON ({exc}): check that the URL points at the right service") from None
