"""Unit tests for plugins/module_utils/preflight.py (no host, no network)."""

from __future__ import annotations

import pytest
from ansible_collections.enclave.llm.plugins.module_utils import preflight as lib

DEBIAN_ARCHIVE = "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"
DEBIAN_SECURITY = "05AB90340C0C5E797F44A8C8254CF3B5AEC0A8F0"

# gpg --show-keys --with-colons of Debian's bookworm archive and security
# keyrings (trimmed): rvk records sit between pub and the primary's fpr.
GPG_COLONS = """\
pub:-:4096:1:B7C5D7D6350947F8:1674301461:1926589461::-:::scSC::::::23::0:
rvk:::1::::::80E976F14A508A48E9CA3FE9BC372252CA1CF964:80:
rvk:::1::::::FBFABDB541B5DC955BD9BA6EDB16CF5BB12525C4:80:
fpr:::::::::B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8:
uid:-::::1674301461::100567F0EA7B90BC2ED03949BE60B7A6CFD8619F::Debian Archive Automatic Signing Key::::::::::0:
sub:-:4096:1:6ED0E7B82643E131:1674301461:1926589461:::::s::::::23:
fpr:::::::::4CB50190207B4758A3F73A796ED0E7B82643E131:
pub:-:4096:1:254CF3B5AEC0A8F0:1674301533:1926589533::-:::scSC::::::23::0:
fpr:::::::::05AB90340C0C5E797F44A8C8254CF3B5AEC0A8F0:
sub:-:4096:1:BDE6D2B9216EC7A8:1674301533:1926589533:::::s::::::23:
fpr:::::::::B0CAB9266E8C3929798B3EEEBDE6D2B9216EC7A8:
"""


def lab_mirror(**changes):
    mirror = {
        "host": "198.51.100.10",
        "apt_url": "http://198.51.100.10:3142/debian",
        "apt_security_url": "http://198.51.100.10:3142/debian-security",
        "apt_components": ["main"],
        "apt_keyring_files": ["/usr/share/keyrings/a.gpg"],
        "apt_key_fingerprints": [DEBIAN_ARCHIVE],
        "pip_index_url": "http://198.51.100.10/wheelhouse/",
        "registry": "198.51.100.10:5000",
        "models_url": "http://198.51.100.10/models/",
    }
    mirror.update(changes)
    return mirror


@pytest.mark.parametrize(
    ("distribution", "major", "version", "status", "name"),
    [
        ("Debian", "12", "12.15", "supported", "Debian 12 (bookworm)"),
        ("Debian", 12, "12", "supported", "Debian 12 (bookworm)"),
        ("Ubuntu", "24", "24.04", "untested", "Ubuntu 24.04 (noble)"),
        ("Ubuntu", "24", "24.10", "unsupported", "Ubuntu 24.10"),
        ("RedHat", "9", "9.4", "untested", "Red Hat Enterprise Linux 9"),
        ("Rocky", "9", "9.3", "untested", "Rocky Linux 9"),
        ("AlmaLinux", "9", "9.5", "untested", "AlmaLinux 9"),
        ("Debian", "11", "11.9", "unsupported", "Debian 11.9"),
        ("Debian", "13", "13.1", "unsupported", "Debian 13.1"),
        ("Ubuntu", "22", "22.04", "unsupported", "Ubuntu 22.04"),
        ("CentOS", "9", "9", "unsupported", "CentOS 9"),
        ("RedHat", "8", "8.10", "unsupported", "RedHat 8.10"),
        ("", "", "", "unsupported", "an unknown OS"),
        (None, None, None, "unsupported", "an unknown OS"),
    ],
)
def test_classify_os(distribution, major, version, status, name):
    assert lib.classify_os(distribution, major, version) == {"status": status, "name": name}


