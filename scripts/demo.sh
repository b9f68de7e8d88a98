#!/bin/sh
# demo.sh (make demo): boots kvmbox's default guest, Debian's cloud kernel with the busybox
# initramfs, its console on this terminal. On a host whose KVM runs guests natively it is a
# shell (Ctrl-] or `poweroff -f` ends it, no time limit); elsewhere Linux cannot reach init,
# so the boot is bounded (DEMO_TIMEOUT, default 60 s) to show how far it gets.
set -eu
cd "$(dirname "$0")/.."
KVMBOX=${KVMBOX:-build/kvmbox}
if why=$(scripts/host-native.sh); then
    echo "kvmbox demo: booting Debian's cloud kernel (bzImage) with a busybox shell, 2 vCPUs, 1 GiB; Ctrl-] or 'poweroff -f' ends the VM."
    native=1
else
    echo "kvmbox demo: booting Debian's cloud kernel (PVH vmlinux), 2 vCPUs, 1 GiB, for at most ${DEMO_TIMEOUT:-60} s: this host's KVM cannot run guests natively ($why), so Linux gets through early boot (e820 map, ACPI tables, CPUs) but cannot reach init here."
    native=0
fi
scripts/fetch-guest.sh build/guest
[ -x "$KVMBOX" ] || { echo "kvmbox demo: $KVMBOX is not built (run make)" >&2; exit 1; }

status=0
if [ $native = 1 ]; then
    "$KVMBOX" run --name demo --kernel build/guest/vmlinuz --initrd build/guest/initramfs.cpio.gz \
        --cmdline "console=ttyS0 kvmbox.shell=1" --mem 1G --cpus 2 || status=$?
else
    "$KVMBOX" run --name demo --kernel build/guest/vmlinux --initrd build/guest/initramfs.cpio.gz \
        --cmdline "console=ttyS0 earlyprintk=ttyS0 kvmbox.shell=1" --mem 1G --cpus 2 \
        --timeout "${DEMO_TIMEOUT:-60}" || status=$?
fi
echo
case $status in
0)   echo "kvmbox demo: the guest powered off (status 0)." ;;
124) echo "kvmbox demo: stopped after ${DEMO_TIMEOUT:-60} s (status 124), as expected on this host." ;;
4)   [ $native = 0 ] &&
     echo "kvmbox demo: kvmbox stopped the guest (status 4): KVM's instruction emulator cannot run an instruction the kernel uses (see the line above); on this host that is as far as Linux gets." ||
     echo "kvmbox demo: kvmbox failed (status 4, see above)." ;;
*)   echo "kvmbox demo: kvmbox ended with status $status (README: exit statuses)." ;;
esac
[ $native = 0 ] || exit $status
