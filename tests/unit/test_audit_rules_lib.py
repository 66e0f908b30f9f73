"""Unit tests for plugins/module_utils/hardening/audit_rules.py: whole rules compared in canonical form.

The fixtures were recorded on a real kernel: disk.rules loaded with ``auditctl -R``, and
auditctl_l.txt what ``auditctl -l`` printed back.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_collections.enclave.llm.plugins.module_utils.hardening import audit_rules as lib

FIXTURES = Path(__file__).parent / "fixtures"
DISK = (FIXTURES / "audit_rules" / "disk.rules").read_text()
LOADED = (FIXTURES / "audit_rules" / "auditctl_l.txt").read_text()


def test_recorded_kernel_rules_equal_the_file_they_came_from():
    result = lib.compare(DISK, LOADED)
    assert result == {"equal": True, "only_on_disk": [], "only_loaded": [], "reordered": []}
    assert sum(len(rules) for rules in lib.ruleset(LOADED).values()) == 67


def test_the_rules_augenrules_builds_equal_the_older_recording():
    disk = (FIXTURES / "hardening" / "audit_rules_disk.txt").read_text()
    loaded = (FIXTURES / "hardening" / "auditctl_l.txt").read_text()
    assert lib.compare(disk, loaded)["equal"]


@pytest.mark.parametrize(
    ("on_disk", "loaded"),
    [
        # syscalls, fields and permissions are sets
        (
            "-a always,exit -F arch=b64 -S chmod,fchmod -F auid>=1000 -F auid!=unset -k perm_mod",
            "-a always,exit -F arch=b64 -S fchmod -S chmod -F auid!=-1 -F auid>=1000 -F key=perm_mod",
        ),
        ("-w /etc/hosts -p aw -k locale", "-w /etc/hosts/ -p wa -k locale"),
        # the spellings auditctl -l prints for what a file says
        (
            "-a exit,always -F arch=x86_64 -S execve -F auid!=4294967295 -k x",
            "-a always,exit -F arch=b64 -S execve -F auid!=-1 -F key=x",
        ),
        (
            "-a always,exit -F arch=b64 -S open -F exit=-13 -k access",
            "-a always,exit -F arch=b64 -S open -F exit=-EACCES -F key=access",
        ),
        (
            "-a always,exit -F arch=b64 -S unlink -F a0=16 -k args",
            "-a always,exit -F arch=b64 -S unlink -F a0=0x10 -F key=args",
        ),
        (
            "-a always,exit -F arch=b64 -C euid!=uid -S execve -k emu",
            "-a always,exit -F arch=b64 -S execve -C uid!=euid -F key=emu",
        ),
        (
            "-a always,exit -F arch=b64 -S execve -C auid<uid -k lt",
            "-a always,exit -F arch=b64 -S execve -C uid>auid -F key=lt",
        ),
        # a path rule with only a permission and a key is a watch; no -S is all syscalls
        ("-a always,exit -F path=/usr/sbin/nft -F perm=x -k enclave_nft", "-w /usr/sbin/nft -p x -k enclave_nft"),
        ("-a always,exit -F dir=/etc/cron.d/ -F perm=w -k d", "-w /etc/cron.d/ -p w -k d"),
        (
            "-a always,exit -F path=/usr/bin/su -F perm=x -F auid>=1000 -k privileged",
            "-a always,exit -S all -F path=/usr/bin/su -F perm=x -F auid>=1000 -F key=privileged",
        ),
        ("-w /etc/fstab -k nop", "-w /etc/fstab -p rwxa -k nop"),
        ("-w /etc/hosts -k b -k a", "-w /etc/hosts -p rwxa -k a -k b"),
        # rules of different lists keep no order between each other
        (
            "-a always,exclude -F msgtype=CWD\n-w /etc/passwd -p wa -k identity",
            "-w /etc/passwd -p wa -k identity\n-a always,exclude -F msgtype=CWD",
        ),
        # -A goes first, as the kernel lists it
        (
            "-w /etc/passwd -p wa -k identity\n-A always,exit -F arch=b64 -S open -k first",
            "-a always,exit -F arch=b64 -S open -F key=first\n-w /etc/passwd -p wa -k identity",
        ),
        # control lines and comments are not rules
        (
            "## generated\n-D\n-b 8192\n-f 1\n--backlog_wait_time 60000\n-w /etc/group -p wa -k identity\n-e 1",
            "-w /etc/group -p wa -k identity",
        ),
    ],
)
def test_reorderings_and_spellings_compare_equal(on_disk, loaded):
    result = lib.compare(on_disk, loaded)
    assert result["equal"], lib.describe(result)


BASE = "-a always,exit -F arch=b64 -S chmod,fchmod -F auid>=1000 -F auid!=unset -k perm_mod"


@pytest.mark.parametrize(
    "loaded",
    [
        "-a always,exit -F arch=b64 -S chmod -F auid>=1000 -F auid!=-1 -F key=perm_mod",  # a syscall less
        "-a always,exit -F arch=b64 -S chmod,fchmod,fchmodat -F auid>=1000 -F auid!=-1 -F key=perm_mod",
        "-a always,exit -F arch=b32 -S chmod,fchmod -F auid>=1000 -F auid!=-1 -F key=perm_mod",  # arch
        "-a always,exit -F arch=b64 -S chmod,fchmod -F auid>=1000 -F key=perm_mod",  # a field less
        "-a always,exit -F arch=b64 -S chmod,fchmod -F auid>=500 -F auid!=-1 -F key=perm_mod",  # a value
        "-a always,exit -F arch=b64 -S chmod,fchmod -F auid>1000 -F auid!=-1 -F key=perm_mod",  # an operator
        "-a never,exit -F arch=b64 -S chmod,fchmod -F auid>=1000 -F auid!=-1 -F key=perm_mod",  # the action
        "-a always,exit -F arch=b64 -S chmod,fchmod -F auid>=1000 -F auid!=-1 -F key=other",  # the key
        "-a always,exit -F arch=b64 -S chmod,fchmod -F auid>=1000 -F auid!=-1",  # no key
        "",  # removed (auditctl -d)
    ],
)
def test_a_changed_or_missing_syscall_rule_differs(loaded):
    result = lib.compare(BASE, loaded)
    assert not result["equal"]
    assert result["only_on_disk"] == [lib.parse_rule(BASE)[2]]


@pytest.mark.parametrize(
    "loaded",
    [
        "-w /etc/passwd -p w -k identity",  # a permission less
        "-w /etc/passwd -p rwa -k identity",
        "-w /etc/passwd.d -p wa -k identity",  # another path
        "-w /etc/passwd -p wa -k other",
        "-a always,exit -F arch=b64 -S all -F path=/etc/passwd -F perm=wa -F key=identity",  # not all arches
    ],
)
def test_a_changed_watch_differs(loaded):
    assert not lib.compare("-w /etc/passwd -p wa -k identity", loaded)["equal"]


def test_one_rule_removed_from_the_recording_is_named():
    lines = LOADED.splitlines()
    removed = next(line for line in lines if "enclave_nft" in line)
    result = lib.compare(DISK, "\n".join(line for line in lines if line != removed))
    assert not result["equal"]
    assert result["only_on_disk"] == ["-w /usr/sbin/nft -p x -k enclave_nft"]
    assert result["only_loaded"] == []
    assert "only on disk: -w /usr/sbin/nft -p x -k enclave_nft" in lib.describe(result)


def test_a_rule_loaded_twice_or_added_differs():
    rule = "-w /etc/passwd -p wa -k identity"
    twice = lib.compare(rule, rule + "\n" + rule)
    assert not twice["equal"]
    assert twice["only_loaded"] == [rule]
    added = lib.compare(rule, rule + "\n-w /tmp/x -p wa -k added")
    assert added["only_loaded"] == ["-w /tmp/x -p wa -k added"]


def test_the_order_within_a_list_matters():
    first = "-a never,exit -F arch=b64 -S all -F path=/usr/bin/true"
    second = "-a always,exit -F arch=b64 -S execve -k exec"
    result = lib.compare(f"{first}\n{second}", f"{second}\n{first}")
    assert result == {"equal": False, "only_on_disk": [], "only_loaded": [], "reordered": ["exit"]}
    assert "another order" in lib.describe(result)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-a always -F arch=b64 -S open", "is not ACTION,LIST"),
        ("-a always,exit -F arch=sparc -S open", "arch 'sparc'"),
        ("-a always,exit -F arch=b64 -S 59", "name syscalls by name"),
        ("-w /etc/passwd -p wz", "permission 'wz'"),
        ("-a always,exit -F exit=-ENOPE -S open", "not an errno name"),
        ("-a always,exit -F auid", "is not NAME<op>VALUE"),
        ("-x /etc/passwd", "'-x'"),
        ("-k lonely", "neither -a/-A nor -w"),
        ("-w /etc/passwd -p", "has no value"),
    ],
)
def test_unknown_rules_are_refused_with_the_line(line, message):
    with pytest.raises(lib.AuditRuleError, match="line 2: .*" + message.replace("(", r"\(")):
        lib.ruleset("# first\n" + line)
