# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Pure checks behind the preflight role.

Every function takes plain data (strings, lists, dicts as they come out of the
inventory or out of Ansible facts) and returns plain data; nothing here touches
the network, the file system or Ansible itself, so it is unit-tested without a
host. Functions named ``*_problems`` return a list of messages, one per fault,
each naming the variable and saying what to change; an empty list means fine.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from ansible_collections.enclave.llm.plugins.module_utils.netpolicy import firewall, nftables_policy

# Distribution name and major version as Ansible reports them
# (ansible_facts.distribution / distribution_major_version).
SUPPORTED_OS = {("Debian", "12"): "Debian 12 (bookworm)"}
UNTESTED_OS = {
    ("Ubuntu", "24"): "Ubuntu 24.04 (noble)",
    ("RedHat", "9"): "Red Hat Enterprise Linux 9",
    ("Rocky", "9"): "Rocky Linux 9",
    ("AlmaLinux", "9"): "AlmaLinux 9",
}
SUPPORTED_TEXT = "Debian 12 (supported and tested); Ubuntu 24.04, RHEL/Rocky/AlmaLinux 9 (recognised, untested)"

URL_SCHEMES = ("http", "https")
_HEX40 = re.compile(r"^[0-9A-F]{40}$")


def classify_os(distribution, major_version, version=""):
    """Return ``{"status", "name"}`` for a host's OS.

    status is ``supported`` (tested), ``untested`` (recognised: the roles are
    written for it but no test runs on it) or ``unsupported``.
    """
    distribution = str(distribution or "")
    major_version = str(major_version or "")
    key = (distribution, major_version)
    if key in SUPPORTED_OS:
        return {"status": "supported", "name": SUPPORTED_OS[key]}
    if key in UNTESTED_OS:
        # Ubuntu's major version is the year: only the 24.04 release is recognised.
        if distribution == "Ubuntu" and str(version) not in ("", "24.04"):
            return {"status": "unsupported", "name": f"Ubuntu {version}"}
        return {"status": "untested", "name": UNTESTED_OS[key]}
    name = " ".join(part for part in (distribution, str(version or major_version)) if part)
    return {"status": "unsupported", "name": name or "an unknown OS"}


