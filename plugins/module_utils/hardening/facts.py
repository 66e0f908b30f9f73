# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Parsers of the host's live state and the checks of the hardening settings.

Pure functions over recorded command output, so that every parser is unit
tested on what a real host printed (tests/unit/fixtures/hardening/). The
module enclave.llm.hardening_facts runs the commands; the filters in
plugins/filter/hardening.py run the checks before anything is changed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re

# auditd.conf actions (auditd.conf(5), audit 3.0.9 as in Debian 12).
AUDITD_DISK_ACTIONS = ("ignore", "syslog", "rotate", "exec", "suspend", "single", "halt")
AUDITD_SPACE_ACTIONS = ("ignore", "syslog", "rotate", "email", "exec", "suspend", "single", "halt")
AUDITD_MAX_LOG_FILE_ACTIONS = ("ignore", "syslog", "suspend", "rotate", "keep_logs")

# Kernel modules rootless Podman needs (overlay storage, fuse-overlayfs).
PODMAN_MODULES = ("overlay", "fuse")


def sysctl_path(key):
    """/proc/sys path of a sysctl key (dots separate levels; slashes stay in names)."""
    return "/proc/sys/" + key.replace(".", "/")


def parse_sysctl(text):
    """`sysctl -a` (or `sysctl key...`) output -> {key: value}; values keep inner spaces squashed."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            values[key.strip()] = " ".join(value.split())
    return values


def sysctl_mismatches(wanted, runtime):
    """Keys whose runtime value differs from the wanted one (whitespace-insensitive)."""
    return sorted(key for key, value in wanted.items() if " ".join(str(value).split()) != runtime.get(key))


def parse_mounts(text):
    """/proc/self/mounts -> {mountpoint: {"source", "fstype", "options": [..]}}; the last mount wins."""
    mounts = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        point = fields[1].replace("\\040", " ")
        mounts[point] = {"source": fields[0], "fstype": fields[2], "options": fields[3].split(",")}
    return mounts


def parse_ss_listening(text):
    """`ss -Hlntup` -> [{proto, local, port, processes: [names]}]."""
    sockets = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        proto = fields[0]
        local = fields[4]
        address, _sep, port = local.rpartition(":")
        processes = re.findall(r'\("([^"]+)",pid=(\d+)', line)
        sockets.append(
            {
                "proto": proto,
                "address": address.strip("[]"),
                "port": int(port) if port.isdigit() else port,
                "processes": sorted({name for name, _pid in processes}),
            }
        )
    return sockets


def parse_sshd_t(text):
    """`sshd -T` -> {keyword: value}; repeated keywords (hostkey, ...) become lists."""
    config = {}
    for line in text.splitlines():
        keyword, _sep, value = line.strip().partition(" ")
        if not keyword:
            continue
        keyword = keyword.lower()
        if keyword in config:
            previous = config[keyword]
            config[keyword] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            config[keyword] = value
    return config


def parse_systemctl_unit_files(text):
    """`systemctl list-unit-files --no-legend --plain` -> {unit: state}."""
    states = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            states[fields[0]] = fields[1]
    return states


def parse_lsmod(text):
    """/proc/modules -> sorted module names."""
    return sorted({line.split()[0] for line in text.splitlines() if line.strip()})


def parse_audit_rules(text):
    """`auditctl -l` (or a rules file) -> normalised rule lines, comments and control lines dropped."""
    rules = []
    for line in text.splitlines():
        line = " ".join(line.split())
        if not line or line.startswith("#") or line == "No rules":
            continue
        if re.match(r"^-(D|b|e|f|r|i|c)\b", line) or line.startswith("--backlog_wait_time"):
            continue
        rules.append(line)
    return rules


def ruleset_digest(text):
    """sha256 of a ruleset listing, independent of handle numbers and trailing space."""
    lines = [re.sub(r"\s+# handle \d+$", "", line.rstrip()) for line in text.splitlines() if line.strip()]
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def parse_find_setid(text):
    """`find / -perm /6000 -type f` output -> sorted paths."""
    return sorted({line.strip() for line in text.splitlines() if line.strip().startswith("/")})


# Checks of the settings: each returns a list of messages, empty when fine.


def unknown_sysctl_keys(missing, variable):
    """One message per sysctl key the host's kernel does not have."""
    return [
        f"{variable}: the kernel on this host has no sysctl '{key}' ({sysctl_path(key)} does not exist);"
        " remove it or correct its name"
        for key in sorted(missing)
    ]


def unknown_ssh_algorithms(wanted, supported):
    """Algorithms the installed OpenSSH does not know, one message per variable.

    wanted: {"cipher": [...], "mac": [...], "kex": [...]}; supported: the same keys,
    each the text `ssh -Q KIND` printed on the host.
    """
    variables = {"cipher": "os_hardening_ssh_ciphers", "mac": "os_hardening_ssh_macs", "kex": "os_hardening_ssh_kex"}
    problems = []
    for kind, variable in variables.items():
        known = supported.get(kind, "").split()
        if not wanted.get(kind):
            problems.append(f"{variable} is empty: name at least one algorithm")
            continue
        unknown = [name for name in wanted[kind] if name not in known]
        if unknown:
            problems.append(
                f"{variable}: {', '.join(repr(name) for name in unknown)} unknown to this host's OpenSSH;"
                f" choose from `ssh -Q {kind}`: {', '.join(known)}"
            )
    return problems


