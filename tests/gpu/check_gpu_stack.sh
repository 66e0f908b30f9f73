#!/usr/bin/env bash
# Check the GPU stack of an enclave host after the nvidia_gpu role, on the host
# itself, as root: the driver answers (at the expected version), every GPU on
# the PCI bus is in nvidia-smi, persistence is on, the NVSwitch fabric is ready
# (HGX), the CDI spec names every GPU, and the service user can run a container
# that sees all of them through CDI. One PASS/FAIL/SKIP line per check; exits 1
# when any check failed, 2 on a usage error.
#
#   tests/gpu/check_gpu_stack.sh [--user USER] [--image IMAGE] [--gpus N]
#                                [--driver VERSION] [--cdi-spec PATH]
#
# Each option also comes from the environment: ENCLAVE_GPU_USER (default
# enclave-llm, the podman_rootless service user), ENCLAVE_GPU_IMAGE (default
# docker.io/library/ubuntu:24.04; on an enclave host give an image the
# registry policy accepts, such as the vLLM image from the internal registry,
# by digest), ENCLAVE_GPU_COUNT (default: the NVIDIA GPUs on the PCI bus),
# ENCLAVE_GPU_DRIVER (default: not checked), ENCLAVE_GPU_CDI_SPEC (default
# /var/run/cdi/nvidia.yaml). ENCLAVE_GPU_SYSFS (default /sys) is for tests.
#
# The container runs with --network=none and --device nvidia.com/gpu=all; CDI
# puts nvidia-smi into it, so the image needs no CUDA. It runs in the user's
# systemd instance (systemd-run --machine USER@ --user) when lingering keeps one
# running, else through runuser with the user's XDG_RUNTIME_DIR.
set -uo pipefail

user=${ENCLAVE_GPU_USER:-enclave-llm}
image=${ENCLAVE_GPU_IMAGE:-docker.io/library/ubuntu:24.04}
expected=${ENCLAVE_GPU_COUNT:-}
driver=${ENCLAVE_GPU_DRIVER:-}
cdi_spec=${ENCLAVE_GPU_CDI_SPEC:-/var/run/cdi/nvidia.yaml}
sysfs=${ENCLAVE_GPU_SYSFS:-/sys}
container_timeout=300

usage() {
  sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

while (($#)); do
  case $1 in
    --user) user=${2:?--user needs a value}; shift 2 ;;
    --image) image=${2:?--image needs a value}; shift 2 ;;
    --gpus) expected=${2:?--gpus needs a value}; shift 2 ;;
    --driver) driver=${2:?--driver needs a value}; shift 2 ;;
    --cdi-spec) cdi_spec=${2:?--cdi-spec needs a value}; shift 2 ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
if [[ -n $expected && ! $expected =~ ^[0-9]+$ ]]; then
  echo "--gpus must be a number, got '$expected'" >&2
  exit 2
fi
if ((EUID != 0)); then
  echo "run as root: the check reads every GPU and runs a container as $user" >&2
  exit 2
fi

checks=0
failures=0
result() { # PASS|FAIL|SKIP NAME MESSAGE
  printf '%-4s  %-12s %s\n' "$1" "$2" "$3"
  if [[ $1 != SKIP ]]; then
    checks=$((checks + 1))
  fi
  if [[ $1 == FAIL ]]; then
    failures=$((failures + 1))
  fi
}

# --- the PCI bus: NVIDIA (0x10de) display controllers are GPUs, bridges 0x0680 NVSwitches
pci_gpus=()
nvswitches=0
for device in "$sysfs"/bus/pci/devices/*; do
  [[ -r $device/vendor && -r $device/class ]] || continue
  [[ $(<"$device/vendor") == 0x10de ]] || continue
  class=$(<"$device/class")
  case $class in
    0x0300* | 0x0302*) pci_gpus+=("${device##*/}") ;;
    0x0680*) nvswitches=$((nvswitches + 1)) ;;
  esac
