# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Compare the live nftables table with the one the firewall role installed for boot.

The expected table is the rules file itself, loaded into a scratch network
namespace and listed as JSON by the same nft: nothing to keep in sync (no digest),
and both sides are printed by the same code. Handles and counter values are
state, not policy, and are dropped before the comparison.

Pure functions here, plus two thin wrappers that run nft (``list_table``,
``expected_table``).
"""

from __future__ import annotations

import json
import os
import subprocess

# What varies between two loads of the same ruleset, or with traffic.
VOLATILE_KEYS = ("handle", "packets", "bytes")
NFT = "/usr/sbin/nft"
UNSHARE = "/usr/bin/unshare"


def _strip(value):
    if isinstance(value, dict):
        return {key: _strip(item) for key, item in value.items() if key not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def parse(text):
    """The objects of ``nft -j list table`` output, without metainfo; ValueError if it is not nft JSON."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError("nft printed no JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
        raise ValueError("nft printed JSON without an nftables list")
    return [item for item in data["nftables"] if isinstance(item, dict) and "metainfo" not in item]


def normalise(objects):
    """The policy of a table: every object without handles and counter values, in nft's order."""
    return [_strip(item) for item in objects]


def counters(objects):
    """``{name: packets}`` of the named counters in a listed table."""
    found = {}
    for item in objects:
        counter = item.get("counter")
        if isinstance(counter, dict) and "name" in counter:
            found[counter["name"]] = int(counter.get("packets", 0))
    return found


def _key(item):
    kind = next(iter(item))
    body = item[kind]
    if kind == "rule":
        return kind, body.get("chain"), json.dumps(body.get("expr"), sort_keys=True)
    return kind, body.get("name")


def _rule_text(body):
    return json.dumps(body.get("expr"), sort_keys=True, separators=(",", ":"))[:300]


def differences(expected, live):
    """Each way the live table departs from the expected one: ``[(kind, detail)]``, empty when equal.

    Kinds: ``chain_policy`` (a base chain's policy or hook changed), ``rule_added``,
    ``rule_removed``, ``set_changed``, ``object_added``, ``object_removed``,
    ``order_changed`` (same rules, another order: first match wins, so it matters).
    """
    expected, live = normalise(expected), normalise(live)
    if expected == live:
        return []
    found = []
    expected_chains = {item["chain"]["name"]: item["chain"] for item in expected if "chain" in item}
    live_chains = {item["chain"]["name"]: item["chain"] for item in live if "chain" in item}
    for name, chain in expected_chains.items():
        other = live_chains.get(name)
        if other is not None and other != chain:
            found.append(
                (
                    "chain_policy",
                    f"chain {name}: policy {chain.get('policy')} -> {other.get('policy')}, "
                    f"hook {chain.get('hook')} -> {other.get('hook')}",
                )
            )
    expected_rules = [_key(item) for item in expected if "rule" in item]
    live_rules = [_key(item) for item in live if "rule" in item]
    rule_bodies = {_key(item): item["rule"] for item in expected + live if "rule" in item}
    for key in live_rules:
        if key not in expected_rules:
            found.append(("rule_added", f"chain {key[1]}: {_rule_text(rule_bodies[key])}"))
    for key in expected_rules:
        if key not in live_rules:
            found.append(("rule_removed", f"chain {key[1]}: {_rule_text(rule_bodies[key])}"))
    if not found and sorted(expected_rules) == sorted(live_rules) and expected_rules != live_rules:
        found.append(("order_changed", "the same rules in another order"))
    others_expected = {_key(item): item for item in expected if "rule" not in item and "chain" not in item}
    others_live = {_key(item): item for item in live if "rule" not in item and "chain" not in item}
    for key, item in others_expected.items():
        if key not in others_live:
            found.append(("object_removed", f"{key[0]} {key[1]}"))
        elif others_live[key] != item:
            found.append(("set_changed" if key[0] == "set" else "object_changed", f"{key[0]} {key[1]}"))
    for key in others_live:
        if key not in others_expected:
            found.append(("object_added", f"{key[0]} {key[1]}"))
    for name in live_chains.keys() - expected_chains.keys():
        found.append(("object_added", f"chain {name}"))
    for name in expected_chains.keys() - live_chains.keys():
        found.append(("object_removed", f"chain {name}"))
    return found or [("table_changed", "the table differs from the installed rules file")]


def collapse(found, limit=3):
    """At most ``limit`` findings per kind; the rest summed up in one (a flushed table removes every rule)."""
    kept, counts = [], {}
    for kind, _detail in found:
        counts[kind] = counts.get(kind, 0) + 1
    seen = {}
    for kind, detail in found:
        seen[kind] = seen.get(kind, 0) + 1
        if counts[kind] <= limit or seen[kind] < limit:
            kept.append((kind, detail))
        elif seen[kind] == limit:
            kept.append((kind, f"{counts[kind] - limit + 1} more like: {detail}"))
    return kept


def _run(argv, timeout=10):
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=False,
    )


def list_table(family, name, nft=NFT, timeout=10):
    """``(objects, None)`` for the live table, ``(None, None)`` when it is missing, ``(None, error)`` otherwise."""
    run = _run([nft, "-j", "list", "table", family, name], timeout=timeout)
    if run.returncode != 0:
        message = (run.stderr or run.stdout).strip()
        if "No such file or directory" in message:
            return None, None
        return None, f"nft list table {family} {name} failed: {message[:300]}"
    return parse(run.stdout), None


def expected_table(path, family, name, nft=NFT, unshare=UNSHARE):
    """The table that ``path`` defines, loaded into a scratch network namespace; ValueError when it cannot be."""
    if not os.path.isfile(path):
        raise ValueError(f"the rules file {path} is missing")
    script = '"$1" -f "$2" && exec "$1" -j list table "$3" "$4"'
    run = _run([unshare, "--net", "--", "/bin/sh", "-c", script, "sh", nft, path, family, name], timeout=20)
    if run.returncode != 0:
        raise ValueError(f"loading {path} into a scratch namespace failed: {(run.stderr or run.stdout).strip()[:300]}")
    return parse(run.stdout)