@pytest.mark.parametrize(
    ("address", "cidrs", "expected"),
    [
        ("198.51.100.1", ["198.51.100.1/32"], True),
        ("198.51.100.7", ["192.0.2.0/24", "198.51.100.0/24"], True),
        ("198.51.100.1", ["198.51.100.2/32"], False),
        ("203.0.113.9", [], False),
        ("203.0.113.9", None, False),
        ("2001:db8::5", ["2001:db8::/32"], True),
        ("2001:db8::5", ["198.51.100.0/24"], False),
        ("198.51.100.1", ["2001:db8::/32"], False),
        ("198.51.100.1", ["not-a-cidr", "198.51.100.0/24"], True),
        ("198.51.100.1", ["198.51.100.1"], True),
        ("", ["0.0.0.0/0"], False),
        ("admin.example", ["0.0.0.0/0"], False),
        (None, ["0.0.0.0/0"], False),
    ],
)
def test_ip_in_any(address, cidrs, expected):
    assert lib.ip_in_any(address, cidrs) is expected


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ([], "enclave_zones.admin is empty"),
        (None, "enclave_zones.admin is empty"),
        (["198.51.100.0/33"], "'198.51.100.0/33' is not an address or CIDR"),
        (["198.51.100.0/24", "banana"], "'banana' is not an address or CIDR"),
        (["198.51.100.5/24"], "write 198.51.100.0/24 (the network) or 198.51.100.5/32"),
        (["2001:db8::1/32"], "write 2001:db8::/32 (the network) or 2001:db8::1/128"),
        ({"a": 1}, "enclave_zones.admin must be a list of CIDRs"),
        (["0.0.0.0/0"], "enclave_zones.admin: 0.0.0.0/0 is wider than the widest zone network allowed"),
    ],
)
def test_admin_zone_problems_report(values, fragment):
    problems = lib.zones_problems({"admin": values})
    assert len(problems) == 1, problems
    assert fragment in problems[0]


@pytest.mark.parametrize(
    "values",
    [["198.51.100.1/32"], ["192.0.2.0/24", "2001:db8::/32"], ["198.51.100.1"], []],
)
def test_clinical_zone_accepts(values):
    assert lib.zones_problems({"admin": ["192.0.2.0/28"], "clinical": values}) == []


@pytest.mark.parametrize(
    ("zones", "count", "fragment"),
    [
        ({"admin": ["198.51.100.1/32"], "clinical": ["203.0.113.0/24"], "cluster": []}, 0, ""),
        ({"admin": ["198.51.100.1/32"]}, 0, ""),
        ({"admin": []}, 1, "enclave_zones.admin is empty"),
        ({"admin": ["198.51.100.1/32"], "clinical": ["203.0.113.0/99"]}, 1, "enclave_zones.clinical:"),
        ({"admin": [], "cluster": ["x"]}, 2, "enclave_zones.cluster:"),
        ([], 1, "enclave_zones must be a mapping"),
    ],
)
def test_zones_problems(zones, count, fragment):
    problems = lib.zones_problems(zones)
    assert len(problems) == count
    assert fragment in "\n".join(problems)