done
if [[ -z $expected ]]; then
  expected=${#pci_gpus[@]}
  expected_from="the PCI bus"
else
  expected_from="--gpus"
fi
if ((${#pci_gpus[@]} == expected && expected > 0)); then
  result PASS pci "${#pci_gpus[@]} NVIDIA GPU(s) and $nvswitches NVSwitch(es) on the PCI bus"
elif ((expected == 0)); then
  result FAIL pci "no NVIDIA GPU on the PCI bus: this check is for GPU hosts"
else
  result FAIL pci "${#pci_gpus[@]} NVIDIA GPU(s) on the PCI bus, $expected expected ($expected_from)"
fi

# --- the driver
smi_ok=false
smi_rows=()
if ! command -v nvidia-smi >/dev/null; then
  result FAIL driver "nvidia-smi is not installed: the NVIDIA driver is missing"
elif ! smi_out=$(nvidia-smi --query-gpu=index,pci.bus_id,driver_version,persistence_mode,name \
  --format=csv,noheader 2>&1); then
  result FAIL driver "nvidia-smi fails: $(head -n 1 <<<"$smi_out")"
else
  smi_ok=true
  mapfile -t smi_rows <<<"$smi_out"
  versions=$(cut -d, -f3 <<<"$smi_out" | tr -d ' ' | sort -u | paste -sd ' ')
  if [[ -z $driver ]]; then
    result PASS driver "nvidia-smi answers: ${#smi_rows[@]} GPU(s), driver $versions (no version expected)"
  elif [[ $versions == "$driver" ]]; then
    result PASS driver "nvidia-smi answers: ${#smi_rows[@]} GPU(s), driver $versions as expected"
  else
    result FAIL driver "driver $versions is running, $driver expected (reboot after a driver change?)"
  fi
fi

# --- every GPU on the bus is in nvidia-smi (one missing has fallen off the bus)
if $smi_ok; then
  missing=()
  smi_bus_ids=$(cut -d, -f2 <<<"$smi_out" | tr -d ' ' | tr '[:upper:]' '[:lower:]')
  for address in "${pci_gpus[@]}"; do
    # nvidia-smi writes 00000000:9A:00.0, sysfs 0000:9a:00.0
    grep -qx "0000${address}" <<<"$smi_bus_ids" || grep -qx "$address" <<<"$smi_bus_ids" || missing+=("$address")
  done
  if ((${#smi_rows[@]} == expected && ${#missing[@]} == 0)); then
    result PASS gpus "all $expected GPU(s) in nvidia-smi"
  else
    result FAIL gpus "nvidia-smi reports ${#smi_rows[@]} of $expected GPU(s)${missing[*]:+; not reported: ${missing[*]} (fallen off the bus? dmesg | grep -i xid)}"
  fi
  off=$(awk -F, '{gsub(/ /, "", $4); gsub(/ /, "", $1); if ($4 != "Enabled") print $1}' <<<"$smi_out" | paste -sd ' ')
  if [[ -z $off ]]; then
    result PASS persistence "persistence mode on for every GPU"
  else
    result FAIL persistence "persistence mode off for GPU(s) $off (systemctl status nvidia-persistenced)"
  fi
else
  result FAIL gpus "not checked: nvidia-smi does not answer"
  result FAIL persistence "not checked: nvidia-smi does not answer"
fi

# --- NVSwitch systems: the fabric manager runs and every GPU's fabric is ready
if ((nvswitches == 0)); then
  result SKIP fabric "no NVSwitch on the PCI bus"
elif ! $smi_ok; then
  result FAIL fabric "not checked: nvidia-smi does not answer"
else
  fm_state=$(systemctl is-active nvidia-fabricmanager 2>/dev/null)
  fabric=$(nvidia-smi -q 2>/dev/null | awk '
    /^    Fabric$/ { in_fabric = 1; next }
    in_fabric && /^        State / { sub(/.*: /, ""); state = $0; next }
    in_fabric && /^        Status / { sub(/.*: /, ""); print state "/" $0; in_fabric = 0 }
    /^    [^ ]/ { in_fabric = 0 }')
  ready=$(grep -c '^Completed/Success$' <<<"$fabric")
  if [[ $fm_state == active && $ready -eq ${#smi_rows[@]} ]]; then
    result PASS fabric "nvidia-fabricmanager active, fabric Completed/Success on all $ready GPU(s)"
  else
    result FAIL fabric "nvidia-fabricmanager ${fm_state:-unknown}; fabric ready on $ready of ${#smi_rows[@]} GPU(s): $(sort <<<"$fabric" | uniq -c | paste -sd ';')"
  fi
fi

# --- the CDI spec Podman reads
gpu_devices=0
if [[ ! -s $cdi_spec ]]; then
  result FAIL cdi "$cdi_spec is missing (systemctl status nvidia-cdi-refresh.service)"
elif ! command -v nvidia-ctk >/dev/null; then
  result FAIL cdi "nvidia-ctk is not installed (nvidia-container-toolkit-base)"
else
  cdi_list=$(nvidia-ctk cdi list 2>/dev/null)
  gpu_devices=$(grep -cE '^nvidia\.com/gpu=[0-9]+$' <<<"$cdi_list")
  if grep -qx 'nvidia.com/gpu=all' <<<"$cdi_list" && ((gpu_devices == expected)); then
    result PASS cdi "$cdi_spec names nvidia.com/gpu=all and $gpu_devices GPU(s)"
  else
    result FAIL cdi "$cdi_spec names $gpu_devices GPU(s) of $expected$(grep -qx 'nvidia.com/gpu=all' <<<"$cdi_list" || printf ' and no nvidia.com/gpu=all') (nvidia-ctk cdi list)"
  fi
fi

# --- a container of the service user sees every GPU through CDI
run_as_user() {
  local uid=$1
  shift
  if systemctl is-active --quiet "user@$uid.service"; then
    timeout "$container_timeout" systemd-run --machine="$user@" --user --quiet --wait --pipe --collect -- "$@"
  elif [[ -d /run/user/$uid ]]; then
    (cd / && timeout "$container_timeout" runuser -u "$user" -- env XDG_RUNTIME_DIR="/run/user/$uid" "$@")
  else
    echo "user@$uid.service is not running and /run/user/$uid is missing: enable lingering (loginctl enable-linger $user)"
    return 125
  fi
}
if ! uid=$(id -u "$user" 2>/dev/null); then
  result FAIL container "there is no user $user (--user)"
elif ! command -v podman >/dev/null; then
  result FAIL container "podman is not installed"
else
  output=$(run_as_user "$uid" podman run --rm --network=none --device nvidia.com/gpu=all "$image" nvidia-smi -L 2>&1)
  status=$?
  seen=$(grep -cE '^GPU [0-9]+: ' <<<"$output")
  if ((status == 0 && seen == expected)); then
    result PASS container "$user ran $image with --device nvidia.com/gpu=all: nvidia-smi -L lists $seen GPU(s)"
  else
    result FAIL container "$user ran $image (exit $status): nvidia-smi -L lists $seen of $expected GPU(s): $(grep -v '^GPU ' <<<"$output" | tail -n 3 | paste -sd ' ')"
  fi
fi

if ((failures)); then
  echo "RESULT: FAIL ($failures of $checks checks failed)"
  exit 1
fi
echo "RESULT: PASS ($checks checks)"