def ssh_lockout_problems(user, user_groups, allow_groups):
    """Refuse an SSH allowlist that would shut out the user Ansible connects as."""
    if user == "root":
        return [
            "Ansible connects as root, but the SSH hardening sets PermitRootLogin no: connect as an"
            " administrator in enclave_admin_users (ansible_user) with sudo"
        ]
    if not allow_groups:
        return ["os_hardening_ssh_allow_groups is empty: name the groups allowed to log in over SSH"]
    if not set(user_groups) & set(allow_groups):
        return [
            f"os_hardening_ssh_allow_groups ({', '.join(allow_groups)}) does not include any group of"
            f" {user} ({', '.join(user_groups)}), the user Ansible connects as: this run would lock it out."
            f" Add one of its groups to os_hardening_ssh_allow_groups"
        ]
    return []


def module_problems(blacklist):
    """Refuse to blacklist what rootless Podman needs."""
    return [
        f"os_hardening_modules_blacklist names '{name}', which rootless Podman needs: remove it"
        for name in blacklist
        if name in PODMAN_MODULES
    ]


def auditd_conf_problems(conf):
    """auditd.conf settings with values auditd would reject."""
    checks = {
        "disk_full_action": AUDITD_DISK_ACTIONS,
        "disk_error_action": AUDITD_DISK_ACTIONS,
        "space_left_action": AUDITD_SPACE_ACTIONS,
        "admin_space_left_action": AUDITD_SPACE_ACTIONS,
        "max_log_file_action": AUDITD_MAX_LOG_FILE_ACTIONS,
    }
    problems = []
    for key, allowed in checks.items():
        value = str(conf.get(key, "")).lower()
        if value not in allowed:
            problems.append(
                f"auditd_conf.{key} is '{conf.get(key)}', which auditd does not accept; choose one of: "
                + ", ".join(allowed)
            )
    return problems


# usbguard-daemon.conf(5) settings: the accepted values, or None for free text
# (lists of names, paths).
USBGUARD_DEVICE_POLICIES = ("allow", "block", "reject", "keep", "apply-policy")
USBGUARD_SETTINGS = {
    "RuleFile": None,
    "RuleFolder": None,
    "ImplicitPolicyTarget": ("allow", "block", "reject"),
    "PresentDevicePolicy": USBGUARD_DEVICE_POLICIES,
    "PresentControllerPolicy": USBGUARD_DEVICE_POLICIES,
    "InsertedDevicePolicy": ("block", "reject", "apply-policy"),
    "AuthorizedDefault": ("keep", "none", "all", "internal"),
    "RestoreControllerDeviceState": ("true", "false"),
    "DeviceManagerBackend": ("uevent", "umockdev"),
    "IPCAllowedUsers": None,
    "IPCAllowedGroups": None,
    "IPCAccessControlFiles": None,
    "DeviceRulesWithPort": ("true", "false"),
    "AuditBackend": ("FileAudit", "LinuxAudit"),
    "AuditFilePath": None,
    "HidePII": ("true", "false"),
}


def usbguard_setting_problems(settings):
    """usbguard-daemon.conf settings the daemon does not know or would refuse to start with."""
    problems = []
    for key, value in settings.items():
        if key not in USBGUARD_SETTINGS:
            problems.append(
                f"os_hardening_usbguard_settings names '{key}', which usbguard-daemon.conf does not have; "
                "known: " + ", ".join(USBGUARD_SETTINGS)
            )
            continue
        allowed = USBGUARD_SETTINGS[key]
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if allowed is not None and text not in allowed:
            problems.append(
                f"os_hardening_usbguard_settings.{key} is '{value}', which usbguard does not accept; "
                "choose one of: " + ", ".join(allowed)
            )
        elif not text.strip() or "\n" in text:
            problems.append(f"os_hardening_usbguard_settings.{key} must be one non-empty line")
    return problems


def audit_rule_summary(rules):
    """Each rule as 'key|what it watches', sorted: comparable between a rules file and `auditctl -l`.

    auditctl prints rules in its own canonical form (``-F key=`` for ``-k``, syscall
    names completed, ``auid!=-1`` for ``auid!=unset``), so whole lines cannot be
    compared; the key, the list and the object (path, directory or arch) can.
    """
    summary = []
    for rule in rules:
        key = re.search(r"(?:-k |-F key=)(\S+)", rule)
        watch = re.match(r"-w (\S+)", rule)
        if watch:
            target = "path=" + watch.group(1).rstrip("/")
        else:
            obj = re.search(r"-F (path|dir)=(\S+)", rule)
            arch = re.search(r"-F arch=(\S+)", rule)
            target = (
                f"{obj.group(1) if obj.group(1) == 'path' else 'path'}={obj.group(2).rstrip('/')}"
                if obj
                else f"arch={arch.group(1) if arch else 'any'}"
            )
        summary.append(f"{key.group(1) if key else ''}|{target}")
    return sorted(summary)


