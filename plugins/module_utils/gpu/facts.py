# Copyright: llm-enclave maintainers
# Apache License 2.0 (see galaxy.yml)
"""Logic behind the ``gpu_facts`` module: parse what nvidia-smi and sysfs say about the GPUs.

Three sources, each read independently so that one failing does not hide the
others:

``nvidia-smi -q -x``
    The driver's view (XML, ``nvsmi_device_v12.dtd``): driver and CUDA version
    and, per GPU, model, UUID, PCI bus id, memory, persistence, ECC, MIG,
    NVSwitch fabric state, retired pages and remapped rows. Values the GPU does
    not support read ``N/A``; they become ``None`` here.
``nvidia-smi topo -m``
    The interconnect matrix: ``NV18`` between two GPUs means 18 bonded NVLinks.
``/sys/bus/pci/devices/*/{vendor,class,device}``
    The bus's view, which needs no driver: every NVIDIA (``0x10de``) display
    controller (class ``0x0300xx``, ``0x0302xx``) is a GPU and every NVIDIA
    bridge of class ``0x0680xx`` an NVSwitch. A GPU that fell off the bus, or
    one without a working driver, still shows here.

``build_facts`` joins them into the ``enclave_gpus`` fact. Everything in this
file is pure except ``read_pci_devices``, which only reads files under the
sysfs root it is given (unit tests pass a temporary tree).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

NVIDIA_VENDOR = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")  # VGA-compatible and 3D controller
NVSWITCH_CLASS = "0x0680"  # bridge, other

DRIVER_UNREACHABLE = (
    "couldn't communicate with the nvidia driver",
    "nvidia driver is not loaded",
    "driver/library version mismatch",
    "failed to initialize nvml",
)
_HANDLE_ERROR = re.compile(
    r"Unable to determine the device handle for GPU\s*"
    r"([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*:\s*(.+)"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NV_LINK = re.compile(r"^NV(\d+)$")


# ---------------------------------------------------------------- small values


def na(value):
    """``None`` for what nvidia-smi writes when it has no value, else the stripped text."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    if text in ("", "N/A", "None", "[N/A]", "Unknown Error", "Not Supported", "[Not Supported]"):
        return None
    return text


def enabled(value):
    """``Enabled``/``Yes`` -> True, ``Disabled``/``No`` -> False, anything else (N/A) -> None."""
    text = na(value)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in ("enabled", "yes", "on", "active"):
        return True
    if lowered in ("disabled", "no", "off", "not active"):
        return False
    return None


def mib(value):
    """``81559 MiB`` -> 81559; ``N/A`` -> None. GiB and KiB are converted."""
    text = na(value)
    if text is None:
        return None
    match = re.match(r"^(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB|TiB)?$", text)
    if not match:
        return None
    number = float(match.group(1))
    factor = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "TiB": 1024 * 1024, None: 1}[match.group(2)]
    return round(number * factor)


def integer(value):
    text = na(value)
    if text is None:
        return None
    try:
        return int(text, 0) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


def pci_address(value):
    """Normalise a PCI address to sysfs form: ``00000000:9A:00.0`` -> ``0000:9a:00.0``."""
    text = na(value)
    if text is None:
        return None
    match = re.match(r"^([0-9A-Fa-f]{1,8}):([0-9A-Fa-f]{1,2}):([0-9A-Fa-f]{1,2})\.([0-7])$", text.strip())
    if not match:
        return text.lower()
    domain, bus, device, function = match.groups()
    return f"{int(domain, 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{function}"


def _text(element, path):
    if element is None:
        return None
    found = element.find(path)
    if found is None:
        return None
    return found.text


# ------------------------------------------------------------ nvidia-smi -q -x


def _mig_devices(gpu):
    devices = []
    container = gpu.find("mig_devices")
    if container is None:
        return devices
    for device in container.findall("mig_device"):
        devices.append(
            {
                "index": integer(_text(device, "index")),
                "gpu_instance_id": integer(_text(device, "gpu_instance_id")),
                "compute_instance_id": integer(_text(device, "compute_instance_id")),
                "multiprocessor_count": integer(_text(device, "device_attributes/shared/multiprocessor_count")),
                "memory_total_mib": mib(_text(device, "fb_memory_usage/total")),
            }
        )
    return devices


def _retired_pages(gpu):
    element = gpu.find("retired_pages")
    if element is None or not len(element):
        return None
    result = {
        "single_bit": integer(_text(element, "multiple_single_bit_retirement/retired_count")),
        "double_bit": integer(_text(element, "double_bit_retirement/retired_count")),
        "pending": enabled(_text(element, "pending_retirement")),
    }
    if all(value is None for value in result.values()):
        return None
    return result