def parse_ip(value):
    """Return an ``ipaddress`` address for a literal IPv4/IPv6 address, else None."""
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def parse_network(value):
    """Return an ``ipaddress`` network for ``ADDRESS/PREFIX`` (or a bare address), else None.

    Host bits must be clear: ``198.51.100.5/24`` is refused.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError:
        return None


def ip_in_any(address, cidrs):
    """True when ``address`` lies inside one of ``cidrs`` (invalid entries are ignored)."""
    addr = parse_ip(address)
    if addr is None:
        return False
    for cidr in cidrs or []:
        net = parse_network(cidr)
        if net is not None and addr.version == net.version and addr in net:
            return True
    return False


def zones_problems(zones):
    """Messages for ``enclave_zones``, from the firewall's own zone check (``nftables_policy``).

    One parser for both: a zone the preflight accepts is a zone the firewall
    applies, catch-all limits included (``network_breadth``).
    """
    if not isinstance(zones, dict):
        return ["enclave_zones must be a mapping with the keys admin, clinical and cluster."]
    return [_relabel(problem, [], []) for problem in nftables_policy.policy_problems({"zones": zones})]


def admin_users_problems(users):
    """Messages for ``enclave_admin_users``: a non-empty list of account names."""
    if not isinstance(users, list) or not users:
        return [
            "enclave_admin_users is empty: list the accounts that must keep SSH access, "
            "at least the one Ansible connects as."
        ]
    bad = [u for u in users if not isinstance(u, str) or not re.match(r"^[a-z_][a-z0-9_.-]*\$?$", u)]
    if bad:
        what = "is not a valid account name" if len(bad) == 1 else "are not valid account names"
        return [f"enclave_admin_users: {_quoted(bad)} {what}: use lower-case POSIX user names (e.g. enclave-admin)."]
    return []


def _quoted(values):
    return ", ".join(repr(str(v)) for v in values)


def _is_are(values):
    return "is" if len(values) == 1 else "are"


def _host_problem(label, host):
    """Message when ``host`` is not a literal IP address; ``label`` starts the message."""
    if parse_ip(host) is not None:
        return None
    return (
        f"{label}: {host!r} is not an IP address. The enclave host gets no DNS: write the mirror's "
        "address (e.g. 192.0.2.10), not a name."
    )


def url_problems(name, url):
    """Messages for an http(s) URL whose host must be a literal IP address."""
    if not isinstance(url, str) or not url.strip():
        return [f"{name} is empty: set it to the mirror's http:// URL (e.g. http://192.0.2.10/)."]
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return [f"{name} {url} is not a valid URL ({exc}): write http://ADDRESS[:PORT]/PATH."]
    if parts.scheme not in URL_SCHEMES:
        return [
            f"{name} {url}: the scheme must be http or https, not {parts.scheme or 'none'!r}: "
            "write http://ADDRESS[:PORT]/PATH (e.g. http://192.0.2.10:3142/debian)."
        ]
    if parts.username or parts.password:
        return [
            f"{name} {url}: remove the credentials from the URL; they would end up in logs and in files on the host."
        ]
    if not parts.hostname:
        return [f"{name} {url} has no host: write http://ADDRESS[:PORT]/PATH."]
    problem = _host_problem(f"{name} {url}", parts.hostname)
    if problem:
        return [problem]
    if port == 0:
        return [f"{name} {url}: port 0 is not a valid port."]
    return []


def hostport_problems(name, value):
    """Messages for ``ADDRESS:PORT`` (IPv6 as ``[ADDRESS]:PORT``)."""
    example = "write ADDRESS:PORT, e.g. 192.0.2.10:5000 or [2001:db8::10]:5000."
    if not isinstance(value, str) or not value.strip():
        return [f"{name} is empty: {example}"]
    match = re.match(r"^\[([^\]]+)\]:(\d+)$", value.strip()) or re.match(r"^([^:]+):(\d+)$", value.strip())
    if not match:
        return [f"{name} {value!r} is not ADDRESS:PORT: {example}"]
    host, port = match.group(1), int(match.group(2))
    problem = _host_problem(f"{name} {value}", host)
    if problem:
        return [problem]
    if not 0 < port < 65536:
        return [f"{name} {value!r}: port {port} is out of range (1-65535)."]
    return []


def normalize_fingerprint(value):
    """Upper-case a fingerprint and drop spaces; None when it is not 40 hex digits.

    An all-digit fingerprint written without quotes reaches us as an int; it is
    accepted when it still has 40 digits.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    cleaned = value.replace(" ", "").upper()
    if cleaned.startswith("0X"):
        cleaned = cleaned[2:]
    return cleaned if _HEX40.match(cleaned) else None


def fingerprint_problems(name, values):
    """Messages for a list of pinned OpenPGP primary key fingerprints."""
    if not isinstance(values, list) or not values:
        return [f"{name} is empty: pin the primary key fingerprint of every key in enclave_mirror.apt_keyring_files."]
    bad = [v for v in values if normalize_fingerprint(v) is None]
    if bad:
        return [
            f"{name}: {_quoted(bad)} {_is_are(bad)} not a full 40-hex-digit fingerprint: pin the whole "
            "primary key fingerprint (the fpr line after pub in `gpg --show-keys --with-colons FILE`), "
            "never a short or long key ID."
        ]
    return []


