# shellcheck shell=bash disable=SC2034  # the settings are used by the scripts that source this file
# Shared settings and helpers for the lab scripts. Sourced, not executed.
# Everything the lab creates is named enclave-lab-* and lives in $LAB_STATE,
# so `lab/down` can remove exactly what the lab made and nothing else.

LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB_STATE=${ENCLAVE_LAB_STATE:-$LAB_ROOT/.lab}
LAB_NETWORK=enclave-lab
LAB_SUBNET=198.51.100.0/24
LAB_GATEWAY=198.51.100.1
LAB_MIRROR_NAME=enclave-lab-mirror
LAB_MIRROR_ADDR=198.51.100.10
LAB_CANARY_NAME=enclave-lab-canary
LAB_CANARY_ADDR=198.51.100.99
LAB_HOST_NAME=enclave-lab-host
LAB_HOST_ADDR=198.51.100.20
# The clinical network: where the hospital's applications call the inference
# API. The enclave host has its second interface there; the clinic container
# stands for a clinical application server. Only the upper quarter of the
# documentation range: a bridge route for all of it would shadow any machine
# address in the rest of it (lab/up refuses such an overlap).
LAB_CLINICAL_NETWORK=enclave-lab-clinical
LAB_CLINICAL_SUBNET=203.0.113.192/26
LAB_CLINICAL_GATEWAY=203.0.113.193
LAB_HOST_CLINICAL_ADDR=203.0.113.200
LAB_CLINIC_NAME=enclave-lab-clinic
LAB_CLINIC_ADDR=203.0.113.210
LAB_ADMIN_USER=enclave-admin
LAB_SSH_KEY=$LAB_STATE/ssh/id_ed25519
LAB_SIGNING_PUBKEY=$LAB_STATE/signing/container-signing.gpg
LAB_LABEL=io.enclave.lab=1
# The registry's contents (lab/publish-images) and the key that signs them.
LAB_WORKLOAD_REPO=enclave/workload
LAB_UNSIGNED_REPO=enclave/unsigned-workload
LAB_SIGNING_UID="enclave lab image signing <image-signing@lab.enclave.invalid>"

mkdir -p "$LAB_STATE"

# What takes minutes to make and depends only on its recipe is kept once per
# machine, outside every checkout, so a fresh clone (CI's every run) reuses it:
# the lab admin key (the VM disk bakes it in), the wheelhouse, the VM disks,
# the mirror's registry blobs and its apt cache. Each entry is keyed on its
# inputs by the script that makes it; `lab/down --purge-cache` removes it all.
LAB_CACHE=${ENCLAVE_LAB_CACHE:-/var/cache/enclave-lab}
mkdir -p "$LAB_CACHE" 2>/dev/null || true

# Podman reads the project's containers.conf only: runc (crun cannot run on
# cgroups v1 hybrid), ulimits below the machine's hard limits, and network
# definitions kept under /var/lib instead of /etc/containers. Like the
# containers' names, the lab network is one per machine, shared by every
# checkout: a definition kept per checkout would make a second checkout
# collide with the first one's bridge.
LAB_NETWORK_DIR=/var/lib/enclave-lab/networks
export CONTAINERS_CONF=$LAB_STATE/containers.conf
sed "s#@NETWORK_DIR@#$LAB_NETWORK_DIR#" "$LAB_ROOT/lab/containers.conf.in" >"$CONTAINERS_CONF.tmp"
mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
mkdir -p "$LAB_NETWORK_DIR" 2>/dev/null || true

say() { printf '[lab %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[lab] error: %s\n' "$*" >&2; exit 1; }

# One line per missing prerequisite, saying what to install or free.
require_cmd() {
  local cmd=$1 package=$2
  command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found: install it with 'apt-get install $package' (or run 'make deps')"
}

require_free_space() {
  local dir=$1 need_gb=$2 have_kb
  have_kb=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
  ((have_kb >= need_gb * 1024 * 1024)) ||
    die "only $((have_kb / 1024 / 1024)) GiB free under $dir, the lab needs $need_gb GiB: free space there or set ENCLAVE_LAB_STATE to a larger disk"
}

require_root() {
  ((EUID == 0)) || die "the lab builds root filesystems and a bridge network: run it as root (sudo make lab)"
}

# Hash of the files that define an artefact; the artefact is rebuilt only when it changes.
recipe_hash() {
  cat "$@" | sha256sum | cut -c1-12
}

# The key is made once per machine and copied into the checkout's state,
# where the inventories look for it.
ensure_ssh_key() {
  local cached=$LAB_CACHE/ssh/id_ed25519
  if [[ ! -f $cached ]]; then
    install -d -m 0700 "$(dirname "$cached")"
    ssh-keygen -q -t ed25519 -N '' -C enclave-lab-admin -f "$cached"
    say "created the lab admin key $cached"
  fi
  if ! cmp -s "$cached" "$LAB_SSH_KEY" || ! cmp -s "$cached.pub" "$LAB_SSH_KEY.pub"; then
    install -d -m 0700 "$(dirname "$LAB_SSH_KEY")"
    install -m 0600 "$cached" "$LAB_SSH_KEY"
    install -m 0644 "$cached.pub" "$LAB_SSH_KEY.pub"
  fi
}

# Print a dot every few seconds while a long command runs, and its log on failure.
run_logged() {
  local what=$1 log=$2
  shift 2
  say "$what (log: $log)"
  local start=$SECONDS
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 10
    kill -0 "$pid" 2>/dev/null && say "  ... $what: $((SECONDS - start)) s, last: $(tail -n 1 "$log" | cut -c1-100)"
  done
  if ! wait "$pid"; then
    tail -n 30 "$log" >&2
    die "$what failed after $((SECONDS - start)) s; full log in $log"
  fi
  say "$what: done in $((SECONDS - start)) s"
}
