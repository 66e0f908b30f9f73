# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Pure checks behind the nvidia_gpu role and the preflight's GPU checks.

Versions are compared as versions: ``580.105.08`` is newer than ``580.95.05``
although it sorts before it as text. Package versions as the package managers
print them (``1:580.95.05-1``, ``3:580.95.05-1.el9``, ``580.95.05-0ubuntu1``)
are reduced to the upstream version before they are compared.

Functions named ``*_problems`` return a list of messages, one per fault, each
saying what is wrong with the numbers involved and what to change; an empty
list means fine. Nothing here touches the host.
"""

from __future__ import annotations

import re

MIN_CONTAINER_TOOLKIT = "1.18.0"  # first release with nvidia-cdi-refresh (CDI spec regenerated at boot)
KERNEL_MODULES = ("open", "proprietary")
KERNEL_MODULE_BUILDS = ("dkms", "precompiled")
FABRIC_MANAGER_MODES = ("auto", "enabled", "disabled")

_VERSION = re.compile(r"^\d+(\.\d+)*$")
_BRANCH = re.compile(r"^\d{3,4}$")


# -------------------------------------------------------------------- versions


def parse_version(value):
    """``"580.105.08"`` -> ``(580, 105, 8)``. Raises ValueError for anything that is not dotted numbers."""
    text = str(value).strip() if value is not None else ""
    if isinstance(value, bool) or not _VERSION.match(text):
        raise ValueError(f"{value!r} is not a version (dotted numbers such as 580.95.05)")
    return tuple(int(part) for part in text.split("."))


def is_version(value):
    try:
        parse_version(value)
    except ValueError:
        return False
    return True


def compare_versions(first, second):
    """-1, 0 or 1 as ``first`` is older than, equal to or newer than ``second``.

    Missing trailing parts count as 0 (``1.18`` equals ``1.18.0``).
    """
    a, b = parse_version(first), parse_version(second)
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a > b) - (a < b)


def version_at_least(value, minimum):
    return compare_versions(value, minimum) >= 0


def sort_versions(values):
    """Versions (upstream or package) sorted oldest first; unparsable ones last, as given."""
    good, bad = [], []
    for value in values:
        upstream = upstream_version(value)
        (good if upstream else bad).append(value)
    good.sort(key=lambda v: parse_version(upstream_version(v)) + (0,) * 8)
    return good + bad


def upstream_version(package_version):
    """The upstream part of a deb or rpm version, or None when there is none.

    ``1:580.95.05-1`` -> ``580.95.05``; ``3:580.95.05-1.el9`` -> ``580.95.05``;
    ``580.95.05-0ubuntu0.24.04.2`` -> ``580.95.05``; ``1.18.0-1`` -> ``1.18.0``.
    """
    if package_version is None:
        return None
    text = str(package_version).strip()
    if ":" in text:
        text = text.split(":", 1)[1]
    text = text.split("-", 1)[0]
    return text if _VERSION.match(text) else None


def driver_branch(version):
    """The branch of a driver version: ``580.95.05`` -> ``580``."""
    return str(parse_version(version)[0])


# ------------------------------------------------------------- role inputs


def input_problems(
    driver_branch_value,
    driver_version,
    container_toolkit_version,
    fabric_manager_version=None,
    kernel_modules="open",
    kernel_module_build="dkms",
    supported_builds=None,
    packages_overridden=False,
    distribution="Debian",
    expected_count=None,
    fabric_manager="auto",
):
    """Messages for the nvidia_gpu role's inputs, checked before anything is looked up or changed.

    ``supported_builds`` lists what this distribution offers as ``MODULES-BUILD``
    (``open-dkms`` ...); a choice outside it is refused unless the driver
    packages are given explicitly (``packages_overridden``).
    """
    problems = []
    if isinstance(expected_count, str) and re.match(r"^\s*\d+\s*$", expected_count):
        expected_count = int(expected_count)  # from the command line (-e) every value is text
    if expected_count is None or isinstance(expected_count, bool) or not isinstance(expected_count, int):
        problems.append(
            f"nvidia_gpu_expected_count is {expected_count!r}: set it to the number of GPUs this host must have "
            "(0 on a host without GPUs, such as the lab)."
        )
    elif expected_count < 0:
        problems.append(f"nvidia_gpu_expected_count is {expected_count}: it cannot be negative.")
    branch = str(driver_branch_value).strip() if driver_branch_value is not None else ""
    if not _BRANCH.match(branch):
        problems.append(
            f"nvidia_gpu_driver_branch {driver_branch_value!r} is not a driver branch: write its major number, "
            "such as '580'."
        )
    if not is_version(driver_version) or len(parse_version(driver_version)) != 3:
        problems.append(
            f"nvidia_gpu_driver_version {driver_version!r} is not an exact driver version: write all three parts, "
            "such as '580.95.05'."
        )
    elif _BRANCH.match(branch) and driver_branch(driver_version) != branch:
        problems.append(
            f"nvidia_gpu_driver_version {driver_version} is on branch {driver_branch(driver_version)}, not on "
            f"nvidia_gpu_driver_branch {branch}: pin a version of branch {branch}, or change the branch."
        )
    if not is_version(container_toolkit_version):
        problems.append(
            f"nvidia_gpu_container_toolkit_version {container_toolkit_version!r} is not a version: write it like "
            f"'{MIN_CONTAINER_TOOLKIT}'."
        )
    elif not version_at_least(container_toolkit_version, MIN_CONTAINER_TOOLKIT):
        problems.append(
            f"nvidia_gpu_container_toolkit_version {container_toolkit_version} is older than {MIN_CONTAINER_TOOLKIT}: "
            "the toolkit must be 1.18 or newer, whose nvidia-cdi-refresh units regenerate the CDI spec at boot."
        )
    if fabric_manager_version not in (None, ""):
        if not is_version(fabric_manager_version):
            problems.append(
                f"nvidia_gpu_fabric_manager_version {fabric_manager_version!r} is not a version: leave it unset "
                "(it then equals the driver's) or write the driver's version."
            )
        elif is_version(driver_version) and compare_versions(fabric_manager_version, driver_version) != 0:
            problems.append(fabric_manager_mismatch(driver_version, fabric_manager_version))
    if fabric_manager not in FABRIC_MANAGER_MODES:
        problems.append(
            f"nvidia_gpu_fabric_manager {fabric_manager!r} is not one of {', '.join(FABRIC_MANAGER_MODES)}."
        )
    if kernel_modules not in KERNEL_MODULES:
        problems.append(f"nvidia_gpu_kernel_modules {kernel_modules!r} is not one of {', '.join(KERNEL_MODULES)}.")
    if kernel_module_build not in KERNEL_MODULE_BUILDS:
        problems.append(
            f"nvidia_gpu_kernel_module_build {kernel_module_build!r} is not one of {', '.join(KERNEL_MODULE_BUILDS)}."
        )
    build = f"{kernel_modules}-{kernel_module_build}"
    if (
        kernel_modules in KERNEL_MODULES
        and kernel_module_build in KERNEL_MODULE_BUILDS
        and supported_builds is not None
        and build not in supported_builds
        and not packages_overridden
    ):
        offered = ", ".join(
            f"{choice.split('-', 1)[0]} modules built by {choice.split('-', 1)[1]}" for choice in supported_builds
        )
        problems.append(
            f"{kernel_modules} kernel modules built by {kernel_module_build} are not offered for {distribution} "
            f"(NVIDIA's repository has: {offered}): change nvidia_gpu_kernel_modules or "
            "nvidia_gpu_kernel_module_build, or name the packages in nvidia_gpu_driver_packages."
        )
    return problems


def fabric_manager_mismatch(driver_version, fabric_manager_version):
    return (
        f"fabric manager {fabric_manager_version} does not equal the driver {driver_version}: on NVSwitch systems "
        "CUDA does not initialise unless both are the same version. Pin the fabric manager to the driver's version "
        "(leave nvidia_gpu_fabric_manager_version unset)."
    )


def fabric_manager_problems(driver_version, fabric_manager_version):
    """One message when the installed fabric manager's version is not exactly the driver's."""
    if not fabric_manager_version:
        return []
    try:
        if compare_versions(upstream_version(fabric_manager_version) or fabric_manager_version, driver_version) == 0:
            return []
    except ValueError:
        pass
    return [fabric_manager_mismatch(driver_version, fabric_manager_version)]


def fabric_manager_wanted(mode, nvswitch_count):
    """Whether to install the fabric manager: ``enabled``/``disabled``, or ``auto`` = NVSwitches on the bus."""
    if mode == "enabled":
        return True
    if mode == "disabled":
        return False
    return int(nvswitch_count or 0) > 0


def pci_count_problems(expected, pci_gpu_count):
    """Before anything changes: the PCI bus must show exactly the expected number of NVIDIA GPUs."""
    if expected == pci_gpu_count:
        return []
    if pci_gpu_count < expected:
        return [
            f"nvidia_gpu_expected_count is {expected} but the PCI bus shows {pci_gpu_count} NVIDIA GPU(s): "
            f"{expected - pci_gpu_count} missing. Nothing was changed. Check the hardware (reseat, BMC event log, "
            "lspci -d 10de:) or correct nvidia_gpu_expected_count."
        ]
    return [
        f"nvidia_gpu_expected_count is {expected} but the PCI bus shows {pci_gpu_count} NVIDIA GPU(s). Nothing was "
        f"changed. Set nvidia_gpu_expected_count to {pci_gpu_count} if they all belong to this service."
    ]


# ------------------------------------------------------ repository versions


def parse_apt_madison(text):
    """``apt-cache madison`` output -> ``{package: [version, ...]}`` (as listed, duplicates dropped)."""
    result = {}
    for line in (text or "").splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) < 3 or not parts[0] or not parts[1]:
            continue
        versions = result.setdefault(parts[0], [])
        if parts[1] not in versions:
            versions.append(parts[1])
    return result


def parse_dnf_list(text):
    """``dnf list --showduplicates`` (or ``repoquery --qf '%{name} %{evr}'``) -> ``{package: [version, ...]}``.

    Architecture suffixes (``nvidia-driver.x86_64``) are dropped; header lines
    (``Available Packages``, ``Last metadata expiration ...``) are skipped.
    """
    result = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, version = parts[0], parts[1]
        if not upstream_version(version):
            continue
        name = re.sub(r"\.(x86_64|aarch64|noarch|i686|ppc64le|s390x)$", "", name)
        versions = result.setdefault(name, [])
        if version not in versions:
            versions.append(version)
    return result


def dnf_stream_enabled(text, module, stream):
    """Whether ``dnf module list`` output marks MODULE:STREAM enabled (``580-open [e]``, ``580-open [d][e]``)."""
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != module:
            continue
        name, _sep, flags = parts[1].partition("[")
        if name != stream:
            continue
        flags = "[" + flags if flags else ""
        if len(parts) > 2 and parts[2].startswith("["):
            flags += parts[2]
        if "[e]" in flags:
            return True
    return False


def parse_dnf_module_artifacts(text):
    """``dnf module info`` output -> ``{package: [epoch:version-release, ...]}`` from its Artifacts lines.

    Each artifact is a NEVRA such as ``kmod-nvidia-open-dkms-3:580.95.05-1.el9.x86_64``;
    the stream lists one set per driver release it carries.
    """
    result = {}
    in_artifacts = False
    for line in (text or "").splitlines():
        key, separator, value = line.partition(":")
        if not separator:
            in_artifacts = False
            continue
        key = key.strip()
        if key == "Artifacts":
            in_artifacts = True
        elif key:
            in_artifacts = False
            continue
        if not in_artifacts:
            continue
        nevra = value.strip()
        nevra = re.sub(r"\.(x86_64|aarch64|noarch|i686|ppc64le|s390x|src)$", "", nevra)
        parts = nevra.rsplit("-", 2)
        if len(parts) != 3 or not upstream_version(parts[1]):
            continue
        name, evr = parts[0], f"{parts[1]}-{parts[2]}"
        versions = result.setdefault(name, [])
        if evr not in versions:
            versions.append(evr)
    return result


def installed_versions(packages, names):
    """``{name: [full version]}`` for NAMES from ``ansible_facts.packages`` (package_facts), apt or rpm."""
    result = {}
    for name in names or []:
        for entry in (packages or {}).get(name, []):
            version = str(entry.get("version", ""))
            if entry.get("release"):
                version = f"{version}-{entry['release']}"
            if entry.get("epoch") not in (None, "", 0, "0"):
                version = f"{entry['epoch']}:{version}"
            result.setdefault(name, [])
            if version and version not in result[name]:
                result[name].append(version)
    return result


def all_installed(packages, versions):
    """Whether every ``{name: full version}`` is installed at exactly that version (package_facts)."""
    installed = installed_versions(packages, list(versions or {}))
    return all(version in installed.get(name, []) for name, version in (versions or {}).items())


def merge_versions(*sources):
    """Union of several ``{package: [versions]}`` mappings."""
    result = {}
    for source in sources:
        for name, versions in (source or {}).items():
            merged = result.setdefault(name, [])
            merged.extend(version for version in versions if version not in merged)
    return result


def select_versions(wanted, available, source="the configured package repositories"):
    """Pick, per package, the repository version whose upstream part equals the pinned one.

    ``wanted`` is ``{package: upstream version}``, ``available`` what
    ``parse_apt_madison``/``parse_dnf_list`` returned (and what is installed).
    Returns ``{"versions": {package: full version}, "problems": [...]}``; a
    pinned version that is missing is reported with the versions that are
    there, newest last; packages missing altogether are reported together.
    """
    versions, problems, absent = {}, [], []
    for package, version in wanted.items():
        offered = available.get(package, [])
        matches = [
            candidate
            for candidate in offered
            if upstream_version(candidate) and compare_versions(upstream_version(candidate), version) == 0
        ]
        if matches:
            versions[package] = sort_versions(matches)[-1]
        elif offered:
            problems.append(
                f"{package} {version} is not in {source}; available: {', '.join(sort_versions(offered))}. "
                "Mirror that version, or pin one of these."
            )
        else:
            absent.append(package)
    if absent:
        problems.append(
            f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} not in {source} at all: mirror NVIDIA's "
            "repository for this distribution (the CUDA repository for the driver and the fabric manager, "
            "libnvidia-container for the toolkit) and check the package names."
        )
    return {"versions": versions, "problems": problems}


def package_specs(versions, manager="apt"):
    """``{name: full version}`` -> install specs: ``name=version`` (apt) or ``name-version`` (dnf, no epoch)."""
    specs = []
    for name, version in versions.items():
        if manager == "apt":
            specs.append(f"{name}={version}")
        else:
            specs.append(f"{name}-{version.split(':', 1)[-1]}")
    return specs


def expand_packages(templates, branch):
    """Package names from ``vars/`` templates: ``{branch}`` is replaced by the driver branch."""
    return [str(template).replace("{branch}", str(branch)) for template in templates or []]


def reboot_reasons(facts, driver_version):
    """Why the host must reboot before the pinned driver runs (empty: it already runs).

    Installing a driver does not replace the module the kernel has loaded; a
    loaded nouveau keeps the NVIDIA module from binding the GPUs.
    """
    modules = (facts or {}).get("kernel_module") or {}
    reasons = []
    if modules.get("nouveau_loaded"):
        reasons.append("the nouveau module is loaded and must give way to the NVIDIA driver")
    loaded = modules.get("nvidia_version")
    if not modules.get("nvidia_loaded"):
        reasons.append(f"the NVIDIA kernel module is not loaded (driver {driver_version} installed)")
    elif not loaded or not is_version(loaded) or compare_versions(loaded, driver_version) != 0:
        reasons.append(f"the kernel runs NVIDIA module {loaded}, the pinned driver is {driver_version}")
    return reasons


# ---------------------------------------------------- post-install verification


def _bool_text(value):
    return {True: "enabled", False: "disabled", None: "N/A"}[value]


def _gpu_label(gpu):
    return f"GPU {gpu.get('index')} ({gpu.get('pci_bus_id')})"


def verify_problems(facts, expected_count, driver_version, ecc=True, mig=False, persistence=True, fabric=None):
    """What is wrong with the GPU stack after installation, one message per fault.

    ``facts`` is the ``enclave_gpus`` fact. ``ecc`` and ``mig`` are the wanted
    states (None: not checked). ``fabric`` True requires every GPU's NVSwitch
    fabric to be ``Completed``/``Success``; None checks it on NVSwitch systems.
    """
    problems = []
    facts = facts or {}
    pci_count = (facts.get("pci") or {}).get("gpu_count", 0)
    gpus = facts.get("gpus") or []
    state = facts.get("driver_state")
    if pci_count != expected_count:
        problems.append(f"expected {expected_count} NVIDIA GPU(s) on the PCI bus, found {pci_count}.")
    if expected_count == 0:
        return problems
    if state != "loaded":
        error = (facts.get("nvidia_smi") or {}).get("error")
        problems.append(
            f"nvidia-smi does not work (driver state {state}"
            + (f": {error}" if error else "")
            + "). Reboot after a driver installation; otherwise check `dmesg | grep -i nvrm`."
        )
        return problems
    if len(gpus) != expected_count:
        problems.append(f"expected {expected_count} GPU(s) in nvidia-smi, it reports {len(gpus)}.")
    for address in facts.get("missing_from_driver") or []:
        problems.append(
            f"GPU {address} is on the PCI bus but not in nvidia-smi: it has fallen off the bus or failed to "
            "initialise (`dmesg | grep -i -e xid -e 'fallen off'`); it needs a reset or a reboot."
        )
    for entry in facts.get("unreachable") or []:
        problems.append(f"nvidia-smi cannot open GPU {entry['pci_bus_id']}: {entry['reason']}.")
    try:
        driver_matches = compare_versions(facts.get("driver_version") or "", driver_version) == 0
    except ValueError:
        driver_matches = False
    if not driver_matches:
        problems.append(
            f"driver {facts.get('driver_version')} is running, nvidia_gpu_driver_version pins {driver_version}: "
            "reboot to load the installed driver, or check which version is installed."
        )
    fabric_required = fabric if fabric is not None else bool(facts.get("nvswitch_present"))
    for gpu in gpus:
        label = _gpu_label(gpu)
        if persistence and gpu.get("persistence_mode") is not True:
            problems.append(
                f"{label}: persistence mode is {_bool_text(gpu.get('persistence_mode'))}: nvidia-persistenced must "
                "run (systemctl status nvidia-persistenced)."
            )
        current_ecc, pending_ecc = (gpu.get("ecc") or {}).get("current"), (gpu.get("ecc") or {}).get("pending")
        if ecc is not None and current_ecc is not ecc:
            hint = " (pending after a reset)" if pending_ecc is ecc else ""
            problems.append(
                f"{label}: ECC is {_bool_text(current_ecc)}, wanted {_bool_text(ecc)}{hint}. Change it with "
                f"`nvidia-smi -i {gpu.get('index')} -e {1 if ecc else 0}` and reboot."
            )
        current_mig, pending_mig = (gpu.get("mig") or {}).get("current"), (gpu.get("mig") or {}).get("pending")
        if mig is not None and bool(current_mig) is not mig:
            hint = " (pending after a reset)" if bool(pending_mig) is mig else ""
            problems.append(
                f"{label}: MIG is {_bool_text(current_mig)}, wanted {_bool_text(mig)}{hint}. Change it with "
                f"`nvidia-smi -i {gpu.get('index')} -mig {1 if mig else 0}` and reset the GPU."
            )
        elif mig is not None and pending_mig is not None and bool(pending_mig) is not mig:
            problems.append(
                f"{label}: MIG is {_bool_text(pending_mig)} pending the next reset, wanted {_bool_text(mig)}."
            )
        if gpu.get("reset_required"):
            problems.append(f"{label}: the GPU requires a reset (nvidia-smi -r -i {gpu.get('index')}, or reboot).")
        if gpu.get("recovery_action") not in (None, "None"):
            problems.append(f"{label}: the driver asks for recovery action {gpu.get('recovery_action')}.")
        rows = gpu.get("remapped_rows") or {}
        if rows.get("failure"):
            problems.append(f"{label}: row remapping failed: the GPU's memory is degraded; replace the GPU.")
        elif rows.get("pending"):
            problems.append(f"{label}: a row remap is pending: reset the GPU (or reboot) to apply it.")
        if (gpu.get("retired_pages") or {}).get("pending"):
            problems.append(f"{label}: a page retirement is pending: reset the GPU (or reboot) to apply it.")
        fabric_state = gpu.get("fabric") or {}
        if fabric_required and (fabric_state.get("state") != "Completed" or fabric_state.get("status") != "Success"):
            problems.append(
                f"{label}: NVSwitch fabric state {fabric_state.get('state')}, status {fabric_state.get('status')} "
                "(wanted Completed, Success): nvidia-fabricmanager must run at the driver's version."
            )
    return problems


# ------------------------------------------------------------ model profiles


def _count(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return value


def _describe(gpus):
    """``4 GPUs of 81559 MiB`` or ``4 GPUs: 2 of 81559 MiB, 2 of 40960 MiB``."""
    if not gpus:
        return "no GPU"
    sizes = {}
    for gpu in gpus:
        sizes[gpu.get("memory_total_mib")] = sizes.get(gpu.get("memory_total_mib"), 0) + 1
    noun = "GPU" if len(gpus) == 1 else "GPUs"
    if len(sizes) == 1:
        size = next(iter(sizes))
        return f"{len(gpus)} {noun} of {size} MiB"
    parts = ", ".join(f"{count} of {size} MiB" for size, count in sorted(sizes.items(), key=lambda x: -(x[0] or 0)))
    return f"{len(gpus)} {noun}: {parts}"


def profile_shape(profile):
    """``(problems, numbers)`` of a profile's own arithmetic, whatever the host holds.

    ``numbers`` holds ``gpu_count``, ``memory``, ``nodes`` and ``per_node``
    (None when the problems make them meaningless): tensor x pipeline must be
    the GPU count, and the count must divide evenly over the nodes.
    """
    name = (profile or {}).get("name", "the model profile")
    try:
        gpu_count = _count(profile.get("gpu_count"), f"profile {name}: gpu_count")
        memory = _count(profile.get("gpu_memory_mib_min"), f"profile {name}: gpu_memory_mib_min")
        tensor = _count(profile.get("tensor_parallel", gpu_count), f"profile {name}: tensor_parallel")
        pipeline = _count(profile.get("pipeline_parallel", 1), f"profile {name}: pipeline_parallel")
        nodes = _count(profile.get("nodes", 1), f"profile {name}: nodes")
    except (AttributeError, ValueError) as exc:
        return [str(exc) if isinstance(exc, ValueError) else f"profile {name} is not a mapping."], None
    problems = []
    if tensor * pipeline != gpu_count:
        problems.append(
            f"profile {name}: tensor_parallel {tensor} x pipeline_parallel {pipeline} = {tensor * pipeline}, "
            f"but gpu_count is {gpu_count}; they must be equal."
        )
    if gpu_count % nodes:
        problems.append(f"profile {name}: gpu_count {gpu_count} does not divide evenly over {nodes} nodes.")
        return problems, None
    numbers = {"gpu_count": gpu_count, "memory": memory, "nodes": nodes, "per_node": gpu_count // nodes}
    return problems, numbers


def profile_fits(profile, gpus):
    """Whether a model profile fits this host's GPUs; returns the problems (empty: it fits).

    ``profile`` names ``name``, ``gpu_count`` (all nodes together),
    ``gpu_memory_mib_min`` (per GPU), ``tensor_parallel``, ``pipeline_parallel``
    and ``nodes`` (default 1). ``gpus`` is the ``enclave_gpus`` fact or its
    ``gpus`` list. A GPU in MIG mode does not count: one process cannot use all
    of its memory.
    """
    if isinstance(gpus, dict):
        gpus = gpus.get("gpus") or []
    gpus = gpus or []
    name = (profile or {}).get("name", "the model profile")
    problems, numbers = profile_shape(profile)
    if numbers is None:
        return problems
    memory, nodes = numbers["memory"], numbers["nodes"]
    per_node = numbers["per_node"]
    usable = [
        gpu
        for gpu in gpus
        if (gpu.get("memory_total_mib") or 0) >= memory and not (gpu.get("mig") or {}).get("current")
    ]
    if len(usable) < per_node:
        what = f"{per_node} {'GPU' if per_node == 1 else 'GPUs'}" + (f" on each of {nodes} nodes" if nodes > 1 else "")
        message = f"profile {name} needs {what} with >= {memory} MiB each; this host has {_describe(gpus)}"
        in_mig = [gpu for gpu in gpus if (gpu.get("mig") or {}).get("current")]
        if in_mig:
            message += f" ({len(in_mig)} in MIG mode, which do not count)"
        problems.append(message + ".")
    return problems


def cdi_device_names(text):
    """Device names from ``nvidia-ctk cdi list`` (``nvidia.com/gpu=0``, ``nvidia.com/gpu=all`` ...)."""
    return [line.strip() for line in (text or "").splitlines() if re.match(r"^\s*[\w.-]+/[\w.-]+=\S+\s*$", line)]


def cdi_problems(text, expected_count, spec_path):
    """The CDI spec must name every expected GPU and ``nvidia.com/gpu=all``."""
    names = cdi_device_names(text)
    gpu_names = [name for name in names if name.startswith("nvidia.com/gpu=")]
    if not gpu_names:
        return [
            f"the CDI spec {spec_path} lists no nvidia.com/gpu device: regenerate it "
            f"(`nvidia-ctk cdi generate --output={spec_path}`) once the driver is loaded."
        ]
    problems = []
    if "nvidia.com/gpu=all" not in gpu_names:
        problems.append(f"the CDI spec {spec_path} has no nvidia.com/gpu=all device.")
    indexed = [name for name in gpu_names if re.match(r"^nvidia\.com/gpu=\d+$", name)]
    if len(indexed) < expected_count:
        problems.append(
            f"the CDI spec {spec_path} names {len(indexed)} GPU(s) (nvidia.com/gpu=N), expected {expected_count}: "
            "regenerate it after every GPU is visible to nvidia-smi."
        )
    return problems