def _remapped_rows(gpu):
    element = gpu.find("remapped_rows")
    if element is None or not len(element):
        return None  # N/A: the GPU does not remap rows (before Ampere)
    return {
        "correctable": integer(_text(element, "remapped_row_corr")),
        "uncorrectable": integer(_text(element, "remapped_row_unc")),
        "pending": enabled(_text(element, "remapped_row_pending")),
        "failure": enabled(_text(element, "remapped_row_failure")),
    }


def _fabric(gpu):
    element = gpu.find("fabric")
    if element is None:
        return None
    result = {
        "state": na(_text(element, "state")),
        "status": na(_text(element, "status")),
        "clique_id": na(_text(element, "cliqueId")),
        "cluster_uuid": na(_text(element, "clusterUuid")),
        "bandwidth": na(_text(element, "health/bandwidth")),
    }
    if all(value is None for value in result.values()):
        return None  # not an NVSwitch system (PCIe or directly linked GPUs)
    return result


def _gpu(index, gpu):
    bus_id = pci_address(_text(gpu, "pci/pci_bus_id") or gpu.get("id"))
    mig_current = enabled(_text(gpu, "mig_mode/current_mig"))
    return {
        "index": index,
        "minor_number": integer(_text(gpu, "minor_number")),
        "name": na(_text(gpu, "product_name")),
        "architecture": na(_text(gpu, "product_architecture")),
        "uuid": na(_text(gpu, "uuid")),
        "serial": na(_text(gpu, "serial")),
        "pci_bus_id": bus_id,
        "pci_device_id": na(_text(gpu, "pci/pci_device_id")),
        "memory_total_mib": mib(_text(gpu, "fb_memory_usage/total")),
        "persistence_mode": enabled(_text(gpu, "persistence_mode")),
        "ecc": {
            "current": enabled(_text(gpu, "ecc_mode/current_ecc")),
            "pending": enabled(_text(gpu, "ecc_mode/pending_ecc")),
        },
        "mig": {
            "current": mig_current,
            "pending": enabled(_text(gpu, "mig_mode/pending_mig")),
            "devices": _mig_devices(gpu) if mig_current else [],
        },
        "fabric": _fabric(gpu),
        "reset_required": enabled(_text(gpu, "gpu_reset_status/reset_required")),
        "recovery_action": na(_text(gpu, "gpu_recovery_action")),
        "retired_pages": _retired_pages(gpu),
        "remapped_rows": _remapped_rows(gpu),
    }


def parse_query_xml(text):
    """Parse ``nvidia-smi -q -x`` into ``{driver_version, cuda_version, attached_gpus, gpus}``.

    Raises ValueError when the text is not an ``nvidia_smi_log`` document.
    """
    if not text or not text.strip():
        raise ValueError("nvidia-smi -q -x printed nothing")
    # The DOCTYPE names a DTD that is not shipped; ElementTree ignores it.
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError as exc:
        raise ValueError(f"nvidia-smi -q -x did not print valid XML ({exc})") from exc
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"nvidia-smi -q -x printed <{root.tag}>, not <nvidia_smi_log>")
    return {
        "driver_version": na(_text(root, "driver_version")),
        "cuda_version": na(_text(root, "cuda_version")),
        "attached_gpus": integer(_text(root, "attached_gpus")),
        "gpus": [_gpu(index, gpu) for index, gpu in enumerate(root.findall("gpu"))],
    }


def handle_errors(text):
    """GPUs nvidia-smi could not open: ``[{pci_bus_id, reason}]`` from its error lines."""
    errors = []
    for line in (text or "").splitlines():
        match = _HANDLE_ERROR.search(line)
        if match:
            errors.append({"pci_bus_id": pci_address(match.group(1)), "reason": " ".join(match.group(2).split())})
    return errors


def driver_unreachable(text):
    """True when nvidia-smi's output says it cannot talk to the kernel driver at all."""
    lowered = (text or "").lower()
    return any(marker in lowered for marker in DRIVER_UNREACHABLE)


def first_line(text):
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


# -------------------------------------------------------- nvidia-smi topo -m


