#!/bin/sh
# Exits 0 ("native") when this host's KVM runs guest code on hardware virtualization; else
# prints why not and exits 1. Detected at run time from what the kernel reports.
if [ ! -c /dev/kvm ]; then
    echo "no /dev/kvm on this host"; exit 1
fi
if [ -d /sys/module/kvm_pvm ]; then
    echo "KVM here is PVM (kvm_pvm), which runs ordinary guest code through its instruction emulator"; exit 1
fi
if ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
    echo "the CPU has no VMX/SVM: KVM cannot run guests natively"; exit 1
fi
if [ ! -d /sys/module/kvm_intel ] && [ ! -d /sys/module/kvm_amd ]; then
    echo "neither kvm_intel nor kvm_amd is loaded"; exit 1
fi
echo native