@pytest.mark.parametrize(
    ("users", "fragment"),
    [
        (["enclave-admin"], None),
        (["enclave-admin", "ops_2"], None),
        ([], "enclave_admin_users is empty"),
        (None, "enclave_admin_users is empty"),
        (["Root User"], "'Root User' is not a valid account name"),
        (["ok", "a b", "C"], "'a b', 'C' are not valid account names"),
    ],
)
def test_admin_users_problems(users, fragment):
    problems = lib.admin_users_problems(users)
    if fragment is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert fragment in problems[0]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://198.51.100.10:3142/debian", None),
        ("https://198.51.100.10/debian/", None),
        ("http://[2001:db8::10]:3142/debian", None),
        ("ftp://198.51.100.10/debian", "the scheme must be http or https, not 'ftp'"),
        ("file:///srv/debian", "the scheme must be http or https, not 'file'"),
        ("198.51.100.10/debian", "the scheme must be http or https, not 'none'"),
        ("http://mirror.hospital.example/debian", "'mirror.hospital.example' is not an IP address"),
        ("http://user:secret@198.51.100.10/", "remove the credentials"),
        ("http://198.51.100.10:99999/", "is not a valid URL"),
        ("http:///debian", "has no host"),
        ("", "is empty"),
        (None, "is empty"),
    ],
)
def test_url_problems(url, fragment):
    problems = lib.url_problems("enclave_mirror.apt_url", url)
    if fragment is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith("enclave_mirror.apt_url")
        assert fragment in problems[0]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("198.51.100.10:5000", None),
        ("[2001:db8::10]:5000", None),
        ("registry.example:5000", "'registry.example' is not an IP address"),
        ("198.51.100.10", "is not ADDRESS:PORT"),
        ("198.51.100.10:0", "port 0 is out of range"),
        ("198.51.100.10:70000", "port 70000 is out of range"),
        ("2001:db8::10:5000", "is not ADDRESS:PORT"),
        ("", "is empty"),
    ],
)
def test_hostport_problems(value, fragment):
    problems = lib.hostport_problems("enclave_mirror.registry", value)
    if fragment is None:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith("enclave_mirror.registry")
        assert fragment in problems[0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (DEBIAN_ARCHIVE, DEBIAN_ARCHIVE),
        (DEBIAN_ARCHIVE.lower(), DEBIAN_ARCHIVE),
        ("B8B8 0B5B 623E AB6A D877  5C45 B7C5 D7D6 3509 47F8", DEBIAN_ARCHIVE),
        ("0x" + DEBIAN_ARCHIVE, DEBIAN_ARCHIVE),
        ("350947F8", None),
        ("B7C5D7D6350947F8", None),
        (DEBIAN_ARCHIVE + "0", None),
        (DEBIAN_ARCHIVE[:-1] + "G", None),
        (None, None),
        (12345, None),
        (1111222233334444555566667777888899990000, "1111222233334444555566667777888899990000"),
        (True, None),
    ],
)
def test_normalize_fingerprint(value, expected):
    assert lib.normalize_fingerprint(value) == expected


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({}, []),
        ({"apt_security_url": None}, []),
        ({"apt_suite": "bookworm"}, []),
        ({"host": "mirror.hospital.example"}, ["enclave_mirror.host: 'mirror.hospital.example' is not an IP address"]),
        ({"apt_url": "ftp://198.51.100.10/debian"}, ["enclave_mirror.apt_url ftp://"]),
        (
            {"apt_security_url": "http://security.example/"},
            ["enclave_mirror.apt_security_url http://security.example/"],
        ),
        ({"pip_index_url": "https://pypi.org/simple/"}, ["enclave_mirror.pip_index_url"]),
        ({"models_url": "s3://bucket/models"}, ["enclave_mirror.models_url"]),
        ({"registry": "registry:5000"}, ["enclave_mirror.registry"]),
        ({"apt_components": []}, ["enclave_mirror.apt_components is empty"]),
        ({"apt_suite": "Bookworm Main"}, ["enclave_mirror.apt_suite 'Bookworm Main' is not a suite name"]),
        ({"apt_keyring_files": ["keys/mirror.gpg"]}, ["enclave_mirror.apt_keyring_files: 'keys/mirror.gpg'"]),
        ({"apt_keyring_files": []}, ["enclave_mirror.apt_keyring_files is empty"]),
        ({"apt_key_fingerprints": ["350947F8"]}, ["enclave_mirror.apt_key_fingerprints: '350947F8' is not"]),
        ({"apt_key_fingerprints": []}, ["enclave_mirror.apt_key_fingerprints is empty"]),
        (
            {"host": "mirror", "apt_url": "mirror:3142"},
            ["enclave_mirror.host: 'mirror'", "enclave_mirror.apt_url mirror:3142"],
        ),
    ],
)
def test_mirror_problems(changes, fragments):
    problems = lib.mirror_problems(lab_mirror(**changes))
    assert len(problems) == len(fragments), problems
    for problem, fragment in zip(problems, fragments, strict=False):
        assert fragment in problem


def test_mirror_problems_not_a_mapping():
    assert lib.mirror_problems("http://198.51.100.10/") == [
        "enclave_mirror must be a mapping (see the preflight role's README)."
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GPG_COLONS, [DEBIAN_ARCHIVE, DEBIAN_SECURITY]),
        (GPG_COLONS + GPG_COLONS, [DEBIAN_ARCHIVE, DEBIAN_SECURITY]),
        ("", []),
        (None, []),
        # A subkey's fpr without a preceding pub is not a primary key.
        ("sub:-:4096:1:X::::::s:\nfpr:::::::::4CB50190207B4758A3F73A796ED0E7B82643E131:\n", []),
        # A uid between pub and fpr (not what gpg writes) ends the wait for the primary.
        ("pub:-:1\nuid:-::::x\nfpr:::::::::4CB50190207B4758A3F73A796ED0E7B82643E131:\n", []),
        ("pub:-:1\nfpr:::::::::short:\n", []),
    ],
)
def test_gpg_primary_fingerprints(text, expected):
    assert lib.gpg_primary_fingerprints(text) == expected