# Pending security updates (ENC-OS-015), from apt's own output. The names and
# versions come from `apt-get -s dist-upgrade`, where each of a version's
# sources comes from `apt-cache policy`: the simulation names only a label, while
# the Origins-Pattern of unattended-upgrades also matches origin, codename,
# component and site, which only the policy listing gives.

APT_INST = re.compile(r"^Inst (\S+) \[([^\]]+)\] \((\S+) ")
APT_POLICY_VERSION = re.compile(r"^ (\*\*\*|   ) (\S+) (-?\d+)$")
APT_POLICY_SOURCE = re.compile(r"^\s+(-?\d+) (\S.*)$")
# unattended-upgrades' keys (its match_whitelist_string) -> apt's release fields.
ORIGIN_KEYS = {
    "o": "o",
    "origin": "o",
    "l": "l",
    "label": "l",
    "a": "a",
    "suite": "a",
    "archive": "a",
    "c": "c",
    "component": "c",
    "n": "n",
    "codename": "n",
    "site": "site",
}


def parse_apt_simulation(text):
    """`apt-get -s dist-upgrade` -> {package: {"installed", "candidate"}}; new installs are not upgrades."""
    upgrades = {}
    for line in text.splitlines():
        match = APT_INST.match(line)
        if match:
            upgrades[match.group(1)] = {"installed": match.group(2), "candidate": match.group(3)}
    return upgrades


def parse_apt_sources(text):
    """`apt-cache policy` without arguments -> {index line: release fields, "site" the origin host}."""
    sources = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        match = re.match(r"^ (-?\d+) (\S.*)$", line)
        if match:
            current = sources.setdefault(match.group(2), {})
        elif current is not None and stripped.startswith("release "):
            for field in stripped[len("release ") :].split(","):
                key, _sep, value = field.partition("=")
                current[key.strip()] = value.strip()
        elif current is not None and stripped.startswith("origin "):
            current["site"] = stripped[len("origin ") :]
    return sources


def parse_apt_policy_versions(text):
    """`apt-cache policy PACKAGE...` -> {package: [{"version", "installed", "sources": [index line]}]}.

    apt lists each package's versions highest first, so the versions above the
    installed one (marked ***) are the newer ones."""
    packages = {}
    versions = None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            versions = packages.setdefault(line[:-1], [])
            continue
        if versions is None:
            continue
        match = APT_POLICY_VERSION.match(line)
        if match:
            versions.append({"version": match.group(2), "installed": match.group(1) == "***", "sources": []})
            continue
        match = APT_POLICY_SOURCE.match(line)
        if match and versions and line.startswith("        "):
            versions[-1]["sources"].append(match.group(2))
    return packages


def origin_pattern_matches(pattern, release, distro_id, distro_codename):
    """One Origins-Pattern entry ("origin=Debian,codename=${distro_codename}-security,...")
    against a source's release fields, as unattended-upgrades matches it (fnmatch per key)."""
    wanted = []
    for token in re.split(r"(?<!\\),", pattern):
        key, sep, value = token.replace("\\,", ",").partition("=")
        key = key.strip()
        if not sep or key not in ORIGIN_KEYS:
            raise ValueError(
                f"origin pattern {pattern!r}: '{token}' is not key=value with a key of "
                + ", ".join(sorted(set(ORIGIN_KEYS)))
            )
        value = value.strip().replace("${distro_id}", distro_id).replace("${distro_codename}", distro_codename)
        wanted.append((ORIGIN_KEYS[key], value))
    return all(fnmatch.fnmatchcase(release.get(field, ""), value) for field, value in wanted)


def pending_security_updates(simulation, policy, sources, patterns, distro_id, distro_codename):
    """Installed packages for which a source matching one of the patterns offers a newer version.

    simulation, policy, sources: the parsed outputs above. Each result names the
    newest such version and its source, sorted by package."""
    pending = []
    for name in sorted(simulation):
        for entry in policy.get(name, []):
            if entry["installed"]:
                break
            matching = [
                index
                for index in entry["sources"]
                if index in sources
                and any(origin_pattern_matches(p, sources[index], distro_id, distro_codename) for p in patterns)
            ]
            if matching:
                pending.append(
                    {
                        "name": name,
                        "installed": simulation[name]["installed"],
                        "version": entry["version"],
                        "source": matching[0],
                        "spec": f"{name}={entry['version']}",
                    }
                )
                break
    return pending


def distro_of(os_release):
    """/etc/os-release -> (distro id as lsb_release -is prints it, codename), as unattended-upgrades substitutes."""
    fields = {}
    for line in os_release.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return fields.get("NAME", "").split(" ")[0] or fields.get("ID", "").capitalize(), fields.get("VERSION_CODENAME", "")
