# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Close the egress a ruleset breach opened: load the installed rules file again.

The rules file the firewall role installed for boot is one ``nft -f``
transaction that deletes and recreates ``table inet enclave`` (and touches
nothing else), so loading it replaces an altered, flushed or deleted table
atomically. The monitor then lists the live table again and records whether
it equals the installed one.

Restores are rate-limited: a rule injected again at once must not turn the
monitor into a loop of reloads (each reload is itself a ruleset event). At
most ``BURST`` restores run in any ``WINDOW`` seconds; a restore refused by the
limit is recorded as such, and the table is restored again by the first check
that finds it still altered once the window allows it.

Pure decisions here, plus one thin wrapper that runs nft (``load``).
"""

from __future__ import annotations

import subprocess

# At most BURST restores in any WINDOW seconds.
BURST = 3
WINDOW = 60.0
# The restore entries kept in the breach state; older ones are counted, not kept.
KEPT = 20

# The findings of the table comparison that a reload of the rules file repairs.
# A table that cannot be listed, or a rules file that cannot be loaded, is a
# probe error: nothing is reloaded then.
TABLE_KINDS = frozenset(
    (
        "table_missing",
        "rule_added",
        "rule_removed",
        "chain_policy",
        "set_changed",
        "object_changed",
        "object_added",
        "object_removed",
        "order_changed",
        "table_changed",
    )
)


def table_findings(found):
    """The breaches a reload of the rules file repairs."""
    return [item for item in found if item["kind"] in TABLE_KINDS]


class RateLimit:
    """At most ``burst`` grants in any ``window`` seconds, on a monotonic clock the caller passes in."""

    def __init__(self, burst=BURST, window=WINDOW):
        self.burst, self.window = burst, window
        self.granted = []
        self.refused = 0

    def allow(self, now):
        self.granted = [stamp for stamp in self.granted if now - stamp < self.window]
        if len(self.granted) >= self.burst:
            self.refused += 1
            return False
        self.granted.append(now)
        return True

    def next_allowed(self, now):
        """Seconds until the next grant (0 when one is free)."""
        live = [stamp for stamp in self.granted if now - stamp < self.window]
        return 0.0 if len(live) < self.burst else max(min(live) + self.window - now, 0.0)


def load(path, nft, timeout=20):
    """``(rc, message)`` of ``nft -f path``: one transaction, applied whole or not at all."""
    try:
        run = subprocess.run(
            [nft, "-f", path],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"nft -f {path} could not run: {exc}"
    return run.returncode, (run.stderr or run.stdout).strip()[:300]


def entry(stamp, path, findings, rc, message, remaining, seconds):
    """One restore for the breach state and the journal: what was repaired, nft's answer, the table after."""
    return {
        "at": stamp,
        "action": "restored",
        "command": f"nft -f {path}",
        "repaired": [f"{item['kind']}: {item['detail']}" for item in findings],
        "rc": rc,
        "nft": message,
        "live_equals_installed": remaining == [],
        "remaining": remaining,
        "seconds": round(seconds, 3),
    }


def refused_entry(stamp, path, findings, limit, now):
    return {
        "at": stamp,
        "action": "rate_limited",
        "command": f"nft -f {path}",
        "repaired": [f"{item['kind']}: {item['detail']}" for item in findings],
        "detail": (
            f"not restored: {limit.burst} restores in the last {limit.window:g} s already "
            f"({limit.refused} refused so far); the next is allowed in {limit.next_allowed(now):.0f} s"
        ),
    }


def outcome(item):
    """``restored``, ``failed`` (nft refused, or the table still differs) or ``rate_limited``."""
    if item["action"] == "rate_limited":
        return "rate_limited"
    return "restored" if item["rc"] == 0 and item["live_equals_installed"] else "failed"


def summary(item):
    """One line for ENCLAVE_ACTIONS and the log."""
    if item["action"] == "rate_limited":
        return f"ruleset restore rate-limited: {item['detail']}"
    after = "live table equals the installed one" if item["live_equals_installed"] else "live table STILL differs"
    why = f" ({item['nft']})" if item["rc"] != 0 and item["nft"] else ""
    return f"{item['command']}: rc {item['rc']}{why}; {after} ({item['seconds']:.3f} s)"


def keep(entries, new):
    """The state's restore list with ``new`` appended, the oldest dropped beyond ``KEPT``."""
    return [*(entries or []), new][-KEPT:]