@pytest.mark.parametrize(
    ("pinned", "found", "fragments"),
    [
        ([DEBIAN_ARCHIVE, DEBIAN_SECURITY], [DEBIAN_SECURITY, DEBIAN_ARCHIVE], None),
        ([DEBIAN_ARCHIVE.lower(), DEBIAN_SECURITY], [DEBIAN_ARCHIVE, DEBIAN_SECURITY], None),
        (
            [DEBIAN_ARCHIVE],
            [DEBIAN_ARCHIVE, DEBIAN_SECURITY],
            ["in the keyring files but not pinned: " + DEBIAN_SECURITY],
        ),
        (
            [DEBIAN_ARCHIVE, DEBIAN_SECURITY],
            [DEBIAN_ARCHIVE],
            ["pinned but not in the keyring files: " + DEBIAN_SECURITY],
        ),
        ([DEBIAN_ARCHIVE], [], ["pinned but not in the keyring files: " + DEBIAN_ARCHIVE]),
        (
            [DEBIAN_ARCHIVE],
            [DEBIAN_SECURITY],
            ["pinned but not in the keyring files: " + DEBIAN_ARCHIVE, "but not pinned: " + DEBIAN_SECURITY],
        ),
    ],
)
def test_fingerprint_mismatch(pinned, found, fragments):
    message = lib.fingerprint_mismatch(pinned, found, ["/k/a.gpg"])
    if fragments is None:
        assert message == ""
    else:
        assert message.startswith("enclave_mirror.apt_key_fingerprints does not match")
        assert "(/k/a.gpg)" in message
        for fragment in fragments:
            assert fragment in message


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"status": 200}, ""),
        ({"status": "200"}, ""),
        ({"status": 404, "msg": "Status code was 404 and not [200]: HTTP Error 404"}, "HTTP 404"),
        ({"status": 503}, "HTTP 503"),
        (
            {
                "status": -1,
                "msg": "Status code was -1 and not [200]: Request failed: "
                "<urlopen error [Errno 111] Connection refused>",
            },
            "Connection refused",
        ),
        ({"status": -1, "msg": "Request failed: <urlopen error timed out>"}, "timed out"),
        ({"status": -1, "msg": "Request failed: <urlopen error [Errno 113] No route to host>"}, "No route to host"),
        ({"status": -1, "msg": "Request failed: <urlopen error something odd>"}, "something odd"),
        ({"msg": ""}, "no answer"),
        (None, "no result"),
    ],
)
def test_http_failure_reason(result, expected):
    assert lib.http_failure_reason(result) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "Filesystem     1024-blocks    Used Available Capacity Mounted on\n"
            "overlay          102687672 8123456  89311628       9% /\n",
            87218,
        ),
        (
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
            "/dev/mapper/vg-data 1000 10 2048 1% /srv/data dir\n",
            2,
        ),
        ("", None),
        ("Filesystem 1024-blocks\n", None),
        ("header\nx y z many words here\n", None),
    ],
)
def test_df_available_mib(output, expected):
    assert lib.df_available_mib(output) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("198.51.100.1 42124 198.51.100.30 22", "198.51.100.1"),
        ("2001:db8::1 50000 2001:db8::30 22", "2001:db8::1"),
        ("", ""),
        (None, ""),
        ("garbage", ""),
    ],
)
def test_ssh_client_address(value, expected):
    assert lib.ssh_client_address(value) == expected


@pytest.mark.parametrize(
    ("changes", "suite", "apt_based", "expected"),
    [
        (
            {},
            "bookworm",
            True,
            [
                ("enclave_mirror.apt_url", "http://198.51.100.10:3142/debian/dists/bookworm/InRelease"),
                (
                    "enclave_mirror.apt_security_url",
                    "http://198.51.100.10:3142/debian-security/dists/bookworm-security/InRelease",
                ),
                ("enclave_mirror.pip_index_url", "http://198.51.100.10/wheelhouse/"),
            ],
        ),
        (
            {"apt_url": "http://198.51.100.10/debian/", "apt_security_url": None},
            "noble",
            True,
            [
                ("enclave_mirror.apt_url", "http://198.51.100.10/debian/dists/noble/InRelease"),
                ("enclave_mirror.pip_index_url", "http://198.51.100.10/wheelhouse/"),
            ],
        ),
        ({}, "", False, [("enclave_mirror.pip_index_url", "http://198.51.100.10/wheelhouse/")]),
    ],
)
def test_mirror_probes(changes, suite, apt_based, expected):
    probes = lib.mirror_probes(lab_mirror(**changes), suite, apt_based)
    assert [(p["var"], p["url"]) for p in probes] == expected


def test_probe_problems():
    results = [
        {"item": {"var": "enclave_mirror.apt_url", "url": "http://198.51.100.10/a"}, "status": 200},
        {
            "item": {"var": "enclave_mirror.apt_url", "url": "http://127.0.0.1:9/debian/dists/bookworm/InRelease"},
            "status": -1,
            "msg": "Status code was -1 and not [200]: Request failed: <urlopen error [Errno 111] Connection refused>",
        },
        {"item": {"var": "enclave_mirror.pip_index_url", "url": "http://198.51.100.10/nope/"}, "status": 404},
    ]
    assert lib.probe_problems(results, "enclave-lab-host") == [
        "enclave_mirror.apt_url http://127.0.0.1:9/debian/dists/bookworm/InRelease: not reachable from "
        "enclave-lab-host (Connection refused). Check that the mirror host is up and the URL is right.",
        "enclave_mirror.pip_index_url http://198.51.100.10/nope/: the mirror answered HTTP 404 from "
        "enclave-lab-host. Check that the URL is right and that the mirror serves this path.",
    ]
    assert lib.probe_problems([], "h") == []