def parse_topology(text):
    """Parse ``nvidia-smi topo -m`` into the GPU-to-GPU part of the matrix.

    Returns ``{gpus, links, nvlink_pairs, pairs, min_nvlinks, all_pairs_nvlink,
    cpu_affinity, numa_affinity}``: ``links[a][b]`` is the raw entry (``NV18``,
    ``PXB``, ``SYS`` ...), ``min_nvlinks`` the smallest bonded NVLink count over
    all GPU pairs (0 when a pair has none), None for fewer than two GPUs.
    """
    lines = [_ANSI.sub("", line).rstrip("\n") for line in (text or "").splitlines()]
    header_index = next((i for i, line in enumerate(lines) if re.match(r"^\s*GPU0(\s|$)", line)), None)
    if header_index is None:
        return None
    header = [cell.strip() for cell in lines[header_index].split("\t")]
    if header and header[0] == "":
        header = header[1:]
    gpus = [cell for cell in header if re.match(r"^GPU\d+$", cell)]
    links, cpu_affinity, numa_affinity = {}, {}, {}
    for line in lines[header_index + 1 :]:
        if not line.strip():
            break
        cells = [cell.strip() for cell in line.split("\t")]
        name, values = cells[0], cells[1:]
        if name not in gpus:
            continue
        row = dict(zip(header, values, strict=False))
        links[name] = {other: row.get(other, "") for other in gpus if other != name}
        cpu_affinity[name] = na(row.get("CPU Affinity"))
        numa_affinity[name] = na(row.get("NUMA Affinity"))
    pairs, nvlink_pairs, counts = 0, 0, []
    for position, first in enumerate(gpus):
        for second in gpus[position + 1 :]:
            pairs += 1
            match = _NV_LINK.match(links.get(first, {}).get(second, ""))
            count = int(match.group(1)) if match else 0
            counts.append(count)
            nvlink_pairs += 1 if count else 0
    return {
        "gpus": gpus,
        "links": links,
        "pairs": pairs,
        "nvlink_pairs": nvlink_pairs,
        "min_nvlinks": min(counts) if counts else None,
        "all_pairs_nvlink": bool(counts) and all(counts),
        "cpu_affinity": cpu_affinity,
        "numa_affinity": numa_affinity,
    }


# ------------------------------------------------------------------------ sysfs


def pci_kind(vendor, klass):
    """``gpu``, ``nvswitch`` or None for a PCI function's vendor and class (as sysfs prints them)."""
    vendor = (vendor or "").strip().lower()
    klass = (klass or "").strip().lower()
    if vendor != NVIDIA_VENDOR:
        return None
    if klass.startswith(GPU_CLASSES):
        return "gpu"
    if klass.startswith(NVSWITCH_CLASS):
        return "nvswitch"
    return None


def _read(path):
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def read_pci_devices(sysfs_root="/sys"):
    """Every PCI function under ``SYSFS_ROOT/bus/pci/devices``: ``[{address, vendor, device, class, driver}]``.

    ``driver`` is the name of the bound kernel driver (the ``driver`` link's
    target), None when none is bound. A missing tree gives an empty list.
    """
    base = os.path.join(sysfs_root, "bus", "pci", "devices")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    devices = []
    for name in names:
        path = os.path.join(base, name)
        driver_link = os.path.join(path, "driver")
        driver = os.path.basename(os.path.realpath(driver_link)) if os.path.exists(driver_link) else None
        devices.append(
            {
                "address": name.lower(),
                "vendor": _read(os.path.join(path, "vendor")),
                "device": _read(os.path.join(path, "device")),
                "class": _read(os.path.join(path, "class")),
                "driver": driver,
            }
        )
    return devices


def read_kernel_modules(sysfs_root="/sys"):
    """``{nvidia: VERSION or None, nvidia_loaded, nouveau_loaded}`` from ``SYSFS_ROOT/module``."""
    base = os.path.join(sysfs_root, "module")
    nvidia = os.path.isdir(os.path.join(base, "nvidia"))
    return {
        "nvidia_loaded": nvidia,
        "nvidia_version": _read(os.path.join(base, "nvidia", "version")) if nvidia else None,
        "nouveau_loaded": os.path.isdir(os.path.join(base, "nouveau")),
    }


def classify_pci(devices):
    """``{gpus: [...], nvswitches: [...]}`` among ``read_pci_devices`` entries (NVIDIA only)."""
    result = {"gpus": [], "nvswitches": []}
    for device in devices or []:
        kind = pci_kind(device.get("vendor"), device.get("class"))
        if kind is None:
            continue
        entry = {
            "address": pci_address(device.get("address")),
            "device_id": (device.get("device") or "").lower() or None,
            "class": (device.get("class") or "").lower() or None,
            "driver": device.get("driver"),
        }
        result["gpus" if kind == "gpu" else "nvswitches"].append(entry)
    return result


# ------------------------------------------------------------------- the fact


