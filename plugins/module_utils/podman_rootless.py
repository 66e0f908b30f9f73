# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Pure logic of the podman_rootless role: subordinate id ranges and registry trust.

Everything here is decided on the controller from data the role gathered, so a
bad inventory or a conflicting host is refused before anything is changed.
"""

from __future__ import annotations

import re

# The lowest start a service range may have: below it live the ids of real
# users and groups (login.defs UID_MAX is 60000 on Debian and RHEL).
MIN_SUBID_START = 100000
# A user namespace maps at most 2^32 - 1 ids.
MAX_SUBID_END = 2**32 - 1
# Podman needs 65536 ids to map an image's ordinary users (0..65535).
MIN_SUBID_COUNT = 65536

TRUST_MODES = ("signed", "digest")
_REGISTRY_RE = re.compile(
    r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?(?P<path>/[a-z0-9._/-]+)?$"
)


def parse_subids(text):
    """Entries of /etc/subuid or /etc/subgid as dicts: owner, start, count, line.

    Blank lines and comments are skipped; a malformed line is an error naming it,
    since shadow-utils would ignore it and leave the range unusable.
    """
    entries = []
    for number, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
            raise ValueError(f"line {number} is not 'owner:start:count': {raw!r}")
        entries.append({"owner": parts[0], "start": int(parts[1]), "count": int(parts[2]), "line": number})
    return entries


def subid_plan(text, user, uid, start, count, kind="subuid"):
    """What to change so that ``user`` owns exactly [start, start+count) and nothing else.

    Returns {"conflicts": [...messages], "remove": ["a-b", ...], "add": "a-b" or "",
    "changed": bool}. An entry is the user's when its owner is the name or the
    numeric uid. A range of anybody else that overlaps the wanted one is a
    conflict: the role refuses rather than share ids between two users.
    """
    problems = validate_range(start, count)
    if problems:
        return {"conflicts": [f"/etc/{kind}: {p}" for p in problems], "remove": [], "add": "", "changed": False}
    end = start + count
    owners = {str(user), str(uid)}
    conflicts, own = [], []
    for entry in parse_subids(text):
        entry_end = entry["start"] + entry["count"]
        if entry["owner"] in owners:
            own.append((entry["start"], entry["count"]))
        elif entry["start"] < end and start < entry_end:
            conflicts.append(
                f"/etc/{kind} line {entry['line']}: {entry['owner']} owns {entry['start']}-{entry_end - 1}, "
                f"which overlaps the range {start}-{end - 1} wanted for {user}; "
                f"choose another podman_rootless_subid_start"
            )
    # usermod --del-sub*ids drops every entry inside a range, so anything but
    # exactly the wanted entry is replaced as a whole.
    if own == [(start, count)]:
        remove, add = [], ""
    else:
        remove = sorted({f"{s}-{s + c - 1}" for s, c in own}, key=lambda r: int(r.split("-")[0]))
        add = f"{start}-{end - 1}"
    return {"conflicts": conflicts, "remove": remove, "add": add, "changed": bool(remove or add)}


def validate_range(start, count):
    problems = []
    if not isinstance(start, int) or isinstance(start, bool) or start < MIN_SUBID_START:
        problems.append(f"the range must start at {MIN_SUBID_START} or above (got {start!r}), clear of real user ids")
    if not isinstance(count, int) or isinstance(count, bool) or count < MIN_SUBID_COUNT:
        problems.append(f"the range must hold at least {MIN_SUBID_COUNT} ids (got {count!r}) to map an image's users")
    if not problems and start + count - 1 > MAX_SUBID_END:
        problems.append(f"the range {start}-{start + count - 1} ends above {MAX_SUBID_END}")
    return problems


def registry_problems(registry, blocked, insecure, profile, trust, signing_keys, lookaside):
    """Every reason the registry trust settings cannot be used, as messages (empty when fine)."""
    problems = []
    match = _REGISTRY_RE.match(registry or "")
    if not match or "*" in (registry or ""):
        problems.append(
            f"podman_rootless_registry {registry!r} is not one registry as host[:port][/path]: "
            "a policy must accept exactly the internal registry, never a wildcard or every registry"
        )
    else:
        host = match.group("host").lower()
        public = {b.lower() for b in blocked}
        if host in public or registry.lower() in public:
            problems.append(
                f"podman_rootless_registry {registry!r} is a public registry that the role blocks: "
                "point it at the hospital's internal registry mirror"
            )
    if insecure and profile == "production":
        problems.append(
            "podman_rootless_registry_insecure is true with enclave_profile production: the registry "
            "mirror must be served over https (with the hospital CA) in production"
        )
    if trust not in TRUST_MODES:
        problems.append(f"podman_rootless_trust {trust!r} is not one of {', '.join(TRUST_MODES)}")
    elif trust == "signed":
        if not signing_keys:
            problems.append(
                "podman_rootless_trust is 'signed' but podman_rootless_signing_keys is empty: "
                "list the public keys that sign the internal images"
            )
        if not re.match(r"^(https?|file)://", lookaside or ""):
            problems.append(
                f"podman_rootless_signature_lookaside {lookaside!r} is not an http(s):// or file:// URL "
                "where the signatures of the internal images are published"
            )
    return problems


def policy_document(registry, trust, key_paths, local_scopes=None):
    """The containers-policy.json(5) document: reject by default, accept only the internal registry.

    In ``signed`` mode an image must carry a signature by one of the keys; in
    ``digest`` mode the registry is trusted and the workloads pin images by
    digest. ``local_scopes`` ({transport: scope}) adds the one local hand-over
    an image may take after root pulled it from the registry: root saves from
    its own storage, the service account loads from a root-owned folder.
    """
    if trust == "signed":
        requirements = [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": list(key_paths)}]
    else:
        requirements = [{"type": "insecureAcceptAnything"}]
    transports = {"docker": {registry: requirements}}
    for transport, scope in (local_scopes or {}).items():
        transports[transport] = {scope: [{"type": "insecureAcceptAnything"}]}
    return {"default": [{"type": "reject"}], "transports": transports}


def image_problems(images, trust, profile):
    """Reasons the list of images to hand to the account cannot be used (empty when fine)."""
    problems = []
    for image in images:
        name = image.split("@", 1)[0]
        host = name.split("/", 1)[0]
        pinned = re.search(r"@sha256:[0-9a-f]{64}$", image) is not None
        if "/" not in name or ("." not in host and ":" not in host):
            problems.append(f"podman_rootless_images: {image!r} is not a full name (registry/repository)")
        elif not pinned and (trust == "digest" or profile == "production"):
            problems.append(
                f"podman_rootless_images: {image!r} is not pinned by digest (name@sha256:<64 hex>); "
                "a tag can move, a digest cannot"
            )
    return problems
