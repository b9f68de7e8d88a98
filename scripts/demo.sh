#!/bin/sh
# make demo: boots kvmbox's default guest (Debian's cloud kernel, busybox initramfs) on the
# terminal.
set -eu
cd "$(dirname "$0")/.."
scripts/fetch-guest.sh build/guest
if why=$(scripts/host-native.sh); then
    echo "kvmbox: booting Debian's cloud kernel with a busybox shell (2 vCPUs, 1 GiB); Ctrl-] ends the VM."
    exec build/kvmbox run --name demo --kernel build/guest/vmlinuz --initrd build/guest/initramfs.cpio.gz \
        --cmdline "console=ttyS0 kvmbox.shell=1" --mem 1G --cpus 2
fi
echo "kvmbox: this host's KVM cannot run guests natively ($why)."
echo "kvmbox: Linux will get through early boot (memory map, ACPI tables, CPUs) but not reach init;"
echo "kvmbox: booting the PVH vmlinux for at most 60 s so you can see how far it gets."
build/kvmbox run --name demo --kernel build/guest/vmlinux --initrd build/guest/initramfs.cpio.gz \
    --cmdline "console=ttyS0 earlyprintk=ttyS0 kvmbox.shell=1" --mem 1G --cpus 2 --timeout 60 || status=$?
echo
echo "kvmbox: the guest stopped with status ${status:-0} (see the README's exit statuses)."
exit 0
