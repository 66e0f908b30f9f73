"""report.html as a browser sees it: every piece of host text escaped, nothing loaded from outside the
file, each control row findable by its ID with its status class, and a page that renders to a real image.

The browser checks run headless Chromium (lab/install-deps installs it).
"""

from __future__ import annotations

import datetime
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.evidence import audit_waivers
from ansible_collections.enclave.llm.plugins.module_utils.evidence import bundle as lib
from ansible_collections.enclave.llm.plugins.module_utils.evidence.common import printable
from ansible_collections.enclave.llm.plugins.module_utils.evidence.report_html import render_report

SUITE = "tests/testinfra/test_zz.py"
HOSTILE = '</pre><img src=x onerror="alert(1)"><script>alert(2)</script> &amp; "quoted"'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXPECTED = {
    "ENC-ZZ-001": "passed",
    "ENC-ZZ-002": "failed",
    "ENC-ZZ-003": "not_applicable",
    "ENC-ZZ-004": "not_verified",
    "ENC-ZZ-005": "waived",
}


def sample_evidence():
    """One control in each status, with markup, control characters and undecodable bytes in every text."""

    def control(number, title):
        return {
            "id": f"ENC-ZZ-{number:03d}",
            "title": title,
            "rationale": "PHI must not leave the host.",
            "family": "ZZ",
            "role": "os_hardening",
            "tag": f"os_hardening_zz{number}",
            "mappings": {
                "cis_debian12_l1": ["3.3.1", "3.3.2"],
                "bsi": ["SYS.1.1.A16"],
                "gdpr": ["Art. 32(1)(b)"],
            },
            "tests": [f"{SUITE}::test_zz_{number}"],
        }

    def test(number, outcome, message="", stdout="ok\n", stderr=""):
        return {
            "nodeid": f"{SUITE}::test_zz_{number}[ansible://llm01]",
            "outcome": outcome,
            "started": "2026-05-01T08:00:01.000Z",
            "duration_s": 0.42,
            "message": message,
            "commands": [
                {
                    "command": f"sysctl -n net.ipv4.conf.all.accept_redirects # {number}",
                    "rc": 0 if outcome == "passed" else 1,
                    "stdout": stdout,
                    "stderr": stderr,
                    "started": "2026-05-01T08:00:01.100Z",
                    "duration_s": 0.01,
                    "phase": "call",
                }
            ],
        }

    catalogue = {
        "controls": [
            control(1, "Network sysctls: no forwarding, no redirects"),
            control(2, f"SSH forwarding off {HOSTILE}"),
            control(3, "auditd running"),
            control(4, "No swap"),
            control(5, "Time from internal servers"),
        ]
    }
    results = {
        "schema": 1,
        "started": "2026-05-01T08:00:00.000Z",
        "finished": "2026-05-01T08:00:09.000Z",
        "pytest_exit": 1,
        "tests": [
            test(1, "passed", stdout="0\n"),
            test(
                2,
                "failed",
                message=f"E   AssertionError: allowtcpforwarding is yes {HOSTILE}",
                stdout=f"allowtcpforwarding yes\n{HOSTILE}\n\x00\x1b[31mred\x1b[0m \udcff",
                stderr="warning: <b>bold</b>",
            ),
            test(3, "skipped", message="auditd_enabled is false in the inventory"),
            test(5, "failed", message="E   chrony uses pool.ntp.org"),
        ],
    }
    waivers, problems = audit_waivers.parse_waivers(
        {
            "schema": 1,
            "waivers": [
                {
                    "control": "ENC-ZZ-005",
                    "reason": f"NTP zone move (CHG-2077) {HOSTILE}",
                    "approver": "Dr. Jana Weber, CISO",
                    "expires": "2027-01-31",
                }
            ],
        },
        set(EXPECTED),
    )
    assert problems == []
    return lib.build_evidence(
        "llm01.clinic.example",
        catalogue,
        results,
        waivers,
        datetime.date(2026, 5, 1),
        facts={
            "ruleset_digest": "9f2c" * 16,
            "packages": {"nftables": "1.0.6-2+deb12u2", "openssh-server": "1:9.2p1-2+deb12u5"},
            f"note {HOSTILE}": HOSTILE,
        },
        audited_at="2026-05-01T08:00:00Z",
        generated_at="2026-05-01T08:00:10Z",
        collection_version="0.1.0",
        git_commit="e76e464" + "0" * 33,
        sources={"catalogue": {"path": "/srv/enclave/docs/controls.yml", "sha256": "ab" * 32}},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundle")
    path = folder / "report.html"
    path.write_text(render_report(sample_evidence()), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# The HTML text itself
# ---------------------------------------------------------------------------


def test_hostile_text_is_escaped_everywhere(report):
    page = report.read_text()
    assert "<img" not in page
    assert "<script" not in page
    assert "</pre><img" not in page
    assert "&lt;/pre&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "&amp;amp;" in page, "an entity in host output must show as typed, not be interpreted"
    assert "&lt;b&gt;bold&lt;/b&gt;" in page


def test_unprintable_bytes_are_shown_not_dropped(report):
    page = report.read_text()
    assert "\x00" not in page
    assert "\x1b" not in page
    assert "\\x00\\x1b[31mred\\x1b[0m \\xff" in page
    assert printable("a\udcffb\x7f") == "a\\xffb\\x7f"


class TagCollector(HTMLParser):
    """Every tag with its attributes, and the text of style elements."""

    def __init__(self):
        super().__init__()
        self.tags = []
        self.styles = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def test_the_page_loads_nothing_from_outside(report):
    page = TagCollector()
    page.feed(report.read_text())
    names = {tag for tag, _attrs in page.tags}
    assert not names & {"script", "link", "img", "iframe", "object", "embed", "base", "form"}
    for tag, attrs in page.tags:
        assert "src" not in attrs, tag
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert attrs.get("href", "#").startswith("#"), attrs["href"]
    style = "".join(page.styles)
    assert "url(" not in style
    assert "@import" not in style


def test_each_control_row_has_its_id_and_status_class(report):
    page = report.read_text()
    for control_id, status in EXPECTED.items():
        assert f'<tr id="{control_id}" class="control-row status-{status}">' in page


def test_the_waiver_and_the_underlying_result_are_shown(report):
    page = report.read_text()
    assert "Dr. Jana Weber, CISO" in page
    assert "2027-01-31" in page
    assert '<span class="muted underlying">(the tests&#x27; own result: Failed)</span>' in page


# ---------------------------------------------------------------------------
# In a browser
# ---------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (lab/install-deps installs it: make deps)"
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class RowCollector(HTMLParser):
    """Element ids with their classes, and every tag seen, from the browser's DOM."""

    def __init__(self):
        super().__init__()
        self.rows = {}
        self.tags = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attributes = dict(attrs)
        if tag == "tr" and attributes.get("id"):
            self.rows[attributes["id"]] = set((attributes.get("class") or "").split())


@needs_chromium
def test_the_browser_finds_every_control_row_with_its_status(report, tmp_path):
    dumped = chromium(tmp_path, "--dump-dom", report.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = RowCollector()
    dom.feed(dumped.stdout)
    for control_id, status in EXPECTED.items():
        assert f"status-{status}" in dom.rows[control_id], (control_id, dom.rows.get(control_id))
    assert "img" not in dom.tags
    assert "script" not in dom.tags
    assert "details" in dom.tags


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (still filtered) scan lines of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, width, height, idat = 8, 0, 0, b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    return width, height, zlib.decompress(idat)


@needs_chromium
def test_the_report_renders_to_a_real_image(report, tmp_path):
    shot = tmp_path / "report.png"
    taken = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    assert taken.returncode == 0, taken.stderr[-2000:]
    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!DOCTYPE html><html><body></body></html>")
    blank = tmp_path / "blank.png"
    chromium(tmp_path, f"--screenshot={blank}", "--window-size=1280,2000", blank_page.as_uri())
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 2000)
    row = len(pixels) // height
    assert row * height == len(pixels)
    assert (row - 1) % width == 0, "each scan line is a filter byte and whole pixels"
    # A blank or single-colour page compresses to almost nothing and has few distinct bytes.
    assert shot.stat().st_size > 5 * blank.stat().st_size
    assert len(set(pixels)) > 64
