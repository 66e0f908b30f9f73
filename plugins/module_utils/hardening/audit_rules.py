# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Audit rules in one canonical form, so the kernel's rules and the rules on disk compare whole.

``auditctl -l`` prints a rule differently from how a rules file states it: ``-F key=`` for
``-k``, ``auid!=-1`` for ``auid!=unset``, ``-EACCES`` for ``-13``, syscalls and ``-C`` operands
in kernel order, a path rule with only a permission and a key as ``-w``, ``-S all`` where a file
names no syscall. :func:`canonical` maps both spellings of one rule to the same string; the
syscalls, permissions, fields and keys inside a rule are sets, so their order does not matter.
The order of the rules within one filter list does (the first matching rule decides), so
:func:`ruleset` keeps it, with ``-A`` rules first as the kernel places them.
"""

from __future__ import annotations

import errno
import shlex

# Control lines: they set the audit system's state, they are not rules.
_CONTROL = {
    "-D",
    "-b",
    "-f",
    "-e",
    "-r",
    "-i",
    "-c",
    "-s",
    "--backlog_wait_time",
    "--loginuid-immutable",
    "--reset-lost",
    "--signal",
}
_LISTS = {"exit", "exclude", "user", "task", "filesystem", "io_uring", "entry"}
# Lists whose rules carry a syscall mask.
_SYSCALL_LISTS = {"exit", "entry", "io_uring"}
_ARCH = {"b64": "b64", "x86_64": "b64", "amd64": "b64", "b32": "b32", "i386": "b32", "i686": "b32"}
_ID_FIELDS = {"uid", "euid", "suid", "fsuid", "auid", "loginuid", "obj_uid", "gid", "egid", "sgid", "fsgid", "obj_gid"}
# Longest first, so '<=' is not read as '<'.
_OPERATORS = ("!=", "<=", ">=", "&=", "=", "<", ">", "&")
_SWAPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}
_PERM_ORDER = "rwxa"


class AuditRuleError(ValueError):
    """A line that is neither a control line nor a rule auditctl would accept."""


def _split_field(text, line):
    for op in _OPERATORS:
        name, sep, value = text.partition(op)
        if sep and name and value and all(c not in name for c in "!<>=&"):
            return name, op, value
    raise AuditRuleError(f"'{text}' in '{line}' is not NAME<op>VALUE")


def _field_value(name, value, line):
    if name in _ID_FIELDS and value in ("unset", "-1", "4294967295"):
        return "-1"
    if name == "exit":
        number = -getattr(errno, value[1:], 0) if value.startswith("-E") else None
        if number == 0:
            raise AuditRuleError(f"'{value}' in '{line}' is not an errno name")
        return str(number if number is not None else int(value, 0))
    if name in ("a0", "a1", "a2", "a3"):
        return hex(int(value, 0))
    if name in ("path", "dir"):
        return value.rstrip("/") or "/"
    if name == "perm":
        return _perm(value, line)
    if name == "arch":
        if value not in _ARCH:
            raise AuditRuleError(f"arch '{value}' in '{line}' is not one of {sorted(_ARCH)}")
        return _ARCH[value]
    return value


def _perm(value, line):
    if not value or set(value) - set(_PERM_ORDER):
        raise AuditRuleError(f"permission '{value}' in '{line}' is not a combination of r, w, x, a")
    return "".join(c for c in _PERM_ORDER if c in value)


def _comparison(text, line):
    left, op, right = _split_field(text, line)
    if left > right:
        left, op, right = right, _SWAPPED.get(op, op), left
    return ("C", left, op, right)


def parse_rule(line):
    """One line -> (list, prepend, canonical string), or None for comments, blanks and control lines."""
    line = " ".join(line.split())
    if not line or line.startswith("#") or line == "No rules":
        return None
    try:
        tokens = shlex.split(line)
    except ValueError as err:
        raise AuditRuleError(f"'{line}': {err}") from None
    if tokens[0] in _CONTROL:
        return None
    action_list, prepend, watch = None, False, None
    syscalls, fields, keys, perm = set(), [], [], None
    pairs = iter(tokens)
    for option in pairs:
        value = next(pairs, None)
        if value is None:
            raise AuditRuleError(f"'{option}' in '{line}' has no value")
        if option in ("-a", "-A"):
            parts = value.split(",")
            lists = [p for p in parts if p in _LISTS]
            actions = [p for p in parts if p in ("always", "never")]
            if len(parts) != 2 or len(lists) != 1 or len(actions) != 1:
                raise AuditRuleError(f"'{option} {value}' in '{line}' is not ACTION,LIST (e.g. always,exit)")
            action_list, prepend = (actions[0], lists[0]), option == "-A"
        elif option == "-w":
            watch = value.rstrip("/") or "/"
        elif option == "-p":
            perm = _perm(value, line)
        elif option == "-k":
            keys.append(value)
        elif option == "-S":
            names = value.split(",")
            if any(name.isdigit() for name in names):
                raise AuditRuleError(f"'-S {value}' in '{line}': name syscalls by name (auditctl -l prints names)")
            syscalls.update(names)
        elif option == "-F":
            name, op, field = _split_field(value, line)
            if name == "key":
                keys.append(field)
            else:
                fields.append((name, op, _field_value(name, field, line)))
        elif option == "-C":
            fields.append(_comparison(value, line))
        else:
            raise AuditRuleError(f"'{option}' in '{line}' is not a rule option auditctl knows")
    if watch is not None:
        if action_list or syscalls:
            raise AuditRuleError(f"'{line}' mixes -w with -a/-S")
        action_list = ("always", "exit")
        fields.append(("path", "=", watch))
        perm = perm or _PERM_ORDER
    elif action_list is None:
        raise AuditRuleError(f"'{line}' has neither -a/-A nor -w")
    if perm:
        fields = [f for f in fields if f[0] != "perm"] + [("perm", "=", perm)]
    return action_list[1], prepend, _render(action_list, syscalls, fields, keys)


def _render(action_list, syscalls, fields, keys):
    action, filter_list = action_list
    if filter_list in _SYSCALL_LISTS and (not syscalls or "all" in syscalls):
        syscalls = {"all"}
    names = {f[0] for f in fields}
    # auditctl prints a path or dir rule on all syscalls with a permission and nothing else
    # as a watch (-w), whether it came from -w or -a: so do we.
    if (
        (action, filter_list) == ("always", "exit")
        and syscalls == {"all"}
        and "perm" in names
        and names & {"path", "dir"}
        and names <= {"perm", "path", "dir"}
        and all(f[1] == "=" for f in fields)
    ):
        values = dict((f[0], f[2]) for f in fields)
        text = f"-w {values.get('path', values.get('dir'))} -p {values['perm']}"
    else:
        text = f"-a {action},{filter_list}"
        arch = sorted(f for f in fields if f[0] == "arch")
        text += "".join(f" -F arch={f[2]}" for f in arch)
        if syscalls:
            text += " -S " + ",".join(sorted(syscalls))
        for field in sorted(f for f in fields if f[0] != "arch"):
            text += f" -C {field[1]}{field[2]}{field[3]}" if field[0] == "C" else f" -F {field[0]}{field[1]}{field[2]}"
    return text + "".join(f" -k {key}" for key in sorted(keys))


def ruleset(text):
    """Rules text (a rules file or ``auditctl -l``) -> {list: [canonical rule, ...]} in kernel order."""
    lists = {}
    for number, line in enumerate(text.splitlines(), 1):
        try:
            parsed = parse_rule(line)
        except AuditRuleError as err:
            raise AuditRuleError(f"line {number}: {err}") from None
        if parsed is None:
            continue
        filter_list, prepend, rule = parsed
        rules = lists.setdefault(filter_list, {"head": [], "tail": []})
        if prepend:
            rules["head"].insert(0, rule)
        else:
            rules["tail"].append(rule)
    return {name: rules["head"] + rules["tail"] for name, rules in sorted(lists.items())}


def compare(on_disk, loaded):
    """Rules text on disk vs loaded -> {equal, only_on_disk, only_loaded, reordered}.

    only_on_disk/only_loaded list canonical rules (a rule present twice on one side and once
    on the other counts once); reordered names the lists holding the same rules in another order.
    """
    disk, live = ruleset(on_disk), ruleset(loaded)
    disk_all = [rule for rules in disk.values() for rule in rules]
    live_all = [rule for rules in live.values() for rule in rules]
    only_on_disk = _minus(disk_all, live_all)
    only_loaded = _minus(live_all, disk_all)
    reordered = sorted(
        name for name in set(disk) & set(live) if disk[name] != live[name] and sorted(disk[name]) == sorted(live[name])
    )
    return {
        "equal": disk == live,
        "only_on_disk": only_on_disk,
        "only_loaded": only_loaded,
        "reordered": reordered,
    }


def _minus(left, right):
    rest = list(right)
    missing = []
    for rule in left:
        if rule in rest:
            rest.remove(rule)
        else:
            missing.append(rule)
    return missing


def describe(result):
    """A comparison's differences in one sentence, for a failure message."""
    parts = []
    if result["only_on_disk"]:
        parts.append("only on disk: " + "; ".join(result["only_on_disk"]))
    if result["only_loaded"]:
        parts.append("only loaded: " + "; ".join(result["only_loaded"]))
    if result["reordered"]:
        parts.append("same rules in another order in the list(s) " + ", ".join(result["reordered"]))
    return ". ".join(parts) or "no difference"