def keyring_path_problems(name, values):
    """Messages for the keyring file list (absolute controller paths)."""
    if not isinstance(values, list) or not values:
        return [f"{name} is empty: list the mirror's signing keyring files on the controller (absolute paths)."]
    relative = [v for v in values if not isinstance(v, str) or not v.startswith("/")]
    if relative:
        return [
            f"{name}: {_quoted(relative)} {_is_are(relative)} not an absolute path: write the full path "
            'on the controller (e.g. "{{ inventory_dir }}/keys/mirror.gpg").'
        ]
    return []


def mirror_problems(mirror):
    """Messages for ``enclave_mirror`` (shape is checked by the argument spec first)."""
    if not isinstance(mirror, dict):
        return ["enclave_mirror must be a mapping (see the preflight role's README)."]
    problems = []
    problem = _host_problem("enclave_mirror.host", mirror.get("host"))
    if problem:
        problems.append(problem)
    for key in ("apt_url", "pip_index_url", "models_url"):
        problems += url_problems(f"enclave_mirror.{key}", mirror.get(key))
    if mirror.get("apt_security_url"):
        problems += url_problems("enclave_mirror.apt_security_url", mirror["apt_security_url"])
    problems += hostport_problems("enclave_mirror.registry", mirror.get("registry"))
    components = mirror.get("apt_components")
    if components is not None and (not isinstance(components, list) or not components):
        problems.append("enclave_mirror.apt_components is empty: list the archive components, e.g. [main].")
    suite = mirror.get("apt_suite")
    if suite is not None and not re.match(r"^[a-z][a-z0-9.-]*$", str(suite)):
        problems.append(
            f"enclave_mirror.apt_suite {suite!r} is not a suite name: write the release codename "
            "(e.g. bookworm) or leave it unset to use the host's release."
        )
    problems += keyring_path_problems("enclave_mirror.apt_keyring_files", mirror.get("apt_keyring_files"))
    problems += fingerprint_problems("enclave_mirror.apt_key_fingerprints", mirror.get("apt_key_fingerprints"))
    return problems


def gpg_primary_fingerprints(colon_output):
    """Primary key fingerprints from ``gpg --show-keys --with-colons`` output.

    The primary key's fingerprint is the first ``fpr`` record after a ``pub``
    record; ``rvk`` (designated revoker) records may come in between and carry
    other keys' fingerprints in field 10, and ``fpr`` records after ``sub`` are
    subkeys. Order is kept, duplicates are dropped.
    """
    found = []
    waiting = False
    for line in (colon_output or "").splitlines():
        fields = line.split(":")
        record = fields[0]
        if record in ("pub", "sec"):
            waiting = True
        elif record == "fpr" and waiting:
            waiting = False
            fpr = normalize_fingerprint(fields[9]) if len(fields) > 9 else None
            if fpr and fpr not in found:
                found.append(fpr)
        elif record in ("sub", "ssb", "uid", "uat"):
            waiting = False
    return found


def fingerprint_mismatch(pinned, found, keyring_files=None):
    """One message when the pinned set differs from the keyring's primary keys, else ''."""
    pinned_set = {normalize_fingerprint(f) for f in pinned or []} - {None}
    found_set = {normalize_fingerprint(f) for f in found or []} - {None}
    if pinned_set == found_set:
        return ""
    parts = []
    missing = sorted(pinned_set - found_set)
    extra = sorted(found_set - pinned_set)
    if missing:
        parts.append(f"pinned but not in the keyring files: {', '.join(missing)}")
    if extra:
        parts.append(f"in the keyring files but not pinned: {', '.join(extra)}")
    files = ", ".join(keyring_files or []) or "the keyring files"
    return (
        "enclave_mirror.apt_key_fingerprints does not match the primary keys in "
        f"enclave_mirror.apt_keyring_files ({files}): {'; '.join(parts)}. Pin exactly the keyring's "
        "primary keys: correct the fingerprints, or replace the keyring files with the mirror's "
        "real signing keys."
    )


