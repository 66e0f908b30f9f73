# shellcheck shell=bash source-path=SCRIPTDIR disable=SC2034
# Settings shared by lab/vm/build, up and down. Sourced, not executed.
# The VM's state lives in $LAB_STATE/vm; nothing else on the machine is touched.
# shellcheck source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

VM_NAME=enclave-lab-vm
VM_STATE=$LAB_STATE/vm
VM_RECIPE=$LAB_ROOT/lab/vm/vm.conf
# Pristine disks, one folder per recipe hash, kept machine-wide (lab/lib.sh).
VM_IMAGES=$LAB_CACHE/vm-images
# The image directory of the current recipe (kernel, initrd, pristine disk).
VM_IMAGE=$VM_STATE/image
VM_DISK=$VM_STATE/disk.qcow2
VM_PIDFILE=$VM_STATE/qemu.pid
VM_CONSOLE=$VM_STATE/console.log
VM_SSH_PORT=2222
VM_SSH_CONFIG=$VM_STATE/ssh_config
VM_MEMORY_MB=2048
VM_CPUS=2

# qemu's user-mode network, in a documentation range. qemu itself answers as
# VM_HOST_ADDR (gateway and DHCP server); the controller's SSH connections
# reach the guest from there. The mirror gets an address of its own:
# libslirp refuses a guest forward on the gateway address.
VM_NET=192.0.2.0/24
VM_HOST_ADDR=192.0.2.2
VM_MIRROR_ADDR=192.0.2.10
VM_GUEST_ADDR=192.0.2.20

mkdir -p "$VM_STATE"

# 0 when the pidfile names a live qemu that this lab started.
vm_running() {
  local pid
  [[ -f $VM_PIDFILE ]] || return 1
  pid=$(<"$VM_PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-name $VM_NAME "
}