def build_facts(smi=None, topology_text=None, pci_devices=None, kernel_modules=None):
    """The ``enclave_gpus`` fact from what the module gathered.

    ``smi`` is None when nvidia-smi is not installed, else ``{path, rc, stdout,
    stderr}`` of ``nvidia-smi -q -x``. ``topology_text`` is the output of
    ``nvidia-smi topo -m`` (or None), ``pci_devices`` what ``read_pci_devices``
    returned, ``kernel_modules`` what ``read_kernel_modules`` returned.
    """
    pci = classify_pci(pci_devices)
    modules = kernel_modules or {"nvidia_loaded": False, "nvidia_version": None, "nouveau_loaded": False}
    facts = {
        "driver_state": "absent",
        "driver_version": None,
        "cuda_version": None,
        "kernel_module": modules,
        "nvidia_smi": {"path": None, "rc": None, "error": None},
        "attached_gpus": None,
        "gpus": [],
        "count": 0,
        "unreachable": [],
        "missing_from_driver": [],
        "pci": {
            "gpus": pci["gpus"],
            "nvswitches": pci["nvswitches"],
            "gpu_count": len(pci["gpus"]),
            "nvswitch_count": len(pci["nvswitches"]),
        },
        "nvswitch_present": bool(pci["nvswitches"]),
        "topology": None,
        "notes": [],
    }
    if smi is not None:
        facts["nvidia_smi"] = {"path": smi.get("path"), "rc": smi.get("rc"), "error": None}
        stdout, stderr = smi.get("stdout") or "", smi.get("stderr") or ""
        facts["unreachable"] = handle_errors(stdout + "\n" + stderr)
        if "<nvidia_smi_log" in stdout:
            try:
                parsed = parse_query_xml(stdout)
            except ValueError as exc:
                facts["driver_state"] = "error"
                facts["nvidia_smi"]["error"] = str(exc)
            else:
                facts["driver_state"] = "loaded"
                facts["driver_version"] = parsed["driver_version"]
                facts["cuda_version"] = parsed["cuda_version"]
                facts["attached_gpus"] = parsed["attached_gpus"]
                facts["gpus"] = parsed["gpus"]
        elif driver_unreachable(stdout + "\n" + stderr):
            facts["driver_state"] = "unreachable"
            facts["nvidia_smi"]["error"] = first_line(stdout) or first_line(stderr)
        elif "no devices were found" in (stdout + stderr).lower():
            facts["driver_state"] = "no_devices"
            facts["nvidia_smi"]["error"] = first_line(stdout) or first_line(stderr)
        else:
            facts["driver_state"] = "error"
            facts["nvidia_smi"]["error"] = (
                first_line(stderr)
                or first_line(stdout)
                or f"nvidia-smi exited with {smi.get('rc')} and printed nothing"
            )
    facts["count"] = len(facts["gpus"])
    if topology_text:
        facts["topology"] = parse_topology(topology_text)
    seen = {gpu["pci_bus_id"] for gpu in facts["gpus"]}
    if facts["driver_state"] == "loaded":
        facts["missing_from_driver"] = [gpu["address"] for gpu in pci["gpus"] if gpu["address"] not in seen]
    facts["notes"] = notes(facts)
    return facts


def notes(facts):
    """Plain sentences about the state: what is missing and what it means (not failures)."""
    result = []
    pci_count = facts["pci"]["gpu_count"]
    state = facts["driver_state"]
    if pci_count == 0 and facts["count"] == 0:
        result.append("no NVIDIA GPU on the PCI bus")
    if state == "absent" and pci_count:
        result.append(
            f"{pci_count} NVIDIA GPU(s) on the PCI bus but nvidia-smi is not installed: the NVIDIA driver is missing"
        )
    if state == "unreachable":
        result.append(
            f"nvidia-smi cannot reach the NVIDIA driver ({facts['nvidia_smi']['error']}); "
            f"{pci_count} NVIDIA GPU(s) on the PCI bus. The kernel module is "
            + ("loaded" if facts["kernel_module"]["nvidia_loaded"] else "not loaded")
        )
    if state == "error":
        result.append(f"nvidia-smi failed: {facts['nvidia_smi']['error']}")
    attached = facts.get("attached_gpus")
    if state == "loaded" and attached is not None and attached != facts["count"]:
        result.append(f"nvidia-smi counts {attached} GPU(s) but reports {facts['count']}")
    if facts["missing_from_driver"]:
        result.append(
            f"{len(facts['missing_from_driver'])} of {pci_count} NVIDIA GPU(s) on the PCI bus are not reported by "
            f"nvidia-smi: {', '.join(facts['missing_from_driver'])}"
        )
    for entry in facts["unreachable"]:
        result.append(f"nvidia-smi cannot open GPU {entry['pci_bus_id']}: {entry['reason']}")
    if facts["kernel_module"].get("nouveau_loaded"):
        result.append("the nouveau kernel module is loaded")
    return result