def http_failure_reason(result):
    """A short reason from an ``ansible.builtin.uri`` result; '' when it answered 200."""
    if not isinstance(result, dict):
        return "no result"
    status = result.get("status", -1)
    try:
        status = int(status)
    except (TypeError, ValueError):
        status = -1
    if status == 200:
        return ""
    if status > 0:
        return f"HTTP {status}"
    msg = str(result.get("msg", ""))
    lowered = msg.lower()
    for needle, reason in (
        ("connection refused", "Connection refused"),
        ("timed out", "timed out"),
        ("no route to host", "No route to host"),
        ("network is unreachable", "Network is unreachable"),
        ("name or service not known", "name lookup failed"),
        ("temporary failure in name resolution", "name lookup failed"),
        ("certificate verify failed", "TLS certificate not trusted"),
        ("connection reset", "Connection reset"),
    ):
        if needle in lowered:
            return reason
    # urllib wraps the reason in its own "<url... error REASON>" text.
    match = re.search(r"<url\w* error (.*)>", msg)
    if match:
        return match.group(1).strip()
    return msg.strip() or "no answer"


def df_available_mib(df_output):
    """Free MiB from ``df -P -k PATH`` output (the last line, 4th column); None if unreadable."""
    lines = [line for line in (df_output or "").splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    if len(fields) < 6:
        return None
    try:
        return int(fields[3]) // 1024
    except ValueError:
        return None


def ssh_client_address(ssh_connection):
    """The client address (first field) of SSH_CONNECTION, or '' when absent/garbled."""
    fields = str(ssh_connection or "").split()
    if not fields or parse_ip(fields[0]) is None:
        return ""
    return fields[0]


def mirror_probes(mirror, suite, apt_based=True):
    """The URLs the host must be able to GET: ``[{"var", "url"}, ...]``.

    apt: ``<apt_url>/dists/<suite>/InRelease`` and, when set,
    ``<apt_security_url>/dists/<suite>-security/InRelease`` (only on apt-based
    hosts); pip: ``pip_index_url`` as written.
    """
    mirror = mirror or {}
    probes = []
    if apt_based:
        apt_url = mirror["apt_url"].rstrip("/")
        probes.append({"var": "enclave_mirror.apt_url", "url": f"{apt_url}/dists/{suite}/InRelease"})
        if mirror.get("apt_security_url"):
            security_url = mirror["apt_security_url"].rstrip("/")
            probes.append(
                {"var": "enclave_mirror.apt_security_url", "url": f"{security_url}/dists/{suite}-security/InRelease"}
            )
    probes.append({"var": "enclave_mirror.pip_index_url", "url": mirror["pip_index_url"]})
    return probes


def probe_problems(results, hostname):
    """Messages for the mirror probes that did not answer HTTP 200.

    ``results`` is the ``results`` list of a looped ``ansible.builtin.uri``
    task whose items come from :func:`mirror_probes`.
    """
    problems = []
    for result in results or []:
        item = result.get("item") or {}
        reason = http_failure_reason(result)
        if not reason:
            continue
        var, url = item.get("var"), item.get("url")
        if reason.startswith("HTTP "):
            problems.append(
                f"{var} {url}: the mirror answered {reason} from {hostname}. "
                "Check that the URL is right and that the mirror serves this path."
            )
        else:
            problems.append(
                f"{var} {url}: not reachable from {hostname} ({reason}). "
                "Check that the mirror host is up and the URL is right."
            )
    return problems


def _indexed(name, value):
    """``name[0]``, ``name[1]``, ... for each entry of an inventory list (or a single value)."""
    return [f"{name}[{index}]" for index in range(len(firewall._as_list(value)))]


def _egress_origins(zones, ingress, mirror, ntp_servers, dns_resolvers, egress_extra, owner):
    """The variable behind each entry of ``build_policy``'s egress list, in its order."""
    origins = []
    for entry in firewall.mirror_egress(mirror, owner):
        uses = entry["reason"].removeprefix("offline mirror (").rstrip(")").split(", ")
        origins.append(" and ".join(f"enclave_mirror.{use}" for use in uses))
    origins += _indexed("firewall_ntp_servers", ntp_servers)
    for resolver in _indexed("firewall_dns_resolvers", dns_resolvers):
        origins += [resolver] * 2
    members = _indexed("enclave_zones.cluster", (zones or {}).get("cluster"))
    for rule in _indexed("firewall_ingress.cluster", (ingress or {}).get("cluster")):
        origins += [f"{member} ({rule})" for member in members]
    origins += _indexed("firewall_egress_extra", egress_extra)
    return origins


def _ingress_origins(ingress):
    return [
        origin for zone in firewall.ZONES for origin in _indexed(f"firewall_ingress.{zone}", (ingress or {}).get(zone))
    ]


def _relabel(message, egress, ingress):
    """``message`` from ``compile_policy`` with each policy field replaced by the inventory variable."""

    def name(origins, fallback):
        def replace(match):
            index = int(match.group(1))
            return origins[index] if index < len(origins) else f"{fallback}[{index}]"

        return replace

    message = re.sub(r"(?<![\w.\[])egress\[(\d+)\]", name(egress, "the firewall's egress"), message)
    message = re.sub(r"(?<![\w.\[])ingress\[(\d+)\]", name(ingress, "the firewall's ingress"), message)
    message = re.sub(r"(?<![\w.])zones\.(admin|clinical|cluster)\b", r"enclave_zones.\1", message)
    for field, variable in (
        (
            "egress",
            "the egress allowlist (enclave_mirror, firewall_ntp_servers, firewall_dns_resolvers, "
            "firewall_egress_extra)",
        ),
        ("families", "firewall_families"),
        ("log", "firewall_log"),
        ("zones", "enclave_zones"),
        ("the policy has", "the firewall policy (enclave_zones, firewall_egress_extra) has"),
    ):
        if message.startswith(field):
            return variable + message[len(field) :]
    return message


def firewall_settings_problems(
    zones,
    ingress=None,
    mirror=None,
    ntp_servers=None,
    dns_resolvers=None,
    egress_extra=None,
    owner="hospital-it",
    log=None,
    families=None,
    max_entries=nftables_policy.DEFAULT_MAX_ENTRIES,
):
    """Messages for the firewall role's settings, each naming the inventory variable.

    The policy is built by ``firewall.build_policy`` and checked by
    ``nftables_policy.compile_policy``, the very functions the firewall role
    applies with, so the preflight refuses what the role would refuse (and
    every catch-all network, see ``network_breadth``) before any host changes.
    The users and groups denied egress are names resolved on the host; the
    role checks them.
    """
    listed = sum(len(v) for v in (egress_extra, ntp_servers, dns_resolvers) if isinstance(v, list))
    if listed > max_entries:
        # Refused before anything is copied or parsed.
        return [
            f"firewall_egress_extra, firewall_ntp_servers and firewall_dns_resolvers list {listed} entries, more "
            f"than the firewall's {max_entries}: merge destinations into CIDRs and ports into ranges."
        ]
    try:
        policy = firewall.build_policy(
            zones,
            ingress=ingress,
            mirror=mirror,
            ntp_servers=ntp_servers,
            dns_resolvers=dns_resolvers,
            egress_extra=egress_extra,
            owner=owner,
            log=log,
            families=families,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        return [str(exc)]
    egress = _egress_origins(zones, ingress, mirror, ntp_servers, dns_resolvers, egress_extra, owner)
    if len(egress) != len(policy["egress"]):
        egress = []
    ingress_names = _ingress_origins(ingress)
    if len(ingress_names) != len(policy["ingress"]):
        ingress_names = []
    problems = nftables_policy.policy_problems(policy, max_entries)
    return [_relabel(problem, egress, ingress_names) for problem in problems]
